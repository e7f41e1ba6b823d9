"""Checks on a generation request, before any model runs; errors name the offending input."""

from __future__ import annotations

import math

import numpy as np

from seethrough_core.edit_input import EditInput, edit_problem
from seethrough_core.limits import (
    MAX_BOXES,
    MAX_GUIDANCE,
    MAX_PREVIEW_INTERVAL,
    MAX_SEED,
    MAX_SIDE,
    MAX_STEPS,
    MIN_SIDE,
    SIDE_MULTIPLE,
)

from .condition import CONDITION_GRID
from .model_errors import RequestError


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def validate_request(
    *,
    scene_prompt: str,
    descriptions: list[str],
    oscr_image: np.ndarray,
    box_token_masks: np.ndarray,
    width: int,
    height: int,
    seed: int,
    num_inference_steps: int,
    guidance_scale: float,
    preview_interval: int,
    max_boxes: int = MAX_BOXES,
) -> None:
    if not isinstance(scene_prompt, str):
        raise RequestError("scene_prompt", f"must be a string, got {type(scene_prompt).__name__}")

    if not isinstance(descriptions, list | tuple) or not descriptions:
        raise RequestError("descriptions", "at least one box description is needed")
    if len(descriptions) > max_boxes:
        raise RequestError("descriptions", f"{len(descriptions)} boxes; at most {max_boxes} are supported")
    for index, description in enumerate(descriptions):
        if not isinstance(description, str) or not description.strip():
            raise RequestError(f"descriptions[{index}]", "every box needs a non-empty description")

    grid = (CONDITION_GRID, CONDITION_GRID)
    if not isinstance(box_token_masks, np.ndarray) or box_token_masks.dtype != np.bool_:
        raise RequestError(
            "box_token_masks", f"must be a bool numpy array of shape (boxes, {grid[0]}, {grid[1]})"
        )
    if box_token_masks.ndim != 3 or box_token_masks.shape[1:] != grid:
        raise RequestError(
            "box_token_masks", f"shape {box_token_masks.shape}, expected (boxes, {grid[0]}, {grid[1]})"
        )
    if box_token_masks.shape[0] != len(descriptions):
        raise RequestError(
            "box_token_masks",
            f"{box_token_masks.shape[0]} masks for {len(descriptions)} descriptions; one mask per box needed",
        )

    if not isinstance(oscr_image, np.ndarray) or oscr_image.dtype != np.uint8:
        raise RequestError("oscr_image", "must be a uint8 numpy array of shape (height, width, 3)")
    if oscr_image.ndim != 3 or oscr_image.shape[2] != 3 or min(oscr_image.shape[:2]) < 1:
        raise RequestError("oscr_image", f"shape {oscr_image.shape}, expected (height, width, 3) RGB")

    for field, side in (("width", width), ("height", height)):
        if not _is_int(side) or side % SIDE_MULTIPLE or not MIN_SIDE <= side <= MAX_SIDE:
            raise RequestError(
                field, f"{side!r}: must be a multiple of {SIDE_MULTIPLE} between {MIN_SIDE} and {MAX_SIDE}"
            )

    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise RequestError("seed", f"{seed!r}: must be an integer in 0..{MAX_SEED}")
    if not _is_int(num_inference_steps) or not 1 <= num_inference_steps <= MAX_STEPS:
        raise RequestError(
            "num_inference_steps", f"{num_inference_steps!r}: must be an integer in 1..{MAX_STEPS}"
        )
    if (
        not isinstance(guidance_scale, int | float | np.floating)
        or isinstance(guidance_scale, bool)
        or not math.isfinite(guidance_scale)
        or not 0.0 <= guidance_scale <= MAX_GUIDANCE
    ):
        raise RequestError("guidance_scale", f"{guidance_scale!r}: must be a number in 0..{MAX_GUIDANCE:g}")
    if not _is_int(preview_interval) or not 0 <= preview_interval <= MAX_PREVIEW_INTERVAL:
        raise RequestError(
            "preview_interval",
            f"{preview_interval!r}: must be 0 (no previews) or a step count up to {MAX_PREVIEW_INTERVAL}",
        )


def validate_edit(edit: EditInput, width: int, height: int) -> None:
    """An edit of a previous result (docs/edit.md); the rule is the protocol's, errors name `edit.*`."""
    problem = edit_problem(edit, width, height)
    if problem is not None:
        raise RequestError(problem.field, problem.message)
