"""Validation images during training, made by the server's own pipeline from rendered layouts.

A validation input is a folder written by `seethrough render LAYOUT --out DIR` (layout.json, oscr.png,
masks.json). Each round snapshots the LoRA being trained into a SeeThroughPipeline over the run's own
components and writes ``RUN/validation/step-<step>/<name>.png``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from seethrough_core.errors import LayoutError
from seethrough_core.layout import load_layout
from seethrough_core.limits import DEFAULT_GUIDANCE
from seethrough_core.token_grid import grid_from_strings
from seethrough_core.vocabulary import DEFAULT_SEED

from ..components import FluxComponents
from ..lora import SeeThroughLoRA
from ..model_errors import TrainingError
from ..pipeline import SeeThroughPipeline

VALIDATION_SEED = DEFAULT_SEED  # the reference's default seed


@dataclass(frozen=True)
class ValidationInput:
    name: str
    scene_prompt: str
    descriptions: list[str]
    oscr_image: np.ndarray  # uint8 [H, W, 3]
    token_masks: np.ndarray  # bool [boxes, 32, 32]
    width: int
    height: int


def read_validation_input(folder: Path) -> ValidationInput:
    """A rendered layout folder; TrainingError saying how to make one when it is not."""
    folder = Path(folder)
    missing = [name for name in ("layout.json", "oscr.png", "masks.json") if not (folder / name).is_file()]
    if missing:
        raise TrainingError(
            f"--validate {folder}: not a rendered layout (missing {', '.join(missing)}); make one with "
            f"`seethrough render LAYOUT.json --out {folder}`"
        )
    try:
        layout = load_layout(folder / "layout.json")
        report = json.loads((folder / "masks.json").read_text(encoding="utf-8"))
        grids = np.stack([grid_from_strings(box["token_grid"]) for box in report["boxes"]])
        with Image.open(folder / "oscr.png") as image:
            oscr = np.asarray(image.convert("RGB"))
    except (LayoutError, OSError, ValueError, KeyError) as error:
        raise TrainingError(f"--validate {folder}: cannot read it ({error}); render it again") from None
    return ValidationInput(
        name=folder.name,
        scene_prompt=layout.scene_prompt,
        descriptions=layout.descriptions,
        oscr_image=oscr,
        token_masks=grids,
        width=layout.width,
        height=layout.height,
    )


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
            result = pipeline(
                scene_prompt=item.scene_prompt,
                descriptions=item.descriptions,
                oscr_image=item.oscr_image,
                box_token_masks=item.token_masks,
                width=item.width,
                height=item.height,
                seed=VALIDATION_SEED,
                num_inference_steps=steps,
                guidance_scale=DEFAULT_GUIDANCE,
            )
            path = out / f"{item.name}.png"
            Image.fromarray(result.image).save(path)
            written.append(path)
    finally:
        for encoder in (components.text_encoder, components.text_encoder_2):
            encoder.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return written
