"""Memory modes: where each model lives and whether the transformer is quantized.

- ``full``: everything on the device in the load dtype (FLUX.1-dev in bf16 peaks near 34 GB).
- ``offload``: everything in CPU memory; each model moves to the device only while it runs (slow).
- ``24gb``: for 24 GB cards. The transformer is quantized (``auto``: the faster of fp8 and NF4 on the
  GPU, eager or compiled: ``quantize.FASTER_QUANTIZATION``) and stays on the device with CLIP, the VAE
  and the condition LoRA; the T5-XXL encoder stays in pinned CPU memory and is streamed to the device
  block by block while it encodes the prompt.
- ``16gb``: for 16 GB cards. As 24gb with an NF4 transformer (fp8's 12 GB would leave too little), and
  the VAE decodes in tiles when a whole decode would not fit the remaining budget
  (``VAE_DECODE_BUDGET_BYTES``; at 1024 px it fits, so the image is the same as in the other modes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seethrough_core.vocabulary import MEMORY_MODES, QUANTIZATION_CHOICES

from .model_errors import SetupError
from .quantize import auto_quantization, require_backend

STREAMED_TEXT_ENCODER_MODES = ("24gb", "16gb")
# The working memory a whole VAE decode may take in the 16gb mode; more, and it decodes in tiles. A 16 GiB
# card holds the NF4 models (~6.5 GiB), the CUDA context and desktop (~2 GiB) and one request's denoising
# (~3-4 GiB at 1024 px): about 3.5 GiB are left, and a 1024 px decode needs about 3 GiB.
VAE_DECODE_BUDGET_BYTES = {"16gb": int(3.5 * 2**30)}


@dataclass(frozen=True)
class MemoryPlan:
    memory: str
    quantization: str | None  # "fp8", "nf4" or None (the load dtype)
    stream_text_encoder: bool  # T5 in CPU memory, streamed to the device while it runs
    offload_all: bool  # every model in CPU memory, moved to the device while it runs
    vae_decode_budget_bytes: int | None = None  # decode in tiles above this working memory (None: never)


def plan_memory(memory: str, quantization: str, device: torch.device, compiled: bool = False) -> MemoryPlan:
    """Resolve a memory mode and a quantization choice for ``device``; "auto" quantizes only in 24gb
    (the faster kind there, eager or ``compiled``) and 16gb (NF4).

    Raises SetupError for an unknown name, for 24gb/16gb without quantization (the bf16 transformer alone
    is 23.8 GB), for fp8 in 16gb, for quantization with offload, and, naming the extra to install, when
    the quantization library is missing.
    """
    if memory not in MEMORY_MODES:
        raise SetupError(f"memory must be one of {MEMORY_MODES}, got '{memory}'")
    if quantization not in QUANTIZATION_CHOICES:
        raise SetupError(f"quantization must be one of {QUANTIZATION_CHOICES}, got '{quantization}'")
    if quantization == "auto":
        kind = {"24gb": auto_quantization(device, compiled), "16gb": "nf4"}.get(memory)
    elif quantization == "none":
        if memory in STREAMED_TEXT_ENCODER_MODES:
            raise SetupError(
                f"memory='{memory}' needs a quantized transformer (the bf16 one alone is 23.8 GB): use "
                "quantization 'auto', 'fp8' or 'nf4'"
            )
        kind = None
    else:
        kind = quantization
    if memory == "16gb" and kind == "fp8":
        raise SetupError(
            "memory='16gb' needs the NF4 transformer: fp8 takes 12 GB and leaves too little of a 16 GB "
            "card; use quantization 'auto' or 'nf4', or memory '24gb' for fp8"
        )
    if kind is not None and memory == "offload":
        # a quantized model would be re-moved to the CPU and back for every request
        raise SetupError("quantization works with memory 'full' or '24gb', not 'offload'")
    if kind is not None:
        require_backend(kind)
    return MemoryPlan(
        memory=memory,
        quantization=kind,
        stream_text_encoder=memory in STREAMED_TEXT_ENCODER_MODES,
        offload_all=memory == "offload",
        vae_decode_budget_bytes=VAE_DECODE_BUDGET_BYTES.get(memory),
    )
