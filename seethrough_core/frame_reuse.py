"""An edit of a frame made in two stages refines only the tiles its change reaches (docs/upscale.md).

The edit changes the frame's base picture inside a region; every other base pixel stays exactly what it
was. Enlarged, that region reaches a few of the frame's tiles: those are refined again, and every pixel
the change does not reach is the previous frame's, exactly, as in an edit of a one-pass picture. A 4K
frame whose one box moved sends the tiles around that box, not all 15 (the example street's dog: 9).
The refined tiles fade into the previous frame around the change, over 1/32 of a tile's side
(REUSE_FEATHER_TILE_SHARE: 32 frame pixels).

Only a frame upscaled from the edited base's pixels, with the same plan (size, framing, tiles,
strength), steps and guidance, at the same camera, can lend its pixels; any other edit (a camera move
reprojects the whole base) refines every tile, as before.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .edit_plan import PreviousPicture, PreviousPictureError, read_previous_file
from .edit_region import dilate
from .generate_and_save import frame_path_for, region_path_for
from .layout import Layout
from .limits import REUSE_FEATHER_TILE_SHARE
from .png import read_png_rgb
from .record import GenerationRecord
from .upscale_plan import BasePlan, Tile, UpscalePlan, pixels_sha256, tile_window

# Bicubic enlargement reads base pixels up to 2 away from where a frame pixel samples; the nearest base
# pixel is up to 1 further: a changed base pixel reaches frame pixels whose nearest base pixel is within 3.
_ENLARGEMENT_REACH_PX = 3
# The plan's fields that must agree for a frame's tiles to be reused (the seed may differ: Vary Box).
_PLAN_FIELDS = ("frame", "base_megapixels", "strength", "tile_side", "overlap", "grid")


@dataclass(frozen=True)
class FrameReuse:
    """The frame an edit of its base started from, and the frame pixels the edit changes."""

    image: np.ndarray  # the previous frame, uint8 H x W x 3
    changed: np.ndarray  # bool H x W: frame pixels the changed base pixels reach once enlarged
    tiles: dict[str, dict[str, Any]]  # the previous frame's record of each tile, by name
    origin: dict[str, Any]  # the previous frame: {"file": path, "sha256": its PNG's}
    feather_px: int  # frame pixels over which the refined tiles fade into the previous frame

    @cached_property
    def reach(self) -> np.ndarray:
        """The frame pixels the refined tiles make: the change and the feather around it."""
        return dilate(self.changed, self.feather_px)

    def refined(self, plan: UpscalePlan) -> tuple[Tile, ...]:
        """The tiles to refine: those reaching any pixel of ``reach``."""
        return _tiles_reaching(self.reach, plan)

    def composite(self, refined: np.ndarray) -> np.ndarray:
        """The new frame: ``refined`` (float H x W x 3, the refined tiles' blend, valid over ``reach``) on
        the change, fading into the previous frame over the feather; elsewhere the previous frame. Only
        the reach's bounding box is computed: an 8K frame's small change costs a small array."""
        frame = np.array(self.image, dtype=np.uint8, copy=True)
        rows, cols = np.nonzero(self.reach.any(axis=1))[0], np.nonzero(self.reach.any(axis=0))[0]
        if rows.size == 0:
            return frame
        box = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)  # holds every alpha above 0
        alpha = _feather(self.changed[box], self.feather_px)[..., None]
        mixed = frame[box].astype(np.float32) * (1.0 - alpha) + refined[box].astype(np.float32) * alpha
        frame[box] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
        return frame

    def summary(self, plan: UpscalePlan) -> str:
        """What the upscale refines, for the progress line and the panel."""
        kept_from = Path(self.origin["file"]).name
        return f"{len(self.refined(plan))} of {len(plan.tiles)} tiles refined, the rest of {kept_from} kept"

    def record(self, plan: UpscalePlan) -> list[dict[str, Any]]:
        """The reused tiles' entries of the new frame's record: the previous frame's, marked ``reused``."""
        refined = {t.name for t in self.refined(plan)}
        return [{**self.tiles[t.name], "reused": True} for t in plan.tiles if t.name not in refined]


def frame_reuse(
    previous: PreviousPicture,
    old_base: np.ndarray,
    new_base: np.ndarray,
    *,
    plan: UpscalePlan,
    frame_layout: Layout,
    steps: int,
    guidance: float,
    region: np.ndarray | None = None,
) -> FrameReuse | None:
    """The previous frame (the picture an edit of a frame started from) as the pixels the edit of its base
    keeps, or None when it cannot lend them: it is not an upscaled frame of this plan, steps, guidance and
    camera, or its record lacks a tile.

    ``old_base``/``new_base``: the base before and after the edit (the same size); ``region``: the edit's
    region at the base's size (it may change pixels the model happened to leave equal)."""
    previous_record, previous_image = previous.record, previous.image
    stage = previous_record.upscale
    if not stage or previous_image.shape[:2] != (plan.frame_height, plan.frame_width):
        return None
    wanted = plan.to_record()
    same_plan = all(stage.get(key) == wanted[key] for key in _PLAN_FIELDS) and _same_framing(
        stage.get("base", {}), plan.base
    )
    if not same_plan or stage.get("steps") != steps or previous_record.guidance != guidance:
        return None
    if not same_frame_view(previous.layout, frame_layout):
        return None
    if old_base.shape != new_base.shape or old_base.shape[:2] != (plan.base.height, plan.base.width):
        return None
    if stage.get("base", {}).get("pixels_sha256") != pixels_sha256(old_base):
        return None  # the frame was not upscaled from this base (made again since, or an older record)
    tiles = {str(t.get("name")): t for t in stage.get("tiles", []) if isinstance(t, dict)}
    if any(t.name not in tiles for t in plan.tiles):
        return None
    changed = (np.asarray(old_base) != np.asarray(new_base)).any(axis=2)
    if region is not None:
        changed |= np.asarray(region) > 0
    changed = base_to_frame(changed, plan)
    if changed.all():
        return None  # a whole new base (a regeneration): nothing of the previous frame stays
    file = previous.origin.get("file") or previous.label
    origin = {"file": str(file), "sha256": hashlib.sha256(previous.png).hexdigest()}
    return FrameReuse(np.asarray(previous_image), changed, tiles, origin, _feather_px(plan))


def same_frame_view(before: Layout, frame_layout: Layout) -> bool:
    """The frame before shows the new frame's view (camera and size): only then can it lend pixels."""
    return before.camera == frame_layout.camera and before.resolution == frame_layout.resolution


def tiles_an_edit_reaches(region: np.ndarray, plan: UpscalePlan) -> tuple[Tile, ...]:
    """The tiles an edit of a frame's base inside ``region`` (the base's size, nonzero: may change)
    refines when the frame before lends the rest (frame_reuse): an edit keeps every base pixel outside
    its region, so this is known before the base is generated, and the tiles' views can render
    meanwhile."""
    changed = base_to_frame(np.asarray(region) > 0, plan)
    return _tiles_reaching(dilate(changed, _feather_px(plan)), plan)


def tiles_a_base_edit_reaches(base_path: Path, plan: UpscalePlan) -> tuple[Tile, ...] | None:
    """tiles_an_edit_reaches for the base picture at ``base_path``, from the region saved beside it;
    None when it has none that can be read."""
    try:
        region = _region_beside(base_path)
    except (OSError, ValueError):
        return None
    return None if region is None else tiles_an_edit_reaches(region, plan)


def _region_beside(image_path: Path) -> np.ndarray | None:
    """The edit's region saved beside a picture (bool, True: may change); None when there is none.
    OSError or ValueError when it cannot be read."""
    path = region_path_for(image_path)
    return read_png_rgb(path)[..., 0] > 0 if path.is_file() else None


def _feather_px(plan: UpscalePlan) -> int:
    """Frame pixels over which refined tiles fade into the previous frame."""
    return max(2, round(plan.tile_side * REUSE_FEATHER_TILE_SHARE))


def _tiles_reaching(reach: np.ndarray, plan: UpscalePlan) -> tuple[Tile, ...]:
    """The tiles covering any pixel of ``reach`` (bool, frame size): all of them, so their blend weights
    there sum to 1, as in a whole frame."""
    return tuple(t for t in plan.tiles if reach[tile_window(plan, t)[:2]].any())


# The kinds of edit (a record's parent kind) that keep the camera, so the frame before can lend pixels
_KEEPS_THE_CAMERA = ("edit", "variation", "unchanged")


def parent_frame_path(base: GenerationRecord) -> Path | None:
    """The frame made from the picture a base was edited from (``base``: the base's record; its parent
    NAME_base.png), by the naming rule: NAME.png beside it. None when the base is no edit of a base
    picture, or an edit that changes every pixel (a camera move, a regeneration)."""
    parent = base.parent or {}
    if parent.get("kind") not in _KEEPS_THE_CAMERA or not parent.get("file"):
        return None
    return frame_path_for(Path(str(parent["file"])))


def reuse_of_parent(
    base: PreviousPicture, *, plan: UpscalePlan, frame_layout: Layout, steps: int, guidance: float
) -> FrameReuse | None:
    """For a batch: the frame of the base picture ``base`` was edited from (the frame before it in a
    --consistent sequence), found through the files, as the pixels its upscale keeps. None when that
    frame or base is missing or changed since, or cannot lend them (frame_reuse)."""
    frame_path = parent_frame_path(base.record)
    if frame_path is None or not frame_path.is_file():
        return None
    parent = base.record.parent or {}
    try:
        old_base = read_previous_file(Path(str(parent["file"])), "")
        if hashlib.sha256(old_base.png).hexdigest() != parent.get("sha256"):
            return None  # the base was made again since: its frame is not the one it was edited from
        frame = read_previous_file(frame_path, "")  # the frame is decoded only once the base matches
    except PreviousPictureError:
        return None
    try:
        region = _region_beside(Path(str(base.origin["file"]))) if base.origin.get("file") else None
    except (OSError, ValueError):
        return None  # the region cannot be read: refine every tile
    return frame_reuse(
        frame, old_base.image, base.image,
        plan=plan, frame_layout=frame_layout, steps=steps, guidance=guidance, region=region,
    )  # fmt: skip


def base_to_frame(changed: np.ndarray, plan: UpscalePlan) -> np.ndarray:
    """The frame pixels whose enlargement reads any ``changed`` base pixel (bool, frame size)."""
    grown = dilate(changed, _ENLARGEMENT_REACH_PX)
    base = plan.base
    cols = _nearest(np.arange(plan.frame_width), base.rect.x, base.scale, base.width)
    rows = _nearest(np.arange(plan.frame_height), base.rect.y, base.scale, base.height)
    return grown[rows][:, cols]


def _nearest(frame_px: np.ndarray, start: float, scale: float, size: int) -> np.ndarray:
    """The base pixel each frame pixel's centre falls in (the enlargement's own mapping, sample_view)."""
    position = (frame_px + 0.5 - start) * scale
    return np.clip(np.floor(position).astype(np.int64), 0, size - 1)


def _same_framing(recorded: dict[str, Any], base: BasePlan) -> bool:
    rect = [base.rect.x, base.rect.y, base.rect.width, base.rect.height]
    return (
        recorded.get("size") == [base.width, base.height]
        and recorded.get("rect") == rect
        and (recorded.get("scale") == base.scale)
    )


def _feather(mask: np.ndarray, px: int) -> np.ndarray:
    """1 on ``mask``, 0 beyond ``px`` from it, a smooth ramp between (float32): a box filter of the mask
    grown by half the feather, so the ramp starts at the mask's edge. Counted in integers, so it is
    exactly 1 on the mask and exactly 0 where no grown pixel is in reach."""
    half = px // 2
    grown = dilate(mask, half).astype(np.int64)
    inside = _box_sum(_box_sum(grown, half, 0), half, 1)
    t = inside.astype(np.float32) / float((2 * half + 1) ** 2)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def _box_sum(values: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """The sum over a window of 2 radius + 1 along ``axis`` (the edges padded with zeros)."""
    if radius <= 0:
        return values
    padded = np.moveaxis(values, axis, 0)
    sums = np.cumsum(np.pad(padded, [(radius + 1, radius)] + [(0, 0)] * (padded.ndim - 1)), axis=0)
    return np.moveaxis(sums[2 * radius + 1 :] - sums[: -2 * radius - 1], 0, axis)
