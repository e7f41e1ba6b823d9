"""`seethrough batch --consistent`: each frame after the first is an edit of the frame before it.

The frames of one input, camera and seed form a chain, generated in frame order by one worker. Frame
k is an edit of frame k - 1's saved picture over the region that changed between their layouts
(seethrough_core.edit_region): only boxes that moved regenerate and a static background stays
pixel-identical. A frame whose layout did not change at all copies the previous picture. A frame
whose camera moved is an edit of the previous picture reprojected into its camera
(seethrough_core.reprojection): only what the move reveals, and the boxes, regenerate; past the
reprojection limit, a resolution or scene-prompt change, or a previous frame that is missing (it
failed), it is a full generation. A kept pixel is sampled from the frame that generated it, however
many frames ago (seethrough_core.pixel_sources), so a long move does not soften the picture; the chain
carries those sources from frame to frame, and a resumed chain rebuilds them from the saved frames
(seethrough_core.edit_chain, as `seethrough edit` does).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from seethrough_core.edit_input import EditInput
from seethrough_core.edit_plan import PreviousPicture, PreviousPictureError, plan_next_frame
from seethrough_core.generation_settings import GenerationSettings
from seethrough_core.in_view import BoxesInView
from seethrough_core.layout import Layout
from seethrough_core.limits import DEFAULT_REPROJECT_LIMIT
from seethrough_core.pixel_sources import PixelSources
from seethrough_core.record import GenerationRecord

from ..previous_picture import read_previous
from .plan import Shot, Task

# The OSCR PNG and the token grids of a rendered shot, and which of its boxes the frame shows
Condition = tuple[bytes, np.ndarray, BoxesInView]


@dataclass
class Link:
    """One image of a chain: its task, its rendered condition, and the frame it continues (if any)."""

    task: Task
    condition: Condition
    previous: Task | None = None  # --consistent: the frame before it in the chain


@dataclass
class Chain:
    """Images a worker generates in order; a batch without --consistent queues chains of one."""

    links: list[Link]
    done: set[Path] = field(default_factory=set)  # images finished, so a retry elsewhere skips them
    sources: PixelSources | None = None  # where the pixels of its last finished frame were generated


@dataclass
class FramePlan:
    """How one frame of a consistent chain is made."""

    edit: EditInput | None  # None: a full generation (or a copy)
    parent: dict[str, Any] | None  # the record's parent: the previous frame
    region: np.ndarray | None  # the edit's mask, saved beside the image
    copy_of: PreviousPicture | None  # nothing to generate: the previous picture (or its reprojection)
    note: str  # for the progress line, e.g. "edit: car moved"
    reprojected: np.ndarray | None = None  # a camera move: the previous picture in the new camera
    sources: PixelSources | None = None  # where this frame's pixels are generated (pixel_sources.py)


def chains_of(shots: list[Shot]) -> list[list[Shot]]:
    """The shots of one input grouped by camera, each group in frame order."""
    by_camera: dict[str, list[Shot]] = {}
    for shot in shots:
        by_camera.setdefault(shot.camera, []).append(shot)
    return [sorted(group, key=lambda s: s.frame) for group in by_camera.values()]


def plan_frame(
    previous: Task,
    layout: Layout,
    settings: GenerationSettings,
    margin_px: int,
    reproject_limit: float = DEFAULT_REPROJECT_LIMIT,
    *,
    target: Path,
    carried: PixelSources | None = None,
) -> FramePlan:
    """An edit of the previous frame's picture (or of its reprojection, after a camera move) over what
    changed, a copy, or a full generation: the core's plan (seethrough_core.edit_plan), the one
    `seethrough edit` and the add-on make. ``target``: where the frame is saved; ``carried``: the
    previous frame's pixel sources if the chain has them, else they are rebuilt from the saved frames
    (seethrough_core.edit_chain)."""
    if not previous.is_complete():
        return FramePlan(None, None, None, None, "full: the previous frame has no picture")
    try:
        before = read_previous(previous.image_path)
    except PreviousPictureError as exc:
        return FramePlan(None, None, None, None, f"full: {exc}")
    chain = before.chain()
    sources = carried if carried is not None and carried.label == chain.label else chain.sources()
    plan = plan_next_frame(
        before,
        layout,
        settings,
        margin_px=margin_px,
        reproject_limit=reproject_limit,
        sources=sources,
        picture_of=chain.picture_of,
        label=str(target),
    )
    if plan.unchanged and plan.camera_move is not None:  # a push-in with no box in view, say
        copy = replace(before, image=plan.camera_move.image)
        note = f"{plan.summary()} (nothing to regenerate)"
        return FramePlan(None, plan.parent, None, copy, note, plan.reprojected, plan.sources)
    if plan.unchanged:
        note = "unchanged: the previous picture, copied"
        return FramePlan(None, plan.parent, None, before, note, sources=plan.sources)
    if plan.edit is None:
        return FramePlan(None, plan.parent, None, None, plan.summary(), sources=plan.sources)
    note = plan.summary() if plan.camera_move is not None else f"edit: {plan.summary()}"
    return FramePlan(plan.edit, plan.parent, plan.region_mask, None, note, plan.reprojected, plan.sources)


def copied_record(
    previous: PreviousPicture, layout: Layout, source: dict[str, Any], parent: dict[str, Any] | None
) -> GenerationRecord:
    """The record of a frame that is the previous frame's picture unchanged (nothing was generated)."""
    return replace(
        previous.record,
        layout=layout.to_dict(),
        source=source,
        parent=parent,
        timings={},
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
