"""Weights read from files, re-allocated so that CPU kernels treat them like weights built in memory.

safetensors hands out tensors that point into the file's buffer at the offsets its header gives, so most
of them start off a 64-byte boundary. On the CPU, the matrix-multiply libraries pick their code path by
alignment too: the same weights then round differently in the last bit than the same model built in
memory, and a few pixels of an image differ by 1/255. torch's CPU allocator aligns every allocation to
64 bytes, so a copy of each misaligned tensor takes the usual path. (On CUDA the weights are copied to
the device anyway; nothing to do there.)
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

CPU_ALIGNMENT = 64  # bytes: torch's CPU allocator, and a cache line


def is_aligned(tensor: torch.Tensor) -> bool:
    return tensor.data_ptr() % CPU_ALIGNMENT == 0


def align_cpu_weights(module: nn.Module) -> int:
    """Copy every CPU parameter and buffer of ``module`` that starts off a 64-byte boundary into aligned
    memory, in place (tied weights stay tied: the Parameter object is kept); returns how many moved."""
    moved = 0
    with torch.no_grad():
        for tensor in itertools.chain(module.parameters(), module.buffers()):
            if tensor.device.type == "cpu" and tensor.numel() and not is_aligned(tensor):
                tensor.data = tensor.data.clone(memory_format=torch.preserve_format)
                moved += 1
    return moved
