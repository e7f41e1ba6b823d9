"""Streaming a module's weights to the GPU one unit at a time, while it runs (the 24-GB mode's T5).

The T5-XXL encoder is 9.5 GB in bf16 and runs once per request. Its weights stay in CPU memory; just
before each unit (the token embedding, each of the 24 blocks, the final norm) runs, that unit's weights
are copied to the execution device, and right after, the device copies are dropped (the CPU tensors
are put back, no copy back is needed). So the encoder adds only one unit's weights (about 0.4 GB) to the
peak, and moves the same bytes as moving the whole encoder there and back would.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


def _to_device(value, device: torch.device):
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, tuple | list):
        return type(value)(_to_device(item, device) for item in value)
    if isinstance(value, dict):
        return {key: _to_device(item, device) for key, item in value.items()}
    return value


class StreamedModule:
    """Install with ``StreamedModule(units, device)``; ``remove()`` puts the plain module back.

    ``units`` must cover every weight the module uses in its forward pass, and each unit is called
    as a module (a forward hook fires around it). Inputs of each unit are moved to ``device`` too.
    While a unit runs, its parameters and buffers are replaced by device copies; afterwards the
    original CPU tensors go back in place (they are never modified, so nothing is copied back).
    """

    def __init__(self, units: Sequence[nn.Module], device: torch.device) -> None:
        self.device = torch.device(device)
        self.units = list(units)
        self.resident: set[int] = set()  # indices of the units whose weights are on the device now
        self._originals = [_tensor_slots(unit) for unit in self.units]
        self._handles: list[RemovableHandle] = []
        for index, unit in enumerate(self.units):
            self._handles.append(unit.register_forward_pre_hook(self._before(index), with_kwargs=True))
            self._handles.append(unit.register_forward_hook(self._after(index)))

    def _before(self, index: int):
        def hook(unit: nn.Module, args: tuple, kwargs: dict):
            for owner, slots, name, tensor in self._originals[index]:
                copy = tensor.to(self.device, non_blocking=True)
                getattr(owner, slots)[name] = (
                    nn.Parameter(copy, requires_grad=False) if slots == "_parameters" else copy
                )
            self.resident.add(index)
            return _to_device(args, self.device), _to_device(kwargs, self.device)

        return hook

    def _after(self, index: int):
        def hook(unit: nn.Module, args: tuple, output):
            for owner, slots, name, tensor in self._originals[index]:
                getattr(owner, slots)[name] = tensor  # the untouched CPU tensor; the device copy is freed
            self.resident.discard(index)
            return output

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _tensor_slots(unit: nn.Module) -> list[tuple[nn.Module, str, str, torch.Tensor]]:
    """(owning module, "_parameters" or "_buffers", name, tensor) for every tensor in ``unit``."""
    slots = []
    for owner in unit.modules():
        for kind in ("_parameters", "_buffers"):
            for name, tensor in getattr(owner, kind).items():
                if tensor is not None:
                    slots.append((owner, kind, name, tensor))
    return slots


def t5_units(encoder: nn.Module) -> list[nn.Module]:
    """The units of a transformers T5EncoderModel in the order its forward pass calls them."""
    stack = encoder.encoder
    return [stack.embed_tokens, *stack.block, stack.final_layer_norm]


def stream_t5(encoder: nn.Module, device: torch.device) -> StreamedModule:
    """Keep ``encoder`` (a T5EncoderModel) on the CPU and stream it to ``device`` when it runs."""
    encoder.to("cpu")
    return StreamedModule(t5_units(encoder), device)
