"""Exact per-box masks, computed from the geometry: no render.

Two definitions, both exact (docs/oscr.md):

- The **amodal** mask is what the released checkpoint was trained with: the silhouette of the box as
  the OSCR draws it, i.e. grown by its wireframe edges, with conservative coverage: the reference
  renders each box alone (Workbench, 8x anti-aliasing through Blender's 1.5 px pixel filter) and keeps
  every pixel of alpha > 0, i.e. every pixel whose filter footprint the silhouette reaches. A box is
  convex, so its silhouette is the convex hull of its corners (clipped to the camera's range) projected
  to the image; a pixel's square footprint touches it exactly when the pixel's centre lies in the hull
  grown by the footprint. These masks give the token grids.
- The **visible** mask treats boxes as opaque solids: a pixel is in when the camera ray through its
  centre crosses the box inside the camera's clip range and no other box nearer. The **silhouette**
  (the same ray test without the occluders) is what visibility ratios and the depth order compare
  against. This agrees with Blender's own rasterisation at pixel centres and handles boxes partly
  outside the frame or partly behind the camera without special cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .geometry import BOX_EDGES, CameraModel, box_corners, box_rotation, convex_hull_2d
from .layout import Box, Layout
from .oscr_spec import SEETHROUGH3D_V1, OscrProfile
from .token_grid import GRID_SIZE, grid_to_strings, pool_to_token_grid

MASKS_FORMAT = "seethrough.masks"
MASKS_VERSION = 2  # 2: amodal masks grown by the wire with conservative coverage; silhouette_pixels


@dataclass
class MaskSet:
    """Masks of every box of a layout, at the layout's resolution."""

    amodal: np.ndarray  # bool, N x H x W: the box as the OSCR draws it, hidden parts included (module doc)
    silhouette: np.ndarray  # bool, N x H x W: the solid box at pixel centres, hidden parts included
    visible: np.ndarray  # bool, N x H x W: what the camera really sees of the solid box
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
        bounds = [_mask_bounds(mask) for mask in self.silhouette]
        for a in range(self.count):
            for b in range(a + 1, self.count):
                window = _intersect(bounds[a], bounds[b])
                if window is None:
                    continue
                overlap = self.silhouette[a][window] & self.silhouette[b][window]
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
            silhouette_px = int(self.silhouette[i].sum())
            visible_px = int(self.visible[i].sum())
            boxes.append(
                {
                    "index": i,
                    "description": box.description,
                    "amodal_mask": f"masks/amodal_{i:03d}.png",
                    "visible_mask": f"masks/visible_{i:03d}.png",
                    "amodal_pixels": amodal_px,
                    "silhouette_pixels": silhouette_px,
                    "visible_pixels": visible_px,
                    # Of the solid silhouette; a box outside the frame has nothing to see: ratio 0.
                    "visibility_ratio": round(visible_px / silhouette_px, 6) if silhouette_px else 0.0,
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


def compute_masks(layout: Layout, profile: OscrProfile = SEETHROUGH3D_V1) -> MaskSet:
    """Amodal masks as ``profile`` draws boxes; silhouettes and visible masks exact at pixel centres."""
    cam = CameraModel(layout.camera, layout.width, layout.height)
    rays_world = cam.pixel_rays() @ cam.rotation.T
    near, far = layout.camera.clip_start, layout.camera.clip_end

    n = len(layout.boxes)
    shape = (n, layout.height, layout.width)
    silhouette = np.zeros(shape, dtype=bool)
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
        silhouette[i][window] = hit
        entry[i][window] = depth
        closer = depth < nearest[window]
        nearest[window][closer] = depth[closer]
        nearest_box[window][closer] = i

    visible = nearest_box[None] == np.arange(n)[:, None, None]
    growth, reach = wire_growth(profile), profile.mask_filter_width_px / 2
    amodal = np.zeros(shape, dtype=bool)
    for i, box in enumerate(layout.boxes):
        amodal[i] = covered_pixels(cam, grown_box(box, growth), near, far, reach)
    return MaskSet(amodal=amodal, silhouette=silhouette, visible=visible & silhouette, entry_depth=entry)


def wire_growth(profile: OscrProfile) -> float:
    """How much larger than the box the OSCR draws it. The Wireframe modifier (offset 0, even thickness)
    moves each corner of the cube mesh half the thickness along its diagonal normal, so the wire's outer
    hull is the cube grown by thickness / (2 sqrt 3) per side (mesh units, scaled with the box; measured
    on Blender's evaluated mesh): 1 + 0.01 / (sqrt(3) x 0.5) = 1.0115 of the box's size."""
    return 1.0 + profile.edge_thickness / (math.sqrt(3.0) * profile.mesh_cube_size)


def grown_box(box: Box, factor: float) -> Box:
    return replace(box, size=tuple(extent * factor for extent in box.size))


def covered_pixels(cam: CameraModel, box: Box, near: float, far: float, reach_px: float) -> np.ndarray:
    """Pixels whose square footprint of half-width ``reach_px`` around the centre the box's silhouette
    touches (bool H x W): exact for a convex solid.

    The box clipped to the camera's range [near, far] is a convex polytope whose vertices are the
    corners inside the range and the points where edges cross its two planes; all lie in front of
    the camera, so their projections' convex hull is the box's silhouette. A square touches a convex
    polygon exactly when its centre lies in the polygon grown by the square (their Minkowski sum: the
    hull of the vertices moved by ``reach_px`` towards each of the square's corners).
    """
    covered = np.zeros((cam.height, cam.width), dtype=bool)
    points = _clipped_vertices(cam.world_to_camera(box_corners(box)), near, far)
    if not len(points):
        return covered
    pixels = cam.project(points)
    half = reach_px * np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    hull = convex_hull_2d((pixels[:, None, :] + half[None]).reshape(-1, 2))
    c0, r0 = np.maximum(np.floor(hull.min(axis=0)).astype(int), 0)
    c1 = min(int(np.ceil(hull[:, 0].max())), cam.width)
    r1 = min(int(np.ceil(hull[:, 1].max())), cam.height)
    if c0 >= c1 or r0 >= r1:
        return covered
    cols = np.arange(c0, c1) + 0.5
    rows = np.arange(r0, r1) + 0.5
    inside = np.ones((r1 - r0, c1 - c0), dtype=bool)
    for start, end in zip(hull, np.roll(hull, -1, axis=0), strict=True):
        edge = end - start
        # counter-clockwise hull: the inside is on the left of every edge (boundary included)
        inside &= edge[0] * (rows[:, None] - start[1]) - edge[1] * (cols[None, :] - start[0]) >= 0
    covered[r0:r1, c0:c1] = inside
    return covered


def _clipped_vertices(corners_cam: np.ndarray, near: float, far: float) -> np.ndarray:
    """Vertices of the box (camera-space corners) clipped to view depths [near, far]."""
    depth = -corners_cam[:, 2]
    points = [corners_cam[(depth >= near) & (depth <= far)]]
    for a, b in BOX_EDGES:
        for plane in (near, far):
            if (depth[a] - plane) * (depth[b] - plane) < 0:  # the edge crosses the plane
                t = (plane - depth[a]) / (depth[b] - depth[a])
                points.append((corners_cam[a] + t * (corners_cam[b] - corners_cam[a]))[None])
    return np.concatenate(points)


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
