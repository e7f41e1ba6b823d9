"""An edit of a saved picture, planned from its record and a new layout (docs/edit.md).

One plan for `seethrough edit` and the add-on's Regenerate Changed and Vary Box: which region may
change, the generation's settings (the previous picture's steps and guidance, its seed unless another is
given), the request's `edit`, and the `parent` the new record will carry. After a camera move each kept
pixel is sampled once from the picture that generated it, found through the previous picture's chain of
edits (edit_chain.py). Nothing here renders or talks to a server.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .edit_chain import EditChain
from .edit_input import EditInput, edit_problem
from .edit_region import LayoutChange, box_region, layout_change
from .errors import LayoutError, SeeThroughError
from .generate_and_save import base_path_for, frame_path_for
from .generation_settings import GenerationSettings, SettingError
from .layout import Layout
from .limits import DEFAULT_EDIT_MARGIN_PX, DEFAULT_EDIT_STRENGTH, DEFAULT_REPROJECT_LIMIT
from .pixel_sources import PictureOf, PixelSources
from .png import png_rgb
from .record import GenerationRecord, parent_entry, read_png_file_record, read_png_record
from .reprojection import REPROJECTED, CameraMove, plan_camera_move


class EditPlanError(SeeThroughError, ValueError):
    """An edit that cannot be made (nothing changed, a box out of the picture); the message says why."""


@dataclass(frozen=True)
class PreviousPicture:
    """The picture an edit starts from, as saved by SeeThrough."""

    label: str  # how people know it: a file name, an image's name
    origin: dict[str, Any]  # where it is, for the new record's parent: {"file": path} or {"image": name}
    png: bytes  # the saved PNG (its sha256 names the parent)
    image: np.ndarray  # its pixels, uint8 H x W x 3
    record: GenerationRecord
    layout: Layout

    def chain(self) -> EditChain:
        """The pictures this one was edited from, through its record's parent links; none are reachable
        when its origin names no file."""
        file = Path(str(self.origin["file"])) if self.origin.get("file") else None
        return EditChain(self.label, file, hashlib.sha256(self.png).hexdigest(), self.image)


class PreviousPictureError(SeeThroughError, ValueError):
    """A picture an edit cannot start from; the message says why and what to do."""


def read_previous_picture(label: str, origin: dict[str, Any], png: bytes, remedy: str) -> PreviousPicture:
    """A saved PNG as the start of an edit: its record must be there and describe its pixels.

    Decoded by the core's own reader, so the command line and the add-on read it alike, on any thread;
    ``remedy`` ends each message with what to do where the picture came from.
    """
    try:
        record = read_png_record(png)
    except ValueError as exc:
        raise PreviousPictureError(f"{label}: {exc}") from None
    if record is None:
        raise PreviousPictureError(
            f"{label} has no SeeThrough generation record, so its layout and seed are unknown; {remedy}"
        )
    try:
        image = png_rgb(png)
    except ValueError as exc:
        raise PreviousPictureError(f"{label}: cannot read its pixels: {exc}; {remedy}") from None
    if image.shape[:2] != (record.height, record.width):
        raise PreviousPictureError(
            f"{label} is {image.shape[1]}x{image.shape[0]} px but its record says "
            f"{record.width}x{record.height}: the picture was changed after it was generated; {remedy}"
        )
    try:
        layout = Layout.from_dict(record.layout)
    except LayoutError as exc:
        raise PreviousPictureError(f"{label}: the layout in its record is not usable: {exc}") from None
    return PreviousPicture(label, origin, png, image, record, layout)


def read_previous_file(path: Path, remedy: str) -> PreviousPicture:
    """read_previous_picture of a PNG file SeeThrough saved; the new record's parent names it by its path."""
    try:
        png = path.read_bytes()
    except OSError as exc:
        raise PreviousPictureError(f"cannot read {path}: {exc.strerror or exc}") from None
    return read_previous_picture(path.name, {"file": str(path)}, png, remedy)


def base_picture_of(
    picture: Path | None, record: GenerationRecord | None = None, *, label: str = "", remedy: str
) -> Path:
    """The base picture of a frame made in two stages (docs/upscale.md): an edit of the frame changes its
    base, then upscales it again. ``picture`` itself when it is a base (NAME_base.png); else the picture
    its record says the frame was made from (``source["base"]``, or ``source["upscale_of"]`` of
    `seethrough upscale`), else NAME_base.png beside the frame. A candidate whose record is not the one
    the frame's upscale started from (another size or seed) is passed over.

    ``record``: the frame's record when it is at hand (None: read from ``picture``). PreviousPictureError
    when no base is found: it says where it looked, and ``remedy`` what to do."""
    if picture is not None and frame_path_for(picture) is not None:
        return picture
    if record is None and picture is not None:
        record = _file_record(picture)
    source = record.source if record is not None else {}
    candidates = [Path(str(source[key])) for key in ("base", "upscale_of") if source.get(key)]
    if picture is not None:
        candidates.append(base_path_for(picture))
    looked = []
    for candidate in dict.fromkeys(candidates):  # in order, each once
        if not candidate.is_file():
            looked.append(str(candidate))
        elif _started_from(candidate, record):
            return candidate
        else:
            looked.append(f"{candidate} (another picture)")
    name = label or (picture.name if picture is not None else "the frame")
    raise PreviousPictureError(
        f"{name} is a frame made in two stages and its base picture is gone (looked for "
        f"{', '.join(looked) or 'a base named in its record'}); an edit changes the base picture, then "
        f"upscales it again: {remedy}"
    )


def _file_record(path: Path) -> GenerationRecord | None:
    try:
        return read_png_file_record(path)
    except (OSError, ValueError):  # the frame's own record is a hint only: the naming rule still holds
        return None


def _started_from(base: Path, frame: GenerationRecord | None) -> bool:
    """Whether ``base`` is the picture ``frame``'s upscale started from: its size and seed (no frame
    record: nothing to check against)."""
    stage = frame.upscale if frame is not None else None
    if not stage:
        return True
    record = _file_record(base)
    return record is not None and (
        [record.width, record.height] == list(stage["base"]["size"]) and record.seed == stage["base"]["seed"]
    )


@dataclass(frozen=True)
class EditPlan:
    settings: GenerationSettings
    edit: EditInput | None  # None: a full regeneration (camera, resolution or scene prompt changed)
    change: LayoutChange
    parent: dict[str, Any]  # the new record's `parent` (record.parent_entry)
    camera_move: CameraMove | None = None  # kind "reprojected": the previous picture in the new camera
    sources: PixelSources | None = None  # a shot's frame: where each of its pixels is generated

    @property
    def unchanged(self) -> bool:
        """Nothing to regenerate: the previous picture (after a camera move, ``reprojected``) is the new
        one; a sequence copies it."""
        return self.edit is None and not self.change.full

    @property
    def reprojected(self) -> np.ndarray | None:
        """The reprojected picture the edit starts from, saved beside the result (None: not a camera move)."""
        return None if self.camera_move is None else self.camera_move.image

    @property
    def region_mask(self) -> np.ndarray | None:
        """The region as saved beside the result (uint8, 255 = may change); None for a regeneration."""
        return None if self.edit is None else self.change.mask()

    def summary(self) -> str:
        return self.change.summary() if self.camera_move is None else self.camera_move.summary()

    def saved_as(self, label: str) -> EditPlan:
        """The plan with the new picture called ``label`` (the path it is saved at, once chosen) in its
        pixel sources and the record's ``parent.sources``."""
        if self.sources is None:
            return self
        sources = self.sources.renamed(label)
        parent = self.parent
        if "sources" in parent:
            parent = {**parent, "sources": _shares(sources)}
        return replace(self, parent=parent, sources=sources)


def plan_edit(
    previous: PreviousPicture,
    layout: Layout,
    *,
    margin_px: int = DEFAULT_EDIT_MARGIN_PX,
    strength: float = DEFAULT_EDIT_STRENGTH,
    seed: int | None = None,
    preview_interval: int = 0,
    reproject_limit: float = DEFAULT_REPROJECT_LIMIT,
    chain: EditChain | None = None,
) -> EditPlan:
    """The previous picture brought to ``layout``: only the region of the change regenerates.

    EditPlanError when nothing changed; SettingError (field ``margin``, ``strength``, ``seed`` ...)
    for a setting out of its rules. A camera move is an edit of the previous picture reprojected into
    the new camera (kind "reprojected") unless it leaves more than ``reproject_limit`` of the picture
    to regenerate; that, or a change of resolution or scene prompt, plans a full regeneration with the
    previous settings (``plan.edit`` is None; the summary says why).

    ``chain``: the previous picture's chain of edits (``previous.chain``). A camera move then samples
    each kept pixel once from the picture that generated it, and the plan's ``sources`` say where the
    new picture's pixels come from (``saved_as`` names it); without it, from the previous picture."""
    change, move = _camera_move(
        previous, layout, changed_layout(previous, layout, margin_px), margin_px, reproject_limit
    )
    if move is not None and change.unchanged:  # nothing new in view and no box: still a picture to make
        change, move = (
            LayoutChange("the camera move leaves nothing to regenerate (no box in view)", [], None),
            None,
        )
    if move is not None:
        sources = None
        if chain is not None:
            move, sources = _follow_sources(chain.sources(), chain.picture_of, "", layout, change, move)
        plan = _plan(previous, layout, change, REPROJECTED, margin_px, strength, seed, preview_interval, move)
        return _with_sources(plan, sources)
    kind = "regeneration" if change.full else "edit"
    return _plan(previous, layout, change, kind, margin_px, strength, seed, preview_interval)


def changed_layout(previous: PreviousPicture, layout: Layout, margin_px: int) -> LayoutChange:
    """What changed from the previous picture's layout to ``layout``, before any reprojection: quick, so the
    add-on asks it on Blender's main thread and plans the rest (plan_edit) on the job's. EditPlanError
    when nothing changed in the frame."""
    change = layout_change(previous.layout, layout, margin_px)
    if change.unchanged:
        what = "no box changed" if not change.boxes else "no changed box is in the frame"
        raise EditPlanError(
            f"the layout is unchanged from {previous.label} ({what}): there is nothing to regenerate; "
            "move, add, remove, resize, turn or re-describe a box first"
        )
    return change


def plan_variation(
    previous: PreviousPicture,
    layout: Layout,
    box_index: int,
    seed: int,
    *,
    margin_px: int = DEFAULT_EDIT_MARGIN_PX,
    strength: float = DEFAULT_EDIT_STRENGTH,
    preview_interval: int = 0,
) -> EditPlan:
    """New noise (``seed``) inside one box's region of the previous picture; any other change of the
    layout since that picture regenerates too. EditPlanError when the whole picture would have to
    change (camera, resolution, scene prompt) or the box is outside the picture."""
    change = layout_change(previous.layout, layout, margin_px)
    if change.full:
        raise EditPlanError(
            f"cannot vary one box of {previous.label}: {change.full_reason}; generate a new picture first"
        )
    region = box_region(layout, box_index, margin_px)
    label = layout.boxes[box_index].name or layout.boxes[box_index].description
    if not region.any():
        raise EditPlanError(f"box {label!r} is outside the camera's view: there is nothing of it to vary")
    if change.region is not None:
        region = region | change.region
    varied = LayoutChange(None, change.boxes, region)
    plan = _plan(previous, layout, varied, "variation", margin_px, strength, seed, preview_interval)
    plan.parent["box"] = label
    return plan


def _plan(
    previous: PreviousPicture,
    layout: Layout,
    change: LayoutChange,
    kind: str,
    margin_px: int,
    strength: float,
    seed: int | None,
    preview_interval: int,
    move: CameraMove | None = None,
) -> EditPlan:
    settings = edit_settings(previous, layout, seed=seed, preview_interval=preview_interval)
    return _edit_plan(previous, layout, settings, change, kind, margin_px, strength, move)


def edit_settings(
    previous: PreviousPicture, layout: Layout, *, seed: int | None = None, preview_interval: int = 0
) -> GenerationSettings:
    """An edit's generation settings: the previous picture's steps and guidance, and its seed unless
    another is given; SettingError when one is out of its rules."""
    record = previous.record
    settings = GenerationSettings.for_layout(
        layout,
        seed=record.seed if seed is None else seed,
        steps=record.steps,
        guidance=record.guidance,
        preview_interval=preview_interval,
    )
    settings.check()
    return settings


def plan_next_frame(
    previous: PreviousPicture,
    layout: Layout,
    settings: GenerationSettings,
    *,
    margin_px: int,
    reproject_limit: float = DEFAULT_REPROJECT_LIMIT,
    sources: PixelSources | None = None,
    picture_of: PictureOf | None = None,
    label: str = "",
) -> EditPlan:
    """A frame of a sequence (`seethrough batch --consistent`) from the frame before it, with the
    sequence's own settings: an edit over what changed, the previous frame reprojected after a camera
    move, a full regeneration (a move past ``reproject_limit``, resolution or scene prompt changed), or,
    when nothing needs regenerating, no edit and ``plan.unchanged`` (copy the picture).

    ``sources``: the previous frame's pixel sources (pixel_sources.py). After a camera move each kept
    pixel is then sampled once from the picture that generated it (``picture_of`` reads one by its
    label), not from the previous frame; the plan's ``sources`` are the new frame's, ``label``."""
    change = layout_change(previous.layout, layout, margin_px)
    change, move = _camera_move(previous, layout, change, margin_px, reproject_limit)
    next_sources = None
    if sources is not None:
        if picture_of is None:
            raise ValueError("pixel sources need picture_of to read the frames they name")
        move, next_sources = _follow_sources(sources, picture_of, label, layout, change, move)
    kind = (
        REPROJECTED
        if move is not None
        else "regeneration"
        if change.full
        else "unchanged"
        if change.unchanged
        else "edit"
    )
    plan = _edit_plan(previous, layout, settings, change, kind, margin_px, DEFAULT_EDIT_STRENGTH, move)
    return _with_sources(plan, next_sources)


def _with_sources(plan: EditPlan, sources: PixelSources | None) -> EditPlan:
    """``plan`` with the new picture's pixel sources; after a camera move its record says which pictures
    its pixels are from."""
    if sources is not None and plan.camera_move is not None:
        plan.parent["sources"] = _shares(sources)
    return replace(plan, sources=sources)


def _shares(sources: PixelSources) -> dict[str, float]:
    return {name: round(share, 4) for name, share in sources.shares().items()}


def _follow_sources(
    sources: PixelSources,
    picture_of: PictureOf,
    label: str,
    layout: Layout,
    change: LayoutChange,
    move: CameraMove | None,
) -> tuple[CameraMove | None, PixelSources]:
    """The camera move with its kept pixels sampled from where they were generated, and the new
    frame's sources: its own where it regenerates, the previous frame's sources elsewhere."""
    if change.full:
        return move, PixelSources.generated(label, layout.height, layout.width)
    if move is None:
        generated = change.region if change.region is not None else np.zeros(sources.index.shape, bool)
        return None, sources.edited(generated, label)
    moved = sources.moved(move.reprojection.source, move.region, label)
    image = moved.sample(picture_of, ~move.region, move.image)
    return replace(move, reprojection=replace(move.reprojection, image=image)), moved


def _camera_move(
    previous: PreviousPicture, layout: Layout, change: LayoutChange, margin_px: int, reproject_limit: float
) -> tuple[LayoutChange, CameraMove | None]:
    """A full-regeneration ``change`` with what reprojection makes of it: the region of a camera move
    (and the move), or the full regeneration with the reason reprojection cannot carry it (and None)."""
    if not change.full:
        return change, None
    move = plan_camera_move(previous.image, previous.layout, layout, margin_px, reproject_limit)
    if move is None:
        return change, None
    if move.full_reason is not None:
        return LayoutChange(move.full_reason, [], None), None
    return LayoutChange(None, move.boxes, move.region), move


def _edit_plan(
    previous: PreviousPicture,
    layout: Layout,
    settings: GenerationSettings,
    change: LayoutChange,
    kind: str,
    margin_px: int,
    strength: float,
    move: CameraMove | None = None,
) -> EditPlan:
    """The edit of the previous picture (or of its reprojection, after a camera move) for ``change`` and
    the parent entry naming it, one way for all."""
    start = previous.image if move is None else move.image
    edit = None if change.unchanged else change.edit_of(start, strength)
    if edit is not None:
        problem = edit_problem(edit, layout.width, layout.height)
        if problem is not None:  # the image and mask are right by construction: the strength is not
            raise SettingError(problem.field.removeprefix("edit."), problem.message)
    details: dict[str, Any] = {**previous.origin, "kind": kind}
    if change.full:
        details["reason"] = change.full_reason
    elif move is not None:
        details.update(**move.details(margin_px))
        if edit is not None:
            details["strength"] = edit.strength
    elif edit is not None:
        changes = [c.describe() for c in change.boxes]
        details.update(strength=edit.strength, margin_px=margin_px, changes=changes)
    return EditPlan(settings, edit, change, parent_entry(previous.png, previous.record, **details), move)
