"""Validation images during training, made by the server's own pipeline from rendered layouts.

A validation input is a folder written by `seethrough render LAYOUT --out DIR` (layout.json, oscr.png,
masks.json). Each round snapshots the LoRA being trained into a SeeThroughPipeline over the run's own
components and writes ``RUN/validation/step-<step>/<name>.png``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from seethrough_core.condition_input import ConditionInput
from seethrough_core.generation_settings import GenerationSettings
from seethrough_core.rendered_layout import RenderedLayoutError, read_rendered
from seethrough_core.vocabulary import DEFAULT_SEED

from ..components import FluxComponents
from ..lora import SeeThroughLoRA
from ..model_errors import TrainingError
from ..pipeline import SeeThroughPipeline

VALIDATION_SEED = DEFAULT_SEED  # the reference's default seed


@dataclass(frozen=True)
class ValidationInput:
    name: str
    settings: GenerationSettings  # the layout's, at the validation seed and the default guidance
    condition: ConditionInput


def read_validation_input(folder: Path) -> ValidationInput:
    """A rendered layout folder; TrainingError saying how to make one when it is not."""
    folder = Path(folder)
    try:
        rendered = read_rendered(folder)
        with Image.open(rendered.oscr_path) as image:
            oscr = np.asarray(image.convert("RGB"))
    except (RenderedLayoutError, OSError) as error:
        raise TrainingError(
            f"--validate {folder}: {error}; make one with `seethrough render LAYOUT.json --out {folder}`"
        ) from None
    settings = GenerationSettings.for_layout(rendered.layout, seed=VALIDATION_SEED)
    return ValidationInput(folder.name, settings, ConditionInput(oscr, rendered.token_grids))


def write_validation_images(
    components: FluxComponents,
    lora: SeeThroughLoRA,
    inputs: list[ValidationInput],
    out: Path,
    device: torch.device,
    steps: int,
    is_noise: bool,
) -> list[Path]:
    """One image per input with a snapshot of ``lora``; the text encoders go back to the CPU afterwards."""
    snapshot = copy.deepcopy(lora).requires_grad_(False)
    pipeline = SeeThroughPipeline(
        replace(components, condition_lora=snapshot), device=device, memory="full", is_noise=is_noise
    )
    out.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        for item in inputs:
            result = pipeline.generate(replace(item.settings, steps=steps), item.condition)
            path = out / f"{item.name}.png"
            Image.fromarray(result.image).save(path)
            written.append(path)
    finally:
        for encoder in (components.text_encoder, components.text_encoder_2):
            encoder.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return written
