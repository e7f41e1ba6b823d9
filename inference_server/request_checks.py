"""Checks on a generation before any model runs. The settings' rules are the core's
(seethrough_core.generation_settings); here only what the pipeline's arrays and loaded model add.
Errors name the protocol's fields (`masks`, `steps`, `guidance` ...), whoever called."""

from __future__ import annotations

import numpy as np

from seethrough_core.edit_input import EditInput, edit_problem
from seethrough_core.generation_settings import GenerationSettings, check_seed
from seethrough_core.token_grid import GRID_SIZE

from .model_errors import RequestError


def validate_request(
    settings: GenerationSettings, oscr_image: object, box_token_masks: object, max_boxes: int
) -> None:
    settings.check(max_boxes=max_boxes)
    check_seed(settings.seed)  # the pipeline needs one; the server picks it when a request has none
    grid = (GRID_SIZE, GRID_SIZE)
    if not isinstance(box_token_masks, np.ndarray) or box_token_masks.dtype != np.bool_:
        raise RequestError("masks", f"must be a bool numpy array of shape (boxes, {grid[0]}, {grid[1]})")
    if box_token_masks.ndim != 3 or box_token_masks.shape[1:] != grid:
        raise RequestError("masks", f"shape {box_token_masks.shape}, expected (boxes, {grid[0]}, {grid[1]})")
    if box_token_masks.shape[0] != len(settings.descriptions):
        raise RequestError(
            "masks",
            f"{box_token_masks.shape[0]} masks for {len(settings.descriptions)} descriptions; "
            "one mask per box needed",
        )
    if not isinstance(oscr_image, np.ndarray) or oscr_image.dtype != np.uint8:
        raise RequestError("oscr_image", "must be a uint8 numpy array of shape (height, width, 3)")
    if oscr_image.ndim != 3 or oscr_image.shape[2] != 3 or min(oscr_image.shape[:2]) < 1:
        raise RequestError("oscr_image", f"shape {oscr_image.shape}, expected (height, width, 3) RGB")


def validate_edit(edit: EditInput, width: int, height: int) -> None:
    """An edit of a previous result (docs/edit.md); the rule is the protocol's, errors name `edit.*`."""
    problem = edit_problem(edit, width, height)
    if problem is not None:
        raise RequestError(problem.field, problem.message)
