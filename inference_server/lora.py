"""The SeeThrough3D LoRA: low-rank updates that touch only the condition (OSCR) tokens.

Released layout (plain safetensors, no prefix), ``i`` the block index:
``transformer_blocks.{i}.attn.processor.{q,k,v,proj}_loras.0.{down,up}.weight`` and
``single_transformer_blocks.{i}.attn.processor.{q,k,v}_loras.0.{down,up}.weight``;
``down`` is [rank, dim], ``up`` [dim, rank], network_alpha = rank (so the LoRA's own scale is 1).

How they apply (see ``transformer.py``): q, k, v LoRAs add ``up(down(x))`` to the projections of the
condition tokens; the ``proj`` LoRA (double-stream blocks only) adds ``up(down(h))`` to the condition
part of ``h = to_out[0](attention output)``, i.e. after the output projection, as trained.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .model_errors import LoRAFormatError

DOUBLE_TARGETS = ("q", "k", "v", "proj")
SINGLE_TARGETS = ("q", "k", "v")
_BLOCK_LISTS = {
    "double": ("transformer_blocks", DOUBLE_TARGETS),
    "single": ("single_transformer_blocks", SINGLE_TARGETS),
}


def release_key(kind: str, block: int, target: str, part: str) -> str:
    """Name of one weight in the released file; ``kind`` is "double" or "single", ``part`` "down" or "up"."""
    prefix = _BLOCK_LISTS[kind][0]
    return f"{prefix}.{block}.attn.processor.{target}_loras.0.{part}.weight"


def expected_release_keys(num_double: int, num_single: int) -> list[str]:
    """All keys of a complete file, in block order."""
    return [key for key, _ in _parse_all(num_double, num_single)]


class ConditionLoRA(nn.Module):
    """One low-rank update ``scale * up(down(x))``."""

    def __init__(self, features: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(features, rank, bias=False)
        self.up = nn.Linear(rank, features, bias=False)
        self.scale = 1.0

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        update = self.up(self.down(hidden.to(self.down.weight.dtype)))
        return (update * self.scale).to(hidden.dtype)


class BlockLoRA(nn.Module):
    """The LoRAs of one transformer block, by target (q, k, v and, in double-stream blocks, proj)."""

    def __init__(self, features: int, rank: int, targets: tuple[str, ...]) -> None:
        super().__init__()
        self.targets = nn.ModuleDict({target: ConditionLoRA(features, rank) for target in targets})

    def __getitem__(self, target: str) -> ConditionLoRA:
        return self.targets[target]


class SeeThroughLoRA(nn.Module):
    """All condition-branch LoRAs of a FLUX transformer, with one overall ``scale``."""

    def __init__(
        self, features: int, rank: int, num_double: int, num_single: int, scale: float = 1.0
    ) -> None:
        super().__init__()
        self.features = features
        self.rank = rank
        self.double_blocks = nn.ModuleList(
            BlockLoRA(features, rank, DOUBLE_TARGETS) for _ in range(num_double)
        )
        self.single_blocks = nn.ModuleList(
            BlockLoRA(features, rank, SINGLE_TARGETS) for _ in range(num_single)
        )
        self.set_scale(scale)

    def set_scale(self, scale: float) -> None:
        """network_alpha = rank makes the trained scale 1; ``scale`` multiplies that."""
        self.scale = float(scale)
        for module in self.modules():
            if isinstance(module, ConditionLoRA):
                module.scale = self.scale

    def _layer(self, kind: str, block: int, target: str) -> ConditionLoRA:
        blocks = self.double_blocks if kind == "double" else self.single_blocks
        return blocks[block][target]

    def release_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under the released key names."""
        state = {}
        for key, (kind, block, target, part) in _parse_all(len(self.double_blocks), len(self.single_blocks)):
            layer = getattr(self._layer(kind, block, target), part)
            state[key] = layer.weight.detach().contiguous()
        return state

    @classmethod
    def from_release_state_dict(
        cls,
        state: dict[str, torch.Tensor],
        features: int,
        num_double: int,
        num_single: int,
        scale: float = 1.0,
    ) -> SeeThroughLoRA:
        """Validate a released-layout state dict against a transformer's shape and build the module.

        A missing key, an unexpected key or a wrong shape raises ``LoRAFormatError`` naming the first one.
        """
        expected = expected_release_keys(num_double, num_single)
        for key in expected:
            if key not in state:
                raise LoRAFormatError(key, "missing from the LoRA file (not a complete SeeThrough3D LoRA)")
        expected_set = set(expected)
        for key in sorted(state):
            if key not in expected_set:
                raise LoRAFormatError(
                    key,
                    f"unexpected key; a SeeThrough3D LoRA for this model has exactly {len(expected)} keys "
                    f"({num_double} double-stream and {num_single} single-stream blocks)",
                )
        rank = state[expected[0]].shape[0]
        for key in expected:
            tensor = state[key]
            want = (rank, features) if key.endswith(".down.weight") else (features, rank)
            if tuple(tensor.shape) != want or not tensor.is_floating_point():
                raise LoRAFormatError(
                    key,
                    f"shape {tuple(tensor.shape)} {tensor.dtype}, expected a float tensor of shape {want}",
                )
        lora = cls(features, rank, num_double, num_single, scale)
        with torch.no_grad():
            for key, (kind, block, target, part) in _parse_all(num_double, num_single):
                getattr(lora._layer(kind, block, target), part).weight.copy_(state[key])
        return lora

    @classmethod
    def random(
        cls, features: int, rank: int, num_double: int, num_single: int, seed: int, std: float = 0.05
    ) -> SeeThroughLoRA:
        """Random weights (up non-zero, so it changes outputs): for tests and the tiny pipeline."""
        lora = cls(features, rank, num_double, num_single)
        generator = torch.Generator("cpu").manual_seed(seed)
        with torch.no_grad():
            for parameter in lora.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
        return lora


def _parse_all(num_double: int, num_single: int):
    """(key, (kind, block, target, part)) for every released key, in block order."""
    for kind, count in (("double", num_double), ("single", num_single)):
        for block in range(count):
            for target in _BLOCK_LISTS[kind][1]:
                for part in ("down", "up"):
                    yield release_key(kind, block, target, part), (kind, block, target, part)


def lora_shape_of(transformer: nn.Module) -> dict[str, int]:
    """The keyword arguments (features, num_double, num_single) a LoRA for ``transformer`` has."""
    return {
        "features": transformer.inner_dim,
        "num_double": len(transformer.transformer_blocks),
        "num_single": len(transformer.single_transformer_blocks),
    }


def read_seethrough_lora(path: Path, transformer: nn.Module, scale: float = 1.0) -> SeeThroughLoRA:
    """A released-layout file checked against ``transformer``, as a float32 module on the CPU."""
    return SeeThroughLoRA.from_release_state_dict(
        load_file(str(path), device="cpu"), **lora_shape_of(transformer), scale=scale
    )


def load_seethrough_lora(path: Path, transformer: nn.Module, scale: float = 1.0) -> SeeThroughLoRA:
    """Read a released-layout file and check it fits ``transformer`` (a diffusers FluxTransformer2DModel)."""
    lora = read_seethrough_lora(path, transformer, scale)
    # x_embedder: never quantized (quantize.py), so its weight has the compute dtype
    parameter = transformer.x_embedder.weight
    return lora.to(device=parameter.device, dtype=parameter.dtype)


def save_seethrough_lora(lora: SeeThroughLoRA, path: Path) -> None:
    """Write ``lora`` in the released layout."""
    save_file({key: tensor.cpu() for key, tensor in lora.release_state_dict().items()}, str(path))
