"""Ordinary FLUX.1 LoRAs (styles, characters) on top of SeeThrough3D, each with its own scale.

They load through diffusers' FLUX LoRA reader (diffusers/peft, kohya, XLabs and other formats are
converted) into peft adapters on the transformer's own layers. Our block runner calls those layers,
so a style LoRA acts on every token, as it would in a plain FLUX pipeline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from diffusers import FluxTransformer2DModel
from diffusers.loaders import FluxLoraLoaderMixin
from safetensors.torch import load_file

from .model_errors import WeightsMismatchError
from .weights import WeightsFile, resolve_style_lora

logger = logging.getLogger(__name__)

TRANSFORMER_PREFIX = "transformer."


@dataclass(frozen=True)
class StyleLoRA:
    adapter_name: str
    path: Path
    scale: float
    sha256: str  # the first SHA256_PREFIX hex digits of the file's hash


def load_style_lora(
    transformer: FluxTransformer2DModel, source: str, scale: float, adapter_name: str
) -> StyleLoRA:
    """Add one LoRA as a peft adapter named ``adapter_name`` (not yet activated: see :func:`activate`)."""
    path = resolve_style_lora(source)
    raw = load_file(str(path), device="cpu")
    if any(".attn.processor." in key and "_loras." in key for key in raw):
        raise WeightsMismatchError(
            f"{path} is a SeeThrough3D condition LoRA, not a style LoRA; pass it as the `lora` argument"
        )
    state, alphas = FluxLoraLoaderMixin.lora_state_dict(raw, return_alphas=True)
    transformer_state = {key: value for key, value in state.items() if key.startswith(TRANSFORMER_PREFIX)}
    if not transformer_state:
        raise WeightsMismatchError(f"{path} holds no FLUX transformer LoRA weights")
    skipped = len(state) - len(transformer_state)
    if skipped:
        logger.warning(
            "style LoRA %s: ignoring %d text-encoder weights (only the transformer part is used)",
            path,
            skipped,
        )
    transformer_alphas = {
        key: value for key, value in (alphas or {}).items() if key.startswith(TRANSFORMER_PREFIX)
    }
    try:
        transformer.load_lora_adapter(
            transformer_state, network_alphas=transformer_alphas or None, adapter_name=adapter_name
        )
    except (ValueError, RuntimeError, KeyError) as error:
        raise WeightsMismatchError(f"{path} does not fit this FLUX transformer: {error}") from error
    return StyleLoRA(
        adapter_name=adapter_name, path=path, scale=float(scale), sha256=WeightsFile.of(path).sha256
    )


def activate(transformer: FluxTransformer2DModel, loras: list[StyleLoRA]) -> None:
    """Make exactly ``loras`` active, each with its scale."""
    if loras:
        transformer.set_adapters(
            [lora.adapter_name for lora in loras], weights=[lora.scale for lora in loras]
        )
