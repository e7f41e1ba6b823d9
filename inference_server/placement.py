"""Memory modes: where each model lives and whether the transformer is quantized.

- ``full``: everything on the device in the load dtype (FLUX.1-dev in bf16 peaks near 34 GB).
- ``offload``: everything in CPU memory; each model moves to the device only while it runs (slow).
- ``24gb``: for 24 GB cards. The transformer is quantized (fp8 where the GPU has fp8 matrix units,
  else NF4) and stays on the device with CLIP, the VAE and the condition LoRA; the T5-XXL encoder stays
  in CPU memory and is streamed to the device block by block while it encodes the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seethrough_core.vocabulary import MEMORY_MODES, QUANTIZATION_CHOICES

from .model_errors import SetupError
from .quantize import auto_quantization, require_backend


@dataclass(frozen=True)
class MemoryPlan:
    memory: str
    quantization: str | None  # "fp8", "nf4" or None (the load dtype)
    stream_text_encoder: bool  # T5 in CPU memory, streamed to the device while it runs
    offload_all: bool  # every model in CPU memory, moved to the device while it runs


def plan_memory(memory: str, quantization: str, device: torch.device) -> MemoryPlan:
    """Resolve a memory mode and a quantization choice for ``device``; "auto" quantizes only in 24gb.

    Raises SetupError for an unknown name, for 24gb without quantization (the bf16 transformer alone is
    23.8 GB), for quantization with offload, and, naming the extra to install, when the quantization
    library is missing.
    """
    if memory not in MEMORY_MODES:
        raise SetupError(f"memory must be one of {MEMORY_MODES}, got '{memory}'")
    if quantization not in QUANTIZATION_CHOICES:
        raise SetupError(f"quantization must be one of {QUANTIZATION_CHOICES}, got '{quantization}'")
    if quantization == "auto":
        kind = auto_quantization(device) if memory == "24gb" else None
    elif quantization == "none":
        if memory == "24gb":
            raise SetupError(
                "memory='24gb' needs a quantized transformer (the bf16 one alone is 23.8 GB): use "
                "quantization 'auto', 'fp8' or 'nf4'"
            )
        kind = None
    else:
        kind = quantization
    if kind is not None and memory == "offload":
        # a quantized model would be re-moved to the CPU and back for every request
        raise SetupError("quantization works with memory 'full' or '24gb', not 'offload'")
    if kind is not None:
        require_backend(kind)
    return MemoryPlan(
        memory=memory,
        quantization=kind,
        stream_text_encoder=memory == "24gb",
        offload_all=memory == "offload",
    )
