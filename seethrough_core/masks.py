"""Exact per-box masks by casting one ray through every pixel centre.

No render is needed: a box is a convex solid, so a pixel belongs to its amodal mask exactly when
the pixel's camera ray crosses the box inside the camera's clip range, and to its visible mask
when, in addition, no other box is crossed nearer to the camera (boxes as opaque solids). This
agrees with Blender's own rasterisation at pixel centres and handles boxes partly outside the
frame or partly behind the camera without special cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import CameraModel, box_corners, box_rotation
from .layout import Layout
from .token_grid import GRID_SIZE, grid_to_strings, pool_to_token_grid

MASKS_FORMAT = "seethrough.masks"
MASKS_VERSION = 1


@dataclass
class MaskSet:
    """Masks of every box of a layout, at the layout's resolution."""

    amodal: np.ndarray  # bool, N x H x W: the whole silhouette, hidden parts included
    visible: np.ndarray  # bool, N x H x W: what the camera really sees of the box
    entry_depth: np.ndarray  # float32, N x H x W: view depth where the ray enters the box (inf: miss)

    @property
    def count(self) -> int:
        return int(self.amodal.shape[0])

    def token_grids(self) -> np.ndarray:
        """Amodal masks max-pooled onto the condition-token grid, bool N x 32 x 32."""
        if self.count == 0:
            return np.zeros((0, GRID_SIZE, GRID_SIZE), dtype=bool)
        return np.stack([pool_to_token_grid(m) for m in self.amodal])

    def depth_order(self) -> list[dict[str, int | float]]:
        """For every pair of boxes whose silhouettes overlap, which one is in front.

        Decided over the overlapping pixels by the nearer entry depth; `front_fraction` says how
        clear-cut that is (1.0: in front everywhere they overlap; below 1 the boxes interpenetrate).
        """
        pairs: list[dict[str, int | float]] = []
        bounds = [_mask_bounds(mask) for mask in self.amodal]
        for a in range(self.count):
            for b in range(a + 1, self.count):
                window = _intersect(bounds[a], bounds[b])
                if window is None:
                    continue
                overlap = self.amodal[a][window] & self.amodal[b][window]
                pixels = int(overlap.sum())
                if not pixels:
                    continue
                depth_a = self.entry_depth[a][window][overlap]
                depth_b = self.entry_depth[b][window][overlap]
                a_nearer = int((depth_a < depth_b).sum())
                front, back = (a, b) if 2 * a_nearer >= pixels else (b, a)
                front_share = max(a_nearer, pixels - a_nearer) / pixels
                pairs.append(
                    {
                        "front": front,
                        "back": back,
                        "overlap_pixels": pixels,
                        "front_fraction": round(front_share, 4),
                    }
                )
        return pairs

    def report(self, layout: Layout) -> dict:
        """The content of masks.json (mask file names are fixed by their index)."""
        grids = self.token_grids()
        boxes = []
        for i, box in enumerate(layout.boxes):
            amodal_px = int(self.amodal[i].sum())
            visible_px = int(self.visible[i].sum())
            boxes.append(
                {
                    "index": i,
                    "description": box.description,
                    "amodal_mask": f"masks/amodal_{i:03d}.png",
                    "visible_mask": f"masks/visible_{i:03d}.png",
                    "amodal_pixels": amodal_px,
                    "visible_pixels": visible_px,
                    # A box outside the frame has nothing to see: ratio 0, not a division by zero.
                    "visibility_ratio": round(visible_px / amodal_px, 6) if amodal_px else 0.0,
                    "in_frame": amodal_px > 0,
                    "token_grid": grid_to_strings(grids[i]),
                }
            )
        return {
            "format": MASKS_FORMAT,
            "version": MASKS_VERSION,
            "width": layout.width,
            "height": layout.height,
            "grid_size": GRID_SIZE,
            "boxes": boxes,
            "depth_order": self.depth_order(),
        }


def compute_masks(layout: Layout) -> MaskSet:
    """Amodal and visible masks of every box, exact at pixel centres."""
    cam = CameraModel(layout.camera, layout.width, layout.height)
    rays_world = cam.pixel_rays() @ cam.rotation.T
    near, far = layout.camera.clip_start, layout.camera.clip_end

    n = len(layout.boxes)
    shape = (n, layout.height, layout.width)
    amodal = np.zeros(shape, dtype=bool)
    entry = np.full(shape, np.inf, dtype=np.float32)
    nearest = np.full(shape[1:], np.inf)
    nearest_box = np.full(shape[1:], -1, dtype=np.int64)

    for i, box in enumerate(layout.boxes):
        window = _screen_window(cam, box, near)
        if window is None:
            continue  # entirely outside the frame
        rays = rays_world[window]
        t_in, t_out = _ray_box_interval(cam.position, rays.reshape(-1, 3), box)
        # Clip to the camera's range: what lies before clip_start or beyond clip_end is not drawn.
        t_in = np.maximum(t_in, near)
        t_out = np.minimum(t_out, far)
        hit = (t_in <= t_out).reshape(rays.shape[:2])
        depth = np.where(hit, t_in.reshape(hit.shape), np.inf)
        amodal[i][window] = hit
        entry[i][window] = depth
        closer = depth < nearest[window]
        nearest[window][closer] = depth[closer]
        nearest_box[window][closer] = i

    visible = nearest_box[None] == np.arange(n)[:, None, None]
    return MaskSet(amodal=amodal, visible=visible & amodal, entry_depth=entry)


def _screen_window(cam: CameraModel, box, near: float) -> tuple[slice, slice] | None:
    """The pixels a box can cover: the bounds of its projected corners, or the whole frame when a
    corner is behind the near plane (its projection is then unbounded). None: nothing in frame.

    A box is convex, so its silhouette is the convex hull of its projected corners: no pixel
    outside these bounds can be hit, and ray casting only this window is still exact.
    """
    corners = cam.world_to_camera(box_corners(box))
    if (-corners[:, 2] < near).any():
        return slice(0, cam.height), slice(0, cam.width)
    pixels = cam.project(corners)
    # Pixel centres sit at index + 0.5; a one-pixel margin absorbs rounding at the bounds.
    c0 = max(int(np.floor(pixels[:, 0].min())) - 1, 0)
    c1 = min(int(np.ceil(pixels[:, 0].max())) + 1, cam.width)
    r0 = max(int(np.floor(pixels[:, 1].min())) - 1, 0)
    r1 = min(int(np.ceil(pixels[:, 1].max())) + 1, cam.height)
    if c0 >= c1 or r0 >= r1:
        return None
    return slice(r0, r1), slice(c0, c1)


def _ray_box_interval(origin: np.ndarray, rays: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit ray parameters of rays from one origin through an oriented box (slab test)."""
    rotation = box_rotation(box)
    half = np.asarray(box.size, dtype=np.float64) / 2.0
    origin_local = (origin - np.asarray(box.center, dtype=np.float64)) @ rotation
    rays_local = rays @ rotation
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / rays_local
        t_lo = (-half - origin_local) * inv
        t_hi = (half - origin_local) * inv
    t_near = np.minimum(t_lo, t_hi)
    t_far = np.maximum(t_lo, t_hi)
    # A ray parallel to a slab gives 0 * inf = nan when it grazes the face: fmax/fmin skip it.
    t_in = np.fmax(np.fmax(t_near[:, 0], t_near[:, 1]), t_near[:, 2])
    t_out = np.fmin(np.fmin(t_far[:, 0], t_far[:, 1]), t_far[:, 2])
    t_in = np.nan_to_num(t_in, nan=-np.inf)
    t_out = np.nan_to_num(t_out, nan=np.inf)
    return t_in, t_out


def _mask_bounds(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if not rows.size:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _intersect(a, b) -> tuple[slice, slice] | None:
    if a is None or b is None:
        return None
    r0, r1, c0, c1 = max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3])
    if r0 >= r1 or c0 >= c1:
        return None
    return slice(r0, r1), slice(c0, c1)
