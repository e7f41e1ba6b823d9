"""The settings of one generation and their rules, checked once for every caller.

The protocol's `generate` message, the server's pipeline, the add-on (before it spends a render)
and the command line all check a generation with these functions, in one vocabulary: the
protocol's field names (`steps`, `guidance`, `masks` ...). Only what depends on the loaded model
(how many boxes it takes, how many prompt tokens it reads) is checked by the server on top.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .edit_input import strength_problem
from .errors import SeeThroughError
from .layout import Layout
from .limits import (
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    DRAFT_SIDE,
    DRAFT_STEP_CACHE,
    MAX_BASE_MEGAPIXELS,
    MAX_BOXES,
    MAX_DESCRIPTION_CHARS,
    MAX_GUIDANCE,
    MAX_PREVIEW_INTERVAL,
    MAX_SCENE_PROMPT_CHARS,
    MAX_SEED,
    MAX_STEP_CACHE,
    MAX_STEPS,
    MIN_BASE_MEGAPIXELS,
    MIN_SIDE,
    SIDE_MULTIPLE,
    frame_side_problem,
    side_problem,
)


class SettingError(SeeThroughError, ValueError):
    """A generation setting out of its rules; ``field`` names it (e.g. ``width``, ``descriptions[2]``)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


# Plain Python numbers only: they are what msgpack carries (a numpy integer would not encode).
def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_side(name: str, side: object, problem_of: Callable[[int], str | None] = side_problem) -> None:
    """An output side the model takes (``problem_of``: another rule, e.g. a final frame's)."""
    if not is_int(side):
        raise SettingError(name, f"must be an integer number of pixels, got {side!r}")
    problem = problem_of(side)
    if problem:
        raise SettingError(name, problem)


def check_frame_side(name: str, side: object) -> None:
    """A final frame's side: any integer size up to the upscale's limit (not only the model's sizes)."""
    check_side(name, side, frame_side_problem)


def check_base_megapixels(megapixels: object) -> None:
    if not is_number(megapixels) or not MIN_BASE_MEGAPIXELS <= megapixels <= MAX_BASE_MEGAPIXELS:
        raise SettingError(
            "base_megapixels",
            f"must be a number in {MIN_BASE_MEGAPIXELS:g}..{MAX_BASE_MEGAPIXELS:g} (1.0 is the model's "
            f"native 1024 x 1024), got {megapixels!r}",
        )


def check_strength(strength: object, name: str = "strength") -> None:
    problem = strength_problem(strength)
    if problem:
        raise SettingError(name, problem)


def check_seed(seed: object, *, optional: bool = False) -> None:
    if seed is None and optional:
        return
    if not is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise SettingError("seed", f"must be an integer in 0..{MAX_SEED}, got {seed!r}")


def check_steps(steps: object) -> None:
    if not is_int(steps) or not 1 <= steps <= MAX_STEPS:
        raise SettingError("steps", f"must be an integer in 1..{MAX_STEPS}, got {steps!r}")


def check_guidance(guidance: object) -> None:
    if not is_number(guidance) or not 0.0 <= guidance <= MAX_GUIDANCE:
        raise SettingError("guidance", f"must be a number in 0..{MAX_GUIDANCE:g}, got {guidance!r}")


def check_preview_interval(interval: object) -> None:
    if not is_int(interval) or not 0 <= interval <= MAX_PREVIEW_INTERVAL:
        raise SettingError(
            "preview_interval",
            f"must be 0 (no previews) or a step count up to {MAX_PREVIEW_INTERVAL}, got {interval!r}",
        )


def check_condition_cache(enabled: object) -> None:
    if enabled is not None and not isinstance(enabled, bool):
        raise SettingError(
            "condition_cache", f"must be true, false or absent (the server's default), got {enabled!r}"
        )


def check_step_cache(threshold: object) -> None:
    if threshold is not None and (not is_number(threshold) or not 0.0 <= threshold <= MAX_STEP_CACHE):
        raise SettingError(
            "step_cache",
            f"must be a number in 0..{MAX_STEP_CACHE:g} (0: every step computed; about 0.1: a quick look) "
            f"or absent (the server's default), got {threshold!r}",
        )


def draft_size(width: int, height: int) -> tuple[int, int]:
    """The draft preset's size for a width x height layout: the longer side at most DRAFT_SIDE, the
    aspect kept to the nearest SIDE_MULTIPLE, no side under MIN_SIDE."""
    scale = min(1.0, DRAFT_SIDE / max(width, height))

    def side(value: int) -> int:
        return max(MIN_SIDE, round(value * scale / SIDE_MULTIPLE) * SIDE_MULTIPLE)

    return side(width), side(height)


def check_texts(scene_prompt: object, descriptions: object, max_boxes: int = MAX_BOXES) -> None:
    if not isinstance(scene_prompt, str) or len(scene_prompt) > MAX_SCENE_PROMPT_CHARS:
        raise SettingError("scene_prompt", f"must be a string of at most {MAX_SCENE_PROMPT_CHARS} characters")
    if not isinstance(descriptions, list | tuple) or not descriptions:
        raise SettingError("descriptions", "at least one box description is needed, one per box")
    if len(descriptions) > max_boxes:
        raise SettingError("descriptions", f"{len(descriptions)} boxes; at most {max_boxes} are supported")
    for i, text in enumerate(descriptions):
        if not isinstance(text, str) or not text.strip():
            raise SettingError(f"descriptions[{i}]", 'must be a non-empty string, e.g. "a red vintage car"')
        if len(text) > MAX_DESCRIPTION_CHARS:
            raise SettingError(
                f"descriptions[{i}]", f"{len(text)} characters; at most {MAX_DESCRIPTION_CHARS}"
            )


@dataclass(frozen=True)
class GenerationSettings:
    """Everything about one generation but its images: checkable before the OSCR is rendered."""

    scene_prompt: str
    descriptions: Sequence[str]
    width: int
    height: int
    seed: int | None  # None: the server picks one
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    preview_interval: int = 0  # 0: no previews; n: a preview with every n-th progress message
    # Speed options of one request; None: the server's default (`seethrough serve` flags)
    condition_cache: bool | None = None  # compute the OSCR condition stream once and reuse it
    step_cache: float | None = None  # threshold of the step cache (0: exact; off when None and by default)

    @classmethod
    def for_layout(cls, layout: Layout, **choices: Any) -> GenerationSettings:
        """A layout's prompt, descriptions and size with the artist's ``choices`` (seed, steps ...)."""
        return cls(layout.scene_prompt, layout.descriptions, layout.width, layout.height, **choices)

    def check(self, max_boxes: int = MAX_BOXES) -> None:
        """Raises SettingError naming the first setting out of its rules."""
        check_texts(self.scene_prompt, self.descriptions, max_boxes)
        check_side("width", self.width)
        check_side("height", self.height)
        check_seed(self.seed, optional=True)
        check_steps(self.steps)
        check_guidance(self.guidance)
        check_preview_interval(self.preview_interval)
        check_condition_cache(self.condition_cache)
        check_step_cache(self.step_cache)

    def draft(self) -> GenerationSettings:
        """The draft preset of these settings, for a quick look at a layout: at most DRAFT_SIDE px on the
        longer side, the condition stream cached and the step cache at DRAFT_STEP_CACHE."""
        width, height = draft_size(self.width, self.height)
        return replace(self, width=width, height=height, condition_cache=True, step_cache=DRAFT_STEP_CACHE)
