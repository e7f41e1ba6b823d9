"""Weight quantization of the FLUX transformer for the 24-GB mode: fp8 (torchao) or NF4 (bitsandbytes).

Both libraries are optional extras (``pip install 'seethrough[fp8]'`` / ``'seethrough[nf4]'``) and are
imported only when a quantized mode is asked for, with an error naming the extra when one is missing.

Only the linear layers inside the repeated blocks are quantized (over 99% of the 11.9 B weights); the
embedders, the final norm and projection stay in the compute dtype: they are small, sensitive, and the
pipeline reads its compute dtype from ``x_embedder``. Layers are converted one at a time as they move to
the device, so a bf16 transformer that would not fit on a 24 GB card never has to be on it whole.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import nn

from seethrough_core.vocabulary import QUANTIZATIONS

from .model_errors import SetupError

QUANTIZED_PREFIXES = ("transformer_blocks.", "single_transformer_blocks.")
# What each kind needs: (module to import, the pip extra that installs it, the hardware it runs on)
_BACKENDS = {
    "fp8": ("torchao", "fp8", "an NVIDIA GPU of compute capability 8.9 or newer (RTX 40xx, L4, H100)"),
    "nf4": ("bitsandbytes", "nf4", "any CUDA GPU"),
}
FP8_MIN_CAPABILITY = (8, 9)  # fp8 matrix multiplies: Ada and Hopper onwards


def require_backend(kind: str) -> ModuleType:
    """Import the library ``kind`` needs, or raise SetupError saying which extra to install."""
    module, extra, hardware = _BACKENDS[kind]
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise SetupError(
            f"{kind} quantization needs the optional package '{module}', which is not installed: run "
            f"pip install 'seethrough[{extra}]' (it runs on {hardware})"
        ) from error


@dataclass(frozen=True)
class FasterQuantization:
    """Which quantization runs faster on GPUs of at least ``min_capability``, eager or compiled."""

    min_capability: tuple[int, int]
    compiled: bool
    kind: str
    evidence: str  # where the figure comes from (docs/performance.md has the rows)


# Looked up top to bottom; the first row that matches the GPU and the compile setting wins. Without fp8
# matrix units (below 8.9) only NF4 is possible. Eager fp8 is slower than NF4 because torchao's dynamic
# activation quantization runs as separate kernels around every linear layer; compilation fuses them.
FASTER_QUANTIZATION = (
    FasterQuantization(FP8_MIN_CAPABILITY, True, "fp8", "published FLUX.1-dev figures: fp8 compiled 3.2 s vs "
                       "bf16 compiled 4.2 s on an H100; our compiled 24gb rows are still to be measured"),
    FasterQuantization(FP8_MIN_CAPABILITY, False, "nf4", "measured on an H200, 1024 px, 28 steps: NF4 8.21 s "
                       "vs fp8 13.52 s (eager, exact)"),
    FasterQuantization((0, 0), True, "nf4", "no fp8 matrix units"),
    FasterQuantization((0, 0), False, "nf4", "no fp8 matrix units"),
)  # fmt: skip


def auto_quantization(device: torch.device, compiled: bool = False) -> str:
    """The faster of fp8 and NF4 on ``device`` as FASTER_QUANTIZATION knows it (NF4 off CUDA)."""
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else (0, 0)
    return faster_quantization(capability, compiled).kind


def faster_quantization(capability: tuple[int, int], compiled: bool) -> FasterQuantization:
    """The FASTER_QUANTIZATION row for a GPU of compute ``capability``."""
    for row in FASTER_QUANTIZATION:
        if tuple(capability) >= row.min_capability and row.compiled == compiled:
            return row
    raise AssertionError("FASTER_QUANTIZATION must end with rows for every capability")


def _quantized_linears(transformer: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [
        (name, module)
        for name, module in transformer.named_modules()
        if isinstance(module, nn.Linear) and name.startswith(QUANTIZED_PREFIXES)
    ]


def is_quantized(transformer: nn.Module) -> bool:
    """True when the block linears already hold quantized weights (a second call must not redo it)."""
    return getattr(transformer, "_seethrough_quantization", None) is not None


def quantize_transformer(
    transformer: nn.Module, kind: str, device: torch.device, compute_dtype: torch.dtype
) -> None:
    """In place: quantize the block linears with ``kind`` and move the whole transformer to ``device``."""
    if kind not in QUANTIZATIONS:
        raise SetupError(f"quantization must be one of {QUANTIZATIONS}, got '{kind}'")
    if is_quantized(transformer):
        transformer.to(device)
        return
    if kind == "fp8":
        _to_fp8(transformer, device)
    else:
        _to_nf4(transformer, device, compute_dtype)
    transformer.to(device)  # the unquantized rest: embedders, norms, final projection
    transformer._seethrough_quantization = kind


def _to_fp8(transformer: nn.Module, device: torch.device) -> None:
    """Row-wise fp8 weights and dynamically quantized fp8 activations (torchao)."""
    require_backend("fp8")
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    quantize_(
        transformer,
        Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()),
        filter_fn=lambda module, name: isinstance(module, nn.Linear) and name.startswith(QUANTIZED_PREFIXES),
        device=device,  # torchao moves each matching layer to the device just before converting it
    )


def _to_nf4(transformer: nn.Module, device: torch.device, compute_dtype: torch.dtype) -> None:
    """NF4 weights with ``compute_dtype`` matmuls (bitsandbytes); each layer quantizes as it moves."""
    bnb = require_backend("nf4")
    for name, linear in _quantized_linears(transformer):
        quantized = bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            compute_dtype=compute_dtype,
            quant_type="nf4",
            device="meta",  # no throw-away allocation: the weights are assigned right below
        )
        quantized.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, quant_type="nf4")
        if linear.bias is not None:
            quantized.bias = nn.Parameter(linear.bias.data, requires_grad=False)
        quantized.train(linear.training)  # a new module starts in training mode; bnb's kernels differ by mode
        parent_name, _, child = name.rpartition(".")
        setattr(transformer.get_submodule(parent_name), child, quantized.to(device))  # quantizes here
