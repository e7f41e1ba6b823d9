"""The `edit` of a generate request: regenerate only inside a mask of a previous result (docs/edit.md).

One definition of what a valid edit is, read by both ends: the protocol (a bad edit is answered with
`invalid_field`) and the pipeline's own checks (the same rule when it is called directly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .limits import DEFAULT_EDIT_STRENGTH

MASK_INSIDE = 255  # uint8 edit masks are 0 (keep) or 255 (may change): nothing in between


@dataclass
class EditInput:
    """The previous result and where it may change.

    ``image``: uint8 H x W x 3, the previous result at the request's width x height. ``mask``: uint8
    H x W with 255 where the picture may change and 0 where it must stay (or bool). ``strength`` in
    (0, 1]: 1 regenerates the region from noise; lower values start from the previous image noised
    part of the way, so more of it survives.
    """

    image: np.ndarray
    mask: np.ndarray
    strength: float = DEFAULT_EDIT_STRENGTH

    def region(self) -> np.ndarray:
        """The mask as bool H x W: True where the picture may change."""
        mask = np.asarray(self.mask)
        return mask if mask.dtype == np.bool_ else mask == MASK_INSIDE


@dataclass(frozen=True)
class EditProblem:
    field: str  # e.g. "edit.mask"
    message: str  # what is wrong, why, and what to do


def edit_problem(edit: Any, width: int, height: int) -> EditProblem | None:
    """What is wrong with ``edit`` for a request of ``width`` x ``height``; None when it is usable."""
    if not isinstance(edit, EditInput):
        return EditProblem("edit", 'must be a map {"image", "mask", "strength"} or nil')
    image, mask, strength = edit.image, edit.mask, edit.strength
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape != (height, width, 3):
        got = (
            f"{image.dtype.name} {list(image.shape)}"
            if isinstance(image, np.ndarray)
            else type(image).__name__
        )
        return EditProblem(
            "edit.image",
            f"must be the previous result as uint8 [{height}, {width}, 3] (the request's height x width), "
            f"got {got}; an edit keeps the size of the picture it changes",
        )
    if (
        not isinstance(mask, np.ndarray)
        or mask.dtype.name not in ("uint8", "bool")
        or mask.shape
        != (
            height,
            width,
        )
    ):
        got = _shown(mask)
        return EditProblem(
            "edit.mask", f"must be uint8 or bool [{height}, {width}] (one value per pixel), got {got}"
        )
    if mask.dtype == np.uint8 and ((mask != 0) & (mask != MASK_INSIDE)).any():
        odd = int(mask[(mask != 0) & (mask != MASK_INSIDE)][0])
        return EditProblem(
            "edit.mask",
            f"has the value {odd}: an edit mask is binary, {MASK_INSIDE} where the picture may change and 0 "
            "where it must stay; threshold a soft mask before sending it (the server feathers the edge)",
        )
    if not edit.region().any():
        return EditProblem(
            "edit.mask",
            "is empty: nothing may change, so the result would be the previous image; mark the region "
            f"to regenerate with {MASK_INSIDE}, or leave out edit for a new picture",
        )
    problem = strength_problem(strength)
    if problem:
        return EditProblem("edit.strength", problem)
    return None


def strength_problem(strength: Any) -> str | None:
    """What is wrong with an img2img strength (an edit's, an upscale's), or None."""
    if (
        not isinstance(strength, int | float)
        or isinstance(strength, bool)
        or not math.isfinite(strength)
        or not 0.0 < strength <= 1.0
    ):
        return (
            f"must be a number in (0, 1], got {strength!r}: 1 regenerates from noise, "
            "lower values keep more of the previous image"
        )
    return None


def _shown(value: Any) -> str:
    return (
        f"{value.dtype.name} {list(value.shape)}" if isinstance(value, np.ndarray) else type(value).__name__
    )
