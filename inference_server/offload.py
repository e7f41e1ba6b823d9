"""Streaming a module's weights to the GPU one unit at a time, while it runs (the 24/16-GB modes' T5).

The T5-XXL encoder is 9.5 GB in bf16 and runs once per new prompt. Its weights stay in CPU memory,
page-locked (pinned) on CUDA so copies run at full PCIe speed and asynchronously. When a unit (the token
embedding, each of the 24 blocks, the final norm) starts, its weights must be on the device, and the
next unit's copy is started on a side stream, so it travels while this unit computes; right after a unit
ran, its device copies are dropped (the CPU tensors are put back, no copy back is needed). So the
encoder adds about two units' weights (0.8 GB) to the peak, and the copies hide behind the compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

Slot = tuple[nn.Module, str, str, torch.Tensor]  # (owning module, "_parameters"/"_buffers", name, tensor)


def _to_device(value, device: torch.device):
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, tuple | list):
        return type(value)(_to_device(item, device) for item in value)
    if isinstance(value, dict):
        return {key: _to_device(item, device) for key, item in value.items()}
    return value


@dataclass
class _Copy:
    """One unit's device copies and the event that marks their arrival (None: already there)."""

    tensors: list[torch.Tensor]
    ready: torch.cuda.Event | None


class StreamedModule:
    """Install with ``StreamedModule(units, device)``; ``remove()`` puts the plain module back.

    ``units`` must cover every weight the module uses in its forward pass, and each unit is called
    as a module, in order (forward hooks fire around it). Inputs of each unit are moved to ``device``
    too. While a unit runs, its parameters and buffers are replaced by device copies; afterwards the
    original CPU tensors go back in place (they are never modified, so nothing is copied back).
    ``pin`` (default: on CUDA) page-locks the CPU tensors once; on CUDA the next unit is copied on a
    side stream while the current one runs (``overlap``).
    """

    def __init__(self, units: Sequence[nn.Module], device: torch.device, pin: bool | None = None) -> None:
        self.device = torch.device(device)
        self.units = list(units)
        on_cuda = self.device.type == "cuda"
        self.pinned = on_cuda if pin is None else pin
        self._originals = [_tensor_slots(unit) for unit in self.units]
        if self.pinned:
            self._originals = [[_pin(slot) for slot in slots] for slots in self._originals]
        self._copy_stream = torch.cuda.Stream(self.device) if on_cuda else None
        self._copies: dict[int, _Copy] = {}  # units whose device copies exist: running or prefetched
        self.order: list[tuple[str, int]] = []  # ("copy" | "run" | "done", unit index): what happened when
        self._handles: list[RemovableHandle] = []
        for index, unit in enumerate(self.units):
            self._handles.append(unit.register_forward_pre_hook(self._before(index), with_kwargs=True))
            self._handles.append(unit.register_forward_hook(self._after(index)))

    @property
    def resident(self) -> set[int]:
        """Indices of the units whose weights are on the device now (the running one and the next)."""
        return set(self._copies)

    def _start_copy(self, index: int) -> None:
        if index in self._copies or index >= len(self.units):
            return
        self.order.append(("copy", index))
        tensors = [slot[3] for slot in self._originals[index]]
        if self._copy_stream is None:
            self._copies[index] = _Copy([tensor.to(self.device) for tensor in tensors], None)
            return
        # after the compute queued so far (the previous unit): at most two units are on the device at once
        self._copy_stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._copy_stream):
            copies = [tensor.to(self.device, non_blocking=True) for tensor in tensors]
            ready = torch.cuda.Event()
            ready.record(self._copy_stream)
        self._copies[index] = _Copy(copies, ready)

    def _before(self, index: int):
        def hook(unit: nn.Module, args: tuple, kwargs: dict):
            for stale in [i for i in self._copies if i < index]:  # a run that stopped half-way
                del self._copies[stale]
            self._start_copy(index)  # at once unless the previous unit already started it
            copy = self._copies[index]
            if copy.ready is not None:
                compute = torch.cuda.current_stream(self.device)
                compute.wait_event(copy.ready)
                for tensor in copy.tensors:  # made on the side stream, used on this one
                    tensor.record_stream(compute)
            for (owner, slots, name, _), tensor in zip(self._originals[index], copy.tensors, strict=True):
                getattr(owner, slots)[name] = (
                    nn.Parameter(tensor, requires_grad=False) if slots == "_parameters" else tensor
                )
            self._start_copy(index + 1)  # travels while this unit computes
            self.order.append(("run", index))
            return _to_device(args, self.device), _to_device(kwargs, self.device)

        return hook

    def _after(self, index: int):
        def hook(unit: nn.Module, args: tuple, output):
            for owner, slots, name, tensor in self._originals[index]:
                getattr(owner, slots)[name] = tensor  # the untouched CPU tensor; the device copy is freed
            self._copies.pop(index, None)
            self.order.append(("done", index))
            return output

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._copies.clear()


def _pin(slot: Slot) -> Slot:
    """Replace the slot's CPU tensor by a page-locked copy (the module then holds the pinned one)."""
    owner, slots, name, tensor = slot
    if tensor.device.type != "cpu" or tensor.is_pinned():
        return slot
    pinned = tensor.pin_memory()
    getattr(owner, slots)[name] = (
        nn.Parameter(pinned, requires_grad=False) if slots == "_parameters" else pinned
    )
    return owner, slots, name, pinned


def _tensor_slots(unit: nn.Module) -> list[Slot]:
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


def stream_t5(encoder: nn.Module, device: torch.device, pin: bool | None = None) -> StreamedModule:
    """Keep ``encoder`` (a T5EncoderModel) on the CPU and stream it to ``device`` when it runs."""
    encoder.to("cpu")
    return StreamedModule(t5_units(encoder), device, pin)
