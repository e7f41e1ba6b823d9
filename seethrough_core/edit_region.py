"""Where a layout change touches the picture: the region an edit regenerates (docs/edit.md).

The region of a change from an old to a new layout is the union of the amodal masks, in the old
and in the new layout, of every box that was added, removed, moved, resized, turned or re-described,
grown by a margin (a square of `margin_px` on every side) so the new object's surroundings (contact,
shadow) can adapt. A change of camera, resolution or scene prompt changes every pixel's meaning: that
is a full regeneration, not an edit.

Boxes of the two layouts are paired by name when every box of both has a unique name; otherwise
identical boxes pair first and the rest pair in order, so removing one box does not count the boxes
after it as changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .edit_input import MASK_INSIDE, EditInput
from .generation_settings import SettingError, is_int
from .layout import Box, Camera, Layout
from .limits import DEFAULT_EDIT_MARGIN_PX, DEFAULT_EDIT_STRENGTH, MAX_EDIT_MARGIN_PX
from .masks import compute_masks
from .oscr_spec import SEETHROUGH3D_V1, OscrProfile

# Layouts read back from a .blend carry float32 values: differences below these are no change.
_ABS_TOL = 1e-5
_REL_TOL = 1e-6


@dataclass(frozen=True)
class BoxChange:
    """One box that differs between the layouts."""

    kinds: tuple[str, ...]  # of "added", "removed", "moved", "resized", "turned", "re-described"
    old_index: int | None  # None: added
    new_index: int | None  # None: removed
    label: str  # the box's name, or its description

    def describe(self) -> str:
        return f"{self.label}: {', '.join(self.kinds)}"


@dataclass
class LayoutChange:
    """What changed from one layout to the next, and which pixels that may touch."""

    full_reason: str | None  # why the whole picture must be regenerated; None: a regional edit will do
    boxes: list[BoxChange]
    region: np.ndarray | None  # bool H x W (the new layout's size); None for a full regeneration

    @property
    def full(self) -> bool:
        return self.full_reason is not None

    @property
    def unchanged(self) -> bool:
        """Nothing to regenerate: no box changed, or none of the changes reaches the frame."""
        return not self.full and (self.region is None or not self.region.any())

    def edit_of(self, previous: np.ndarray, strength: float = DEFAULT_EDIT_STRENGTH) -> EditInput | None:
        """The `edit` of a request that applies this change to the picture ``previous`` (None: a full
        regeneration, which has no previous picture to keep)."""
        return None if self.full else EditInput(previous, self.mask(), strength)

    def summary(self) -> str:
        """One line for people: what changed and how much of the picture that touches."""
        if self.full:
            return f"full regeneration: {self.full_reason}"
        if not self.boxes:
            return "nothing changed"
        share = float(self.region.mean()) if self.region is not None else 0.0
        changes = "; ".join(c.describe() for c in self.boxes)
        return f"{changes} ({share:.1%} of the picture may change)"

    def mask(self) -> np.ndarray:
        """The region as an edit mask: uint8 H x W, 255 where the picture may change."""
        if self.region is None:
            raise ValueError(f"a full regeneration has no region ({self.full_reason})")
        return self.region.astype(np.uint8) * MASK_INSIDE


def layout_change(
    old: Layout,
    new: Layout,
    margin_px: int = DEFAULT_EDIT_MARGIN_PX,
    profile: OscrProfile = SEETHROUGH3D_V1,
) -> LayoutChange:
    """The change from ``old`` to ``new``: a full regeneration, or the boxes that changed and their region."""
    check_margin(margin_px)
    reason = full_regeneration_reason(old, new)
    if reason is not None:
        return LayoutChange(reason, [], None)
    changes = box_changes(old, new)
    return LayoutChange(None, changes, changes_region(old, new, changes, margin_px, profile))


def changes_region(
    old: Layout,
    new: Layout,
    changes: list[BoxChange],
    margin_px: int = DEFAULT_EDIT_MARGIN_PX,
    profile: OscrProfile = SEETHROUGH3D_V1,
) -> np.ndarray:
    """The region of ``changes`` in ``new``'s picture (bool H x W): the changed boxes' amodal masks
    where they were and where they are, both seen through the new layout's camera, grown by the margin."""
    old_boxes = [old.boxes[c.old_index] for c in changes if c.old_index is not None]
    new_boxes = [new.boxes[c.new_index] for c in changes if c.new_index is not None]
    old_seen_now = replace(old, camera=new.camera, resolution=new.resolution)
    region = _amodal_union(old_seen_now, old_boxes, profile) | _amodal_union(new, new_boxes, profile)
    return dilate(region, margin_px)


def box_region(
    layout: Layout,
    index: int,
    margin_px: int = DEFAULT_EDIT_MARGIN_PX,
    profile: OscrProfile = SEETHROUGH3D_V1,
) -> np.ndarray:
    """One box's amodal mask grown by the margin (bool H x W): the region of "vary this box"."""
    check_margin(margin_px)
    if not 0 <= index < len(layout.boxes):
        raise IndexError(f"box {index} of a layout with {len(layout.boxes)} boxes")
    return dilate(_amodal_union(layout, [layout.boxes[index]], profile), margin_px)


def full_regeneration_reason(old: Layout, new: Layout) -> str | None:
    """Why ``new`` cannot be an edit of a picture of ``old`` (None: it can)."""
    if old.resolution != new.resolution:
        return (
            f"the resolution changed ({old.width}x{old.height} -> {new.width}x{new.height}): "
            "no pixel of the previous picture fits"
        )
    if not _same_camera(old.camera, new.camera):
        return "the camera changed: every pixel sees something else"
    if old.scene_prompt != new.scene_prompt:
        return "the scene prompt changed: it describes the whole picture"
    return None


def box_changes(old: Layout, new: Layout) -> list[BoxChange]:
    """Every box added, removed, moved, resized, turned or re-described, old boxes first."""
    pairs, added, removed = _pair_boxes(old.boxes, new.boxes)
    changes = [BoxChange(("removed",), i, None, _label(old.boxes[i])) for i in removed]
    for i, j in pairs:
        kinds = _differences(old.boxes[i], new.boxes[j])
        if kinds:
            changes.append(BoxChange(kinds, i, j, _label(new.boxes[j])))
    changes += [BoxChange(("added",), None, j, _label(new.boxes[j])) for j in added]
    return changes


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """Grow a bool mask by ``px`` pixels in every direction (a square window of side 2 px + 1)."""
    grown = np.asarray(mask, dtype=bool)
    for axis in (0, 1):
        grown = _any_within(grown, px, axis)
    return grown


def pool_cells(mask: np.ndarray, cell_px: int) -> np.ndarray:
    """A bool H x W mask on a grid of ``cell_px`` squares: a cell is set when any pixel in it is, so the
    cells cover the mask (H and W must be multiples of ``cell_px``)."""
    height, width = mask.shape
    if height % cell_px or width % cell_px:
        raise ValueError(f"{width}x{height} is not a whole number of {cell_px} px cells")
    cells = np.asarray(mask, dtype=bool).reshape(height // cell_px, cell_px, width // cell_px, cell_px)
    return cells.any(axis=(1, 3))


# --- helpers ------------------------------------------------------------------------------------------


def check_margin(margin_px: object) -> None:
    """Raises SettingError (field ``margin``) unless a whole number of pixels in 0..MAX_EDIT_MARGIN_PX."""
    if not is_int(margin_px) or not 0 <= margin_px <= MAX_EDIT_MARGIN_PX:
        raise SettingError(
            "margin", f"must be a whole number of pixels in 0..{MAX_EDIT_MARGIN_PX}, got {margin_px!r}"
        )


def _amodal_union(layout: Layout, boxes: list[Box], profile: OscrProfile) -> np.ndarray:
    if not boxes:
        return np.zeros((layout.height, layout.width), dtype=bool)
    # Amodal masks do not depend on the other boxes: compute only these.
    return compute_masks(replace(layout, boxes=tuple(boxes)), profile).amodal.any(axis=0)


def _any_within(mask: np.ndarray, px: int, axis: int) -> np.ndarray:
    """Along ``axis``: True where any True lies within ``px`` (a running count over cumulative sums)."""
    if px <= 0:
        return mask.copy()
    length = mask.shape[axis]
    counts = np.concatenate(
        [
            np.zeros_like(np.take(mask, [0], axis=axis), dtype=np.int32),
            np.cumsum(mask, axis=axis, dtype=np.int32),
        ],
        axis=axis,
    )
    index = np.arange(length)
    upper = np.take(counts, np.minimum(index + px + 1, length), axis=axis)
    lower = np.take(counts, np.maximum(index - px, 0), axis=axis)
    return upper > lower


def _pair_boxes(
    old: tuple[Box, ...], new: tuple[Box, ...]
) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """(old, new) index pairs, new indices added, old indices removed."""
    names_old, names_new = [b.name for b in old], [b.name for b in new]
    if all(names_old + names_new) and len(set(names_old)) == len(old) and len(set(names_new)) == len(new):
        where = {name: i for i, name in enumerate(names_old)}
        pairs = [(where[name], j) for j, name in enumerate(names_new) if name in where]
        added = [j for j, name in enumerate(names_new) if name not in where]
        removed = [i for i, name in enumerate(names_old) if name not in set(names_new)]
        return pairs, added, removed
    free_old = list(range(len(old)))
    pairs: list[tuple[int, int]] = []
    unmatched_new: list[int] = []
    for j, box in enumerate(new):
        same = next((i for i in free_old if not _differences(old[i], box)), None)
        if same is None:
            unmatched_new.append(j)
        else:
            free_old.remove(same)
            pairs.append((same, j))
    # What is left pairs in order: a moved box is the same box as before, not a removal and an addition.
    pairs += list(zip(free_old, unmatched_new, strict=False))
    added = unmatched_new[len(free_old) :]
    removed = free_old[len(unmatched_new) :]
    return sorted(pairs), added, removed


def _differences(a: Box, b: Box) -> tuple[str, ...]:
    kinds = []
    if not _close(a.center, b.center):
        kinds.append("moved")
    if not _close(a.size, b.size):
        kinds.append("resized")
    if not _close(a.rotation_euler_deg, b.rotation_euler_deg):
        kinds.append("turned")
    if a.description != b.description:
        kinds.append("re-described")
    return tuple(kinds)


def _same_camera(a: Camera, b: Camera) -> bool:
    """The same view: every number alike (the name is only a label)."""
    numbers = ("lens_mm", "sensor_width_mm", "shift_x", "shift_y", "clip_start", "clip_end")
    return (
        _close(a.location, b.location)
        and _close(a.rotation_euler_deg, b.rotation_euler_deg)
        and _close(tuple(getattr(a, n) for n in numbers), tuple(getattr(b, n) for n in numbers))
    )


def _close(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(math.isclose(x, y, rel_tol=_REL_TOL, abs_tol=_ABS_TOL) for x, y in zip(a, b, strict=True))


def _label(box: Box) -> str:
    return box.name or box.description
