"""The output size asked for on the command line: a resolution and a percentage, as Blender's render settings.

`--resolution WxH` replaces the layout's size: any frame size a layout may have (limits.frame_side_problem,
1080p to 8K included), made in two stages where the model cannot make it directly (docs/upscale.md).
`--percentage P` scales it (a quick preview at 50 %): a scaled side is rounded to the nearest multiple of
16 (FLUX works on 16 px patches), so a preview up to 2048 px is one pass, with the aspect ratio as close as
the patches allow; no side under the model's smallest (MIN_SIDE).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .errors import LayoutError
from .layout import Layout
from .limits import MIN_SIDE, SIDE_MULTIPLE, frame_side_problem

MIN_PERCENTAGE = 1
MAX_PERCENTAGE = 400

_RESOLUTION = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_resolution(text: str) -> tuple[int, int]:
    """'1024x768' -> (1024, 768); ValueError with what is wrong and an example."""
    match = _RESOLUTION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not WIDTHxHEIGHT in pixels, e.g. 768x512")
    size = int(match.group(1)), int(match.group(2))
    for axis, side in zip(("width", "height"), size, strict=True):
        problem = frame_side_problem(side)
        if problem:
            raise ValueError(f"{axis} {problem}")
    return size


def parse_percentage(text: str) -> int:
    """'50' -> 50; ValueError outside MIN_PERCENTAGE..MAX_PERCENTAGE."""
    try:
        value = int(text.strip().rstrip("%"))
    except ValueError:
        raise ValueError(f"{text!r} is not a whole percentage, e.g. 50") from None
    if not MIN_PERCENTAGE <= value <= MAX_PERCENTAGE:
        raise ValueError(f"{value} is outside {MIN_PERCENTAGE}..{MAX_PERCENTAGE}")
    return value


@dataclass(frozen=True)
class OutputSize:
    """A size override: ``resolution`` replaces the layout's, then ``percentage`` scales it."""

    resolution: tuple[int, int] | None = None
    percentage: int = 100

    @property
    def changes_nothing(self) -> bool:
        return self.resolution is None and self.percentage == 100

    def size_of(self, layout: Layout) -> tuple[int, int]:
        width, height = self.resolution or layout.resolution
        if self.percentage != 100:
            width, height = (_scaled(side, self.percentage) for side in (width, height))
        return width, height

    def apply(self, layout: Layout) -> Layout:
        """The layout at this size; LayoutError when the scaled size breaks the side rule."""
        if self.changes_nothing:
            return layout
        width, height = self.size_of(layout)
        for axis, side in (("width", width), ("height", height)):
            problem = frame_side_problem(side)
            if problem is None and self.percentage != 100 and side < MIN_SIDE:
                problem = f"{side} px is under {MIN_SIDE} px, the smallest side the model makes"
            if problem:
                raise LayoutError(
                    "resolution",
                    f"{self.describe(layout)} is {width}x{height}: the {axis} {problem}; choose another "
                    "--resolution or --percentage",
                )
        return replace(layout, resolution=(width, height))

    def describe(self, layout: Layout) -> str:
        base = self.resolution or layout.resolution
        text = f"{base[0]}x{base[1]}"
        return text if self.percentage == 100 else f"{self.percentage}% of {text}"


def _scaled(side: int, percentage: int) -> int:
    return max(SIDE_MULTIPLE, round(side * percentage / 100 / SIDE_MULTIPLE) * SIDE_MULTIPLE)
