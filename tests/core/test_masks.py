"""Masks against independent references: the projected box corners, and supersampling.

The silhouette reference projects the box's corners (after clipping the box at the camera's near
plane, so boxes partly behind the camera work too), takes their convex hull and fills it at pixel
centres. A box is convex, so that hull is exactly its silhouette. The amodal masks (the box grown by
its wire, every pixel whose 1.5 px filter footprint it reaches) are checked against the silhouette of
the grown box ray-cast at 4x the resolution and gathered over each footprint; Blender's own renders
of the reference's masks are in tests/blender/test_reference_conventions.py.
"""

import copy
import random
from dataclasses import replace

import numpy as np
import pytest

from seethrough_core.geometry import BOX_EDGES, CameraModel, box_corners
from seethrough_core.layout import Layout
from seethrough_core.masks import compute_masks, wire_growth
from seethrough_core.oscr_spec import SEETHROUGH3D_V1
from seethrough_core.token_grid import cell_bounds, pool_to_token_grid


def _hull(points):
    pts = sorted(set(map(tuple, np.round(points, 9))))
    if len(pts) < 3:
        return pts

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def projected_silhouette(layout: Layout, index: int) -> np.ndarray:
    cam = CameraModel(layout.camera, layout.width, layout.height)
    corners = cam.world_to_camera(box_corners(layout.boxes[index]))
    near = layout.camera.clip_start
    inside = -corners[:, 2] >= near
    points = [c for c, ok in zip(corners, inside, strict=True) if ok]
    for a, b in BOX_EDGES:  # where an edge crosses the near plane, add the crossing point
        if inside[a] != inside[b]:
            za, zb = -corners[a, 2], -corners[b, 2]
            t = (near - za) / (zb - za)
            points.append(corners[a] + t * (corners[b] - corners[a]))
    mask = np.zeros((layout.height, layout.width), dtype=bool)
    if len(points) < 3:
        return mask
    hull = _hull(cam.project(np.array(points)))
    if len(hull) < 3:
        return mask
    cols, rows = np.meshgrid(np.arange(layout.width) + 0.5, np.arange(layout.height) + 0.5)
    mask[:] = True
    for (x0, y0), (x1, y1) in zip(hull, hull[1:] + hull[:1], strict=True):
        mask &= (x1 - x0) * (rows - y0) - (y1 - y0) * (cols - x0) >= 0
    return mask


def iou(a, b):
    union = (a | b).sum()
    return (a & b).sum() / union if union else 1.0


def _random_layout(rng: random.Random, layout_dict, resolution):
    data = copy.deepcopy(layout_dict)
    data["resolution"] = resolution
    data["camera"]["lens_mm"] = rng.choice([24.0, 35.0, 50.0, 85.0])
    data["camera"]["shift_x"] = rng.uniform(-0.2, 0.2)
    data["camera"]["shift_y"] = rng.uniform(-0.2, 0.2)
    data["boxes"] = [
        {
            "description": "thing",
            # From well behind the camera (x > 0) to far in front of it.
            "center": [rng.uniform(-14.0, 0.5), rng.uniform(-4.0, 4.0), rng.uniform(0.0, 3.5)],
            "size": [rng.uniform(0.3, 4.0), rng.uniform(0.3, 4.0), rng.uniform(0.3, 4.0)],
            "rotation_euler_deg": [rng.uniform(-40, 40), rng.uniform(-40, 40), rng.uniform(-180, 180)],
        }
    ]
    return Layout.from_dict(data)


def test_masks_match_the_exact_projection_of_the_corners(layout_dict):
    rng = random.Random(1234)
    checked = partly_outside = partly_behind = 0
    while checked < 40:
        resolution = rng.choice([[512, 512], [512, 384], [384, 512]])
        layout = _random_layout(rng, layout_dict, resolution)
        reference = projected_silhouette(layout, 0)
        if reference.mean() < 0.01:
            continue  # the bar is set for boxes covering at least 1% of the image
        masks = compute_masks(layout)
        assert iou(masks.silhouette[0], reference) >= 0.98, layout.boxes[0]
        assert (masks.amodal[0] >= masks.silhouette[0]).all()  # the drawn box holds the solid one
        checked += 1
        cam = CameraModel(layout.camera, layout.width, layout.height)
        depth = -cam.world_to_camera(box_corners(layout.boxes[0]))[:, 2]
        partly_behind += bool((depth < layout.camera.clip_start).any())
        edge = reference[0].any() or reference[-1].any() or reference[:, 0].any() or reference[:, -1].any()
        partly_outside += bool(edge)
    # The random draw covers the hard cases, not only boxes well inside the frame.
    assert partly_outside >= 5
    assert partly_behind >= 2


def footprint_supersampled(layout: Layout, index: int, factor: int = 4) -> np.ndarray:
    """The amodal mask by brute force: the grown box's silhouette at ``factor`` x the resolution, a pixel
    in when any fine sample within its filter footprint (|offset| <= 0.75 px on both axes) is in."""
    box = layout.boxes[index]
    grown = replace(box, size=tuple(extent * wire_growth(SEETHROUGH3D_V1) for extent in box.size))
    fine = replace(layout, boxes=[grown], resolution=(layout.width * factor, layout.height * factor))
    hits = compute_masks(fine).silhouette[0]
    # fine samples beyond the pixel on each side: the outermost one inside sits (factor - 1) / 2 fine
    # pixels from the centre, each further one a fine pixel more
    reach = int(SEETHROUGH3D_V1.mask_filter_width_px / 2 * factor - (factor - 1) / 2)
    span = factor + 2 * reach
    padded = np.pad(hits, ((reach, span), (reach, span)))
    height, width = layout.height, layout.width
    rows = np.any([padded[k : k + factor * height : factor] for k in range(span)], axis=0)
    return np.any([rows[:, k : k + factor * width : factor] for k in range(span)], axis=0)


def test_amodal_masks_are_every_pixel_the_grown_box_reaches(layout_dict):
    rng = random.Random(99)
    checked = 0
    while checked < 6:
        layout = _random_layout(rng, layout_dict, [320, 256])
        masks = compute_masks(layout)
        if masks.silhouette[0].mean() < 0.02:
            continue
        brute = footprint_supersampled(layout, 0)
        assert (brute <= masks.amodal[0]).all()  # every sample that hits is inside the footprint: exact
        assert iou(brute, masks.amodal[0]) >= 0.98  # ... and the samples miss only slivers near its rim
        checked += 1


def test_box_behind_another_is_partly_hidden_and_ordered(layout_dict):
    layout_dict["boxes"] = [
        {"description": "far", "center": [-9.0, 0.0, 1.0], "size": [2.0, 2.0, 2.0]},
        {"description": "near", "center": [-5.0, 0.0, 2.0], "size": [1.0, 1.0, 1.0]},
    ]
    layout = Layout.from_dict(layout_dict)
    masks = compute_masks(layout)
    report = masks.report(layout)
    far, near = report["boxes"]
    assert far["visible_pixels"] < far["amodal_pixels"]
    assert 0.0 < far["visibility_ratio"] < 1.0
    assert near["visible_pixels"] == near["silhouette_pixels"] < near["amodal_pixels"]
    assert near["visibility_ratio"] == 1.0
    assert report["depth_order"] == [
        {
            "front": 1,
            "back": 0,
            "overlap_pixels": int((masks.silhouette[0] & masks.silhouette[1]).sum()),
            "front_fraction": 1.0,
        }
    ]
    # Visible masks never overlap and are inside the silhouettes, which are inside the amodal masks.
    assert not (masks.visible[0] & masks.visible[1]).any()
    assert (masks.visible <= masks.silhouette).all() and (masks.silhouette <= masks.amodal).all()


@pytest.mark.parametrize("center", [[-6.0, 30.0, 1.0], [20.0, 0.0, 1.0], [-6.0, 0.0, 80.0]])
def test_box_outside_the_frame_has_empty_masks(layout_dict, center):
    layout_dict["boxes"].append({"description": "lost", "center": center, "size": [1.0, 1.0, 1.0]})
    layout = Layout.from_dict(layout_dict)
    masks = compute_masks(layout)
    report = masks.report(layout)
    lost = report["boxes"][1]
    assert lost["amodal_pixels"] == lost["visible_pixels"] == 0
    assert lost["visibility_ratio"] == 0.0
    assert lost["in_frame"] is False
    assert not masks.token_grids()[1].any()
    assert report["boxes"][0]["amodal_pixels"] > 0


def test_camera_inside_a_box_sees_it_everywhere(layout_dict):
    layout_dict["boxes"] = [{"description": "room", "center": [-0.8, 0.0, 3.0], "size": [4.0, 4.0, 4.0]}]
    masks = compute_masks(Layout.from_dict(layout_dict))
    assert masks.amodal[0].all() and masks.visible[0].all()


def test_token_grid_pools_any_pixel_into_its_cell():
    mask = np.zeros((512, 512), dtype=np.uint8)
    mask[17, 300] = 255  # one pixel: row cell 17 // 16 = 1, column cell 300 // 16 = 18
    grid = pool_to_token_grid(mask)
    assert grid.shape == (32, 32)
    assert grid.sum() == 1 and grid[1, 18]
    # 128 of 255 is not inside: the checkpoint binarised with > 128.
    mask[17, 300] = 128
    assert not pool_to_token_grid(mask).any()


def test_token_grid_of_a_non_divisible_size_covers_every_pixel():
    rng = np.random.default_rng(0)
    mask = rng.random((400, 784)) > 0.999
    grid = pool_to_token_grid(mask)
    rows, cols = cell_bounds(400), cell_bounds(784)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            assert grid[i, j] == mask[r0:r1, c0:c1].any()
    assert rows[0][0] == 0 and rows[-1][1] == 400 and cols[-1][1] == 784
