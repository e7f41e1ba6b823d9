"""`seethrough batch --consistent`: each frame after the first is an edit of the frame before it.

The frames of one input, camera and seed form a chain, generated in frame order by one worker. Frame
k is an edit of frame k - 1's saved picture over the region that changed between their layouts
(seethrough_core.edit_region): only boxes that moved regenerate and a static background stays
pixel-identical. A frame whose layout did not change at all copies the previous picture. A frame
whose camera moved is an edit of the previous picture reprojected into its camera
(seethrough_core.reprojection): only what the move reveals, and the boxes, regenerate; past the
reprojection limit, a resolution or scene-prompt change, or a previous frame that is missing (it
failed), it is a full generation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from seethrough_core.edit_input import EditInput
from seethrough_core.edit_plan import PreviousPicture
from seethrough_core.edit_region import LayoutChange, layout_change
from seethrough_core.in_view import BoxesInView
from seethrough_core.layout import Layout
from seethrough_core.limits import DEFAULT_REPROJECT_LIMIT
from seethrough_core.record import GenerationRecord, parent_entry
from seethrough_core.reprojection import REPROJECTED, CameraMove, plan_camera_move

from ..previous_picture import EditInputError, read_previous
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


@dataclass
class FramePlan:
    """How one frame of a consistent chain is made."""

    edit: EditInput | None  # None: a full generation (or a copy)
    parent: dict[str, Any] | None  # the record's parent: the previous frame
    region: np.ndarray | None  # the edit's mask, saved beside the image
    copy_of: PreviousPicture | None  # nothing to generate: the previous picture (or its reprojection)
    note: str  # for the progress line, e.g. "edit: car moved"
    reprojected: np.ndarray | None = None  # a camera move: the previous picture in the new camera


def chains_of(shots: list[Shot]) -> list[list[Shot]]:
    """The shots of one input grouped by camera, each group in frame order."""
    by_camera: dict[str, list[Shot]] = {}
    for shot in shots:
        by_camera.setdefault(shot.camera, []).append(shot)
    return [sorted(group, key=lambda s: s.frame) for group in by_camera.values()]


def plan_frame(
    previous: Task, layout: Layout, margin_px: int, reproject_limit: float = DEFAULT_REPROJECT_LIMIT
) -> FramePlan:
    """An edit of the previous frame's picture over what changed, a copy, or a full generation."""
    if not previous.is_complete():
        return FramePlan(None, None, None, None, "full: the previous frame has no picture")
    try:
        before = read_previous(previous.image_path)
    except EditInputError as exc:
        return FramePlan(None, None, None, None, f"full: {exc}")
    change = layout_change(before.layout, layout, margin_px)
    if change.full:  # a camera move: the previous picture reprojected, unless past the limit
        move = plan_camera_move(before.image, before.layout, layout, margin_px, reproject_limit)
        if move is not None and move.full_reason is None:
            return reprojected_frame(before, move, margin_px)
        if move is not None:
            change = LayoutChange(move.full_reason, [], None)
    kind = "regeneration" if change.full else "unchanged" if change.unchanged else "edit"
    details: dict[str, Any] = {"file": str(previous.image_path), "kind": kind}
    if change.full:
        details["reason"] = change.full_reason
        return FramePlan(
            None, parent_entry(before.png, before.record, **details), None, None, change.summary()
        )
    if change.unchanged:
        parent = parent_entry(before.png, before.record, **details)
        return FramePlan(None, parent, None, before, "unchanged: the previous picture, copied")
    details.update(margin_px=margin_px, changes=[c.describe() for c in change.boxes])
    parent = parent_entry(before.png, before.record, **details)
    edit = change.edit_of(before.image)
    return FramePlan(edit, parent, change.mask(), None, f"edit: {change.summary()}")


def reprojected_frame(before: PreviousPicture, move: CameraMove, margin_px: int) -> FramePlan:
    """An edit of the previous picture as the new camera sees it; a copy of that when nothing in it
    needs regenerating (a zoom in, no box in view)."""
    details = move.details(margin_px)
    parent = parent_entry(before.png, before.record, file=before.origin["file"], kind=REPROJECTED, **details)
    edit = move.edit_of()
    if edit is None:
        copy = replace(before, image=move.image)
        return FramePlan(None, parent, None, copy, f"{move.summary()} (nothing to regenerate)", move.image)
    return FramePlan(edit, parent, move.mask(), None, move.summary(), move.image)


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
