"""Camera moves that keep the picture: the previous picture reprojected into the new camera (docs/edit.md).

A layout is a 3D scene in its own right: its boxes, the floor plane z = 0, and everything else (sky,
distant walls) at infinity. Its depth in a camera (:func:`layout_depth`) places every pixel of a
picture in 3D, so a picture made through one camera can be resampled into another
(:func:`reproject`: an inverse warp, bilinear). What that gets right:

- a rotation, or a change of focal length or lens shift, moves every pixel by one homography whatever
  its depth (:func:`rotation_homography`): exact;
- a move of the camera's position: floor and far pixels exact (the floor moves by its plane's
  homography, :func:`plane_homography`; the far background by the rotation's); a box's pixels are
  placed on the box's faces, which the generated object does not fill, so they are not trusted.

The region to regenerate is every pixel the warp cannot fill (outside the previous picture, or hidden
in it: a disocclusion) or should not trust (a box's amodal mask in the new camera), grown by a margin.
:func:`plan_camera_move` turns that into the edit of a frame; a move that leaves more than a limit of
the picture to regenerate is a full regeneration instead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .edit_input import MASK_INSIDE, EditInput
from .edit_region import (
    BoxChange,
    box_changes,
    changes_region,
    check_margin,
    dilate,
    full_regeneration_reason,
)
from .generation_settings import SettingError
from .geometry import CameraModel
from .layout import Layout
from .limits import DEFAULT_EDIT_STRENGTH, DEFAULT_REPROJECT_LIMIT
from .masks import MaskSet, compute_masks
from .oscr_spec import SEETHROUGH3D_V1, OscrProfile
from .resample import bilinear_taps

REPROJECTED = "reprojected"  # the `kind` of a record's parent made by reprojection
# What a pixel of a layout's depth sees.
FAR, FLOOR, BOX = 0, 1, 2
# Two surfaces meeting at a bilinear footprint may be mixed when their parallax in the new camera is
# below this (pixels): a rotation has none, so every pixel is filled exactly.
PARALLAX_TOLERANCE_PX = 0.5
# A pixel that maps onto the picture's outermost pixel centres (a move along the view axis keeps the
# far background in place) is inside, whatever the rounding of its coordinates.
_EDGE_TOLERANCE_PX = 1e-6


@dataclass(frozen=True)
class LayoutDepth:
    """What the camera sees of the layout at every pixel centre."""

    inverse_depth: np.ndarray  # float64 H x W: 1 / view depth (the distance along the view axis); 0: far
    surface: np.ndarray  # uint8 H x W: FAR, FLOOR or BOX

    @property
    def depth(self) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return 1.0 / self.inverse_depth


@dataclass(frozen=True)
class Reprojection:
    """A picture of one camera resampled into another, and what of it to regenerate."""

    image: np.ndarray  # uint8 H x W x 3 in the new camera; a pixel not seen holds the nearest seen one
    seen: np.ndarray  # bool H x W: filled from the previous picture (in its frame and not hidden in it)
    untrusted: np.ndarray  # bool H x W: a box's amodal mask: placed on the box's faces, not the object
    region: np.ndarray  # bool H x W: not seen or untrusted, grown by the margin: what regenerates
    # float64 H x W x 2: where each new pixel was sampled in the previous picture (x, y; a pixel
    # centre is its index), meaningful where ``seen``: a long shot's pixel_sources compose these
    source: np.ndarray

    @property
    def share(self) -> float:
        """The share of the picture to regenerate."""
        return float(self.region.mean())


def layout_depth(layout: Layout, masks: MaskSet | None = None) -> LayoutDepth:
    """The layout's depth in its camera: the nearest box face, else the floor z = 0, else far.

    ``masks``: the layout's compute_masks, if already at hand (their entry depths are the boxes')."""
    cam = CameraModel(layout.camera, layout.width, layout.height)
    rays = _times(cam.pixel_rays(), cam.rotation.T)  # world directions, scaled so t is the view depth
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = -cam.position[2] / rays[..., 2]
    floor = np.isfinite(t_floor) & (t_floor > 0)
    depth = np.where(floor, t_floor, np.inf)
    surface = np.where(floor, FLOOR, FAR).astype(np.uint8)
    if layout.boxes:
        masks = compute_masks(layout) if masks is None else masks
        box_depth = masks.entry_depth.min(axis=0).astype(np.float64)
        box = box_depth < depth
        depth = np.where(box, box_depth, depth)
        surface[box] = BOX
    with np.errstate(divide="ignore"):
        return LayoutDepth(1.0 / depth, surface)


def reproject(
    picture: np.ndarray,
    before: Layout,
    after: Layout,
    margin_px: int,
    profile: OscrProfile = SEETHROUGH3D_V1,
) -> Reprojection:
    """``picture`` (uint8 H x W x 3, made from ``before``) as ``after``'s camera sees it."""
    check_margin(margin_px)
    height, width = before.height, before.width
    if picture.shape != (height, width, 3) or picture.dtype != np.uint8:
        got = f"{picture.dtype} {list(picture.shape)}"
        raise ValueError(f"the picture must be uint8 [{height}, {width}, 3] (its layout's size), got {got}")
    old_cam = CameraModel(before.camera, width, height)
    new_cam = CameraModel(after.camera, after.width, after.height)
    new_masks = compute_masks(after, profile)
    new_depth = layout_depth(after, new_masks)
    old_depth = layout_depth(before)
    new_rays, x, y, old_scale = _inverse_warp(old_cam, new_cam, new_depth)
    tolerance = _EDGE_TOLERANCE_PX
    inside = (old_scale > 0) & (x >= -tolerance) & (x <= width - 1 + tolerance)
    inside &= (y >= -tolerance) & (y <= height - 1 + tolerance)
    x, y = np.clip(x, 0, width - 1), np.clip(y, 0, height - 1)

    image = np.zeros(new_rays.shape, dtype=np.float64)
    seen = inside.copy()
    # the point's inverse view depth in the old camera (0: far)
    with np.errstate(divide="ignore", invalid="ignore"):
        old_inverse = np.where(inside, new_depth.inverse_depth / old_scale, 0.0)
    old_rays = _times(old_cam.pixel_rays(), old_cam.rotation.T)
    # a point outside samples the first pixel alone (its value is not kept: it is not seen)
    for rows, cols, weight in bilinear_taps(np.where(inside, x, 0), np.where(inside, y, 0), width, height):
        image += weight[..., None] * picture[rows, cols]
        seen &= _same_point(
            old_depth, rows, cols, new_depth.surface, old_inverse, old_rays, old_cam.position, new_cam
        )
    reprojected = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    untrusted = new_masks.amodal.any(axis=0) if len(after.boxes) else np.zeros_like(seen)
    region = dilate(~seen | untrusted, margin_px)
    source = np.stack([x, y], axis=-1)
    return Reprojection(_fill_unseen(reprojected, seen), seen, untrusted, region, source)


def rotation_homography(before: CameraModel, after: CameraModel) -> np.ndarray:
    """The 3 x 3 matrix taking a pixel (column, row, 1) of ``after`` to its place in ``before`` for
    points at infinity: for every point when the cameras differ only in rotation, lens or shift."""
    return before.pixel_matrix() @ before.rotation.T @ after.rotation @ np.linalg.inv(after.pixel_matrix())


def plane_homography(
    before: CameraModel, after: CameraModel, normal: tuple[float, float, float], offset: float
) -> np.ndarray:
    """The 3 x 3 matrix taking a pixel of ``after`` that sees the plane ``normal . X = offset`` (world)
    to the same point's place in ``before`` (the floor: normal (0, 0, 1), offset 0)."""
    n = np.asarray(normal, dtype=np.float64)
    height = offset - n @ after.position  # signed distance of the new camera from the plane, along n
    shift = np.outer(after.position - before.position, n) / height
    transfer = before.rotation.T @ (np.eye(3) + shift) @ after.rotation
    return before.pixel_matrix() @ transfer @ np.linalg.inv(after.pixel_matrix())


# --- the planning hook: a camera move as the edit of a frame ------------------------------------------


@dataclass(frozen=True)
class CameraMove:
    """A new layout whose camera moved (boxes may have changed too), made from a previous picture."""

    reprojection: Reprojection
    boxes: list[BoxChange]  # boxes that changed as well; their region is added
    region: np.ndarray  # bool H x W: what regenerates
    limit: float  # the largest share of the picture a reprojected frame regenerates

    @property
    def share(self) -> float:
        return float(self.region.mean())

    @property
    def full_reason(self) -> str | None:
        """Why this move is a full regeneration after all (None: the reprojection carries it)."""
        if self.share <= self.limit:
            return None
        return (
            f"the camera moved too far to keep the picture: {self.share:.1%} of it would regenerate, "
            f"over the reprojection limit of {self.limit:.0%}"
        )

    @property
    def image(self) -> np.ndarray:
        """The previous picture in the new camera: every pixel outside the region is kept as it is."""
        return self.reprojection.image

    def mask(self) -> np.ndarray:
        return self.region.astype(np.uint8) * MASK_INSIDE

    def edit_of(self, strength: float = DEFAULT_EDIT_STRENGTH) -> EditInput | None:
        """The request's `edit` (None: the region is empty, the reprojected picture is the frame)."""
        return EditInput(self.image, self.mask(), strength) if self.region.any() else None

    def details(self, margin_px: int) -> dict[str, object]:
        """For the record's parent: how much was kept, and what else changed."""
        return {
            "kept": round(1.0 - self.share, 4),
            "margin_px": margin_px,
            "reproject_limit": self.limit,
            "changes": [c.describe() for c in self.boxes],
        }

    def summary(self) -> str:
        boxes = "; ".join(c.describe() for c in self.boxes)
        also = f", and {boxes}" if boxes else ""
        kept = 1.0 - self.share
        return f"camera moved{also}: {kept:.1%} of the picture reprojected, {self.share:.1%} regenerates"


def plan_camera_move(
    picture: np.ndarray,
    before: Layout,
    after: Layout,
    margin_px: int,
    limit: float = DEFAULT_REPROJECT_LIMIT,
    profile: OscrProfile = SEETHROUGH3D_V1,
) -> CameraMove | None:
    """``after`` made from ``picture`` (of ``before``) by reprojection; None when ``after`` is not a
    camera move of ``before`` (the camera is the same, or the resolution or scene prompt changed too)
    or the limit is 0 (reprojection off). Check ``full_reason`` of the result against the limit."""
    check_reproject_limit(limit)
    if limit == 0 or not is_camera_move(before, after):
        return None
    reprojection = reproject(picture, before, after, margin_px, profile)
    changes = box_changes(before, after)
    region = reprojection.region
    if changes:
        region = region | changes_region(before, after, changes, margin_px, profile)
    return CameraMove(reprojection, changes, region, float(limit))


def is_camera_move(before: Layout, after: Layout) -> bool:
    """The camera changed, and nothing else that concerns every pixel (resolution, scene prompt)."""
    return (
        full_regeneration_reason(before, after) is not None
        and full_regeneration_reason(before, replace(after, camera=before.camera)) is None
    )


def check_reproject_limit(limit: object) -> None:
    """Raises SettingError (field ``reproject-limit``) unless a share in [0, 1]."""
    if isinstance(limit, bool) or not isinstance(limit, int | float) or not 0.0 <= limit <= 1.0:
        raise SettingError(
            "reproject-limit",
            f"must be a share of the picture in 0..1 (0 turns reprojection off), got {limit!r}",
        )


# --- helpers ------------------------------------------------------------------------------------------


def source_positions(before: Layout, after: Layout, profile: OscrProfile = SEETHROUGH3D_V1) -> np.ndarray:
    """Where each pixel of ``after``'s camera samples the picture of ``before`` (``reproject``'s
    ``source``, the same numbers), without the picture, the occlusion test or the region: all a long
    shot's pixel sources need to replay a camera move."""
    old_cam = CameraModel(before.camera, before.width, before.height)
    new_cam = CameraModel(after.camera, after.width, after.height)
    _, x, y, _ = _inverse_warp(old_cam, new_cam, layout_depth(after, compute_masks(after, profile)))
    return np.stack([np.clip(x, 0, before.width - 1), np.clip(y, 0, before.height - 1)], axis=-1)


def _inverse_warp(
    old_cam: CameraModel, new_cam: CameraModel, new_depth: LayoutDepth
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where each new pixel's 3D point lies in the previous picture: the new camera's world rays, the
    point's x and y there (pixel indices, unclipped), and its depth scale there (positive: in front)."""
    new_rays = _times(new_cam.pixel_rays(), new_cam.rotation.T)
    source, old_scale = _pixels_in(old_cam, new_rays, new_depth.inverse_depth, new_cam.position)
    return new_rays, source[..., 0] - 0.5, source[..., 1] - 0.5, old_scale  # centres at index + 0.5


def _pixels_in(
    cam: CameraModel, directions: np.ndarray, inverse_depth: np.ndarray, origin: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in ``cam`` of the points ``origin + directions / inverse_depth`` (a direction
    alone where the inverse depth is 0: a point at infinity), and their view depth in ``cam`` divided
    by the ray parameter (positive: in front of ``cam``)."""
    # (point - cam.position) * inverse_depth keeps its direction and sign, and stays finite at infinity
    relative = directions + inverse_depth[..., None] * (origin - cam.position)
    homogeneous = _times(relative, cam.rotation @ cam.pixel_matrix().T)
    scale = homogeneous[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        pixels = homogeneous[..., :2] / scale[..., None]
    return pixels, scale


def _times(vectors: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``vectors @ matrix`` for an H x W x 3 array, written out: a matrix product of millions of
    3-vectors is slower through BLAS (its threads, its small-matrix path) than three multiply-adds."""
    return vectors[..., 0:1] * matrix[0] + vectors[..., 1:2] * matrix[1] + vectors[..., 2:3] * matrix[2]


def _same_point(
    old_depth: LayoutDepth,
    rows: np.ndarray,
    cols: np.ndarray,
    surface: np.ndarray,
    inverse: np.ndarray,
    old_rays: np.ndarray,
    old_origin: np.ndarray,
    new_cam: CameraModel,
) -> np.ndarray:
    """Whether the previous picture's pixel (rows, cols) shows what the new pixel shows: the same floor
    or far background, or a surface whose parallax against the new pixel's point is below tolerance
    (otherwise the new point was hidden there: a disocclusion)."""
    old_surface = old_depth.surface[rows, cols]
    same_surface = (old_surface == surface) & (surface != BOX)
    rays = old_rays[rows, cols]
    there, there_scale = _pixels_in(new_cam, rays, old_depth.inverse_depth[rows, cols], old_origin)
    expected, expected_scale = _pixels_in(new_cam, rays, inverse, old_origin)
    with np.errstate(invalid="ignore"):
        parallax = np.hypot(*(there - expected).transpose(2, 0, 1))
        close = (there_scale > 0) & (expected_scale > 0) & (parallax <= PARALLAX_TOLERANCE_PX)
    return same_surface | close


def _fill_unseen(image: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Pixels not seen take the nearest seen pixel of their row (of their column in rows with none), so
    an edit below strength 1 starts the region from plausible colours, not black."""
    if seen.all() or not seen.any():
        return image
    out = _nearest_along(image, seen, axis=1)
    rows_seen = seen.any(axis=1)
    if not rows_seen.all():
        out = _nearest_along(out, np.broadcast_to(rows_seen[:, None], seen.shape), axis=0)
    return out


def _nearest_along(image: np.ndarray, valid: np.ndarray, axis: int) -> np.ndarray:
    """Each pixel replaced by the nearest valid pixel along ``axis`` (unchanged where none is)."""
    length = valid.shape[axis]
    shape = [1, 1]
    shape[axis] = length
    index = np.broadcast_to(np.arange(length).reshape(shape), valid.shape)
    before = np.maximum.accumulate(np.where(valid, index, -1), axis=axis)
    after = np.flip(np.minimum.accumulate(np.flip(np.where(valid, index, length), axis), axis=axis), axis)
    pick_after = (before < 0) | ((after < length) & (after - index < index - before))
    nearest = np.where(pick_after, after, before)
    found = (nearest >= 0) & (nearest < length)
    nearest = np.clip(nearest, 0, length - 1)
    taken = np.take_along_axis(image, nearest[..., None], axis=axis)
    return np.where(found[..., None], taken, image)
