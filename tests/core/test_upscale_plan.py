"""The geometry of a frame at any size: base size and framing, tile grid, tile cameras, seeds, blending."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seethrough_core.generation_settings import SettingError
from seethrough_core.geometry import CameraModel, FrameRect
from seethrough_core.layout import Layout
from seethrough_core.limits import MAX_SIDE, MEGAPIXEL, MIN_SIDE, SIDE_MULTIPLE
from seethrough_core.masks import compute_masks
from seethrough_core.oscr_spec import light_positions
from seethrough_core.png import encode_png
from seethrough_core.record import GenerationRecord
from seethrough_core.resample import sample_view
from seethrough_core.upscale_plan import (
    TileBlend,
    ViewCondition,
    axis_weights,
    base_layout,
    frame_layout_at,
    plan_upscale,
    tile_layout,
    tile_window,
)
from seethrough_core.upscale_run import Upscale, tile_request, tile_start

FRAMES = [(1920, 1080), (2048, 858), (1080, 1920), (3840, 2160), (7680, 4320)]


def _covered(starts, tile, length) -> np.ndarray:
    covered = np.zeros(length, dtype=bool)
    for s in starts:
        covered[max(s, 0) : min(s + tile, length)] = True
    return covered


@pytest.mark.parametrize("frame", FRAMES)
def test_plan_reaches_the_requested_frame(frame):
    width, height = frame
    plan = plan_upscale(width, height, seed=7)
    base = plan.base
    # the base: sides the model takes, near one megapixel, one scale on both axes covering the frame
    for side in (base.width, base.height):
        assert side % SIDE_MULTIPLE == 0 and MIN_SIDE <= side <= MAX_SIDE
    assert 0.85 <= base.width * base.height / MEGAPIXEL <= 1.2
    assert base.rect.width * base.scale == pytest.approx(base.width)
    assert base.rect.height * base.scale == pytest.approx(base.height)
    assert base.rect.x <= 0 and base.rect.y <= 0
    assert base.rect.x + base.rect.width >= width and base.rect.y + base.rect.height >= height
    # centred: the same margin on both sides, under 16 base px in all
    assert base.rect.x == pytest.approx(-(base.rect.width - width) / 2)
    assert (base.rect.width - width) * base.scale < SIDE_MULTIPLE
    assert (base.rect.height - height) * base.scale < SIDE_MULTIPLE
    # the tiles: model sizes, covering every pixel, neighbours overlapping by at least the overlap
    assert plan.needs_tiles
    for side, starts, length in (
        (plan.tile_width, plan.col_starts, width),
        (plan.tile_height, plan.row_starts, height),
    ):
        assert side % SIDE_MULTIPLE == 0 and MIN_SIDE <= side <= MAX_SIDE
        assert _covered(starts, side, length).all()
        assert all(b - a <= side - plan.overlap for a, b in zip(starts, starts[1:], strict=False))
        assert starts[0] <= 0 and starts[-1] + side >= length
    assert len(plan.tiles) == len(plan.col_starts) * len(plan.row_starts)
    # weights sum to 1 at every pixel of each axis, so the blend is the frame's size exactly
    for starts, side, length in (
        (plan.col_starts, plan.tile_width, width),
        (plan.row_starts, plan.tile_height, height),
    ):
        np.testing.assert_allclose(np.sum(axis_weights(starts, side, length), axis=0), 1.0, atol=1e-12)
    windows = [tile_window(plan, t) for t in plan.tiles]
    assert max(r.stop for r, _, _, _ in windows) == height
    assert max(c.stop for _, c, _, _ in windows) == width


def test_8k_tiles_keep_the_size_of_1080p_tiles():
    """What one job holds does not grow with the frame: the same tile for 1080p and 8K, more of them."""
    small, large = plan_upscale(1920, 1080, seed=1), plan_upscale(7680, 4320, seed=1)
    assert (large.tile_width, large.tile_height) == (small.tile_width, small.tile_height) == (1024, 1024)
    assert (large.base.width, large.base.height) == (small.base.width, small.base.height)
    assert len(large.tiles) > 4 * len(small.tiles)


def test_a_frame_the_model_takes_needs_no_upscale():
    plan = plan_upscale(1024, 768, seed=3)
    assert (plan.base.width, plan.base.height, plan.base.scale) == (1024, 768, 1.0)
    assert not plan.needs_tiles and plan.tiles == ()


def test_a_small_frame_of_any_size_is_the_base_made_smaller():
    plan = plan_upscale(500, 281, seed=3)
    assert plan.base.scale > 1 and not plan.needs_tiles
    assert plan.base.width % 16 == 0 and plan.base.height % 16 == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"frame_width": 8193, "frame_height": 1080}, "width"),
        ({"frame_width": 1920, "frame_height": 9000}, "height"),
        ({"frame_width": 1920.0, "frame_height": 1080}, "width"),
        ({"base_megapixels": 5.0}, "base_megapixels"),
        ({"base_megapixels": 0.01}, "base_megapixels"),
        ({"strength": 0.0}, "strength"),
        ({"strength": 1.5}, "strength"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_settings_name_their_field(kwargs, field):
    args = {"frame_width": 1920, "frame_height": 1080, "seed": 1} | kwargs
    width, height = args.pop("frame_width"), args.pop("frame_height")
    with pytest.raises(SettingError) as caught:
        plan_upscale(width, height, **args)
    assert caught.value.field == field


def test_tile_seeds_derive_from_the_request_seed():
    seeds = [t.seed for t in plan_upscale(1920, 1080, seed=42).tiles]
    assert seeds == [t.seed for t in plan_upscale(1920, 1080, seed=42).tiles]
    assert len(set(seeds)) == len(seeds)
    assert seeds != [t.seed for t in plan_upscale(1920, 1080, seed=43).tiles]


def _frame(layout_dict, size) -> Layout:
    layout_dict["boxes"].append(
        {
            "description": "a bench",
            "center": [-4.5, 1.6, 0.4],
            "size": [1.6, 0.6, 0.8],
            "rotation_euler_deg": [0, 0, 0],
        }
    )
    layout_dict["camera"]["shift_x"] = 0.07
    layout_dict["camera"]["shift_y"] = -0.04
    return frame_layout_at(Layout.from_dict(layout_dict), size)


def _project(layout: Layout, points: np.ndarray) -> np.ndarray:
    cam = CameraModel(layout.camera, layout.width, layout.height)
    return cam.project(cam.world_to_camera(points))


@pytest.mark.parametrize("size", [(384, 216), (216, 384), (1920, 1080)])
def test_every_view_is_the_frame_cameras_view_cropped(layout_dict, size):
    """Any world point lands in a tile (and in the base) exactly where the frame puts it, moved by the
    tile's corner (and scaled by the base's scale): the views share every ray of the frame camera."""
    frame = _frame(layout_dict, size)
    plan = plan_upscale(*size, seed=1, base_megapixels=0.0625)
    points = np.random.default_rng(0).uniform([-8, -3, 0], [-3, 3, 2], size=(200, 3))
    in_frame = _project(frame, points)
    for tile in plan.tiles:
        np.testing.assert_allclose(
            _project(tile_layout(frame, plan, tile), points), in_frame - [tile.x, tile.y], atol=1e-6
        )
    base = plan.base
    expected = (in_frame - [base.rect.x, base.rect.y]) * base.scale
    np.testing.assert_allclose(_project(base_layout(frame, plan), points), expected, atol=1e-6)


def test_tile_masks_are_the_frames_masks_cropped(layout_dict):
    frame = _frame(layout_dict, (384, 216))
    plan = plan_upscale(384, 216, seed=1, base_megapixels=0.0625)
    assert len(plan.tiles) == 2 and plan.tile_height > 216  # a tile reaching past the short side
    full = compute_masks(frame)
    for tile in plan.tiles:
        layout = tile_layout(frame, plan, tile)
        assert light_positions(layout) == light_positions(frame)  # the frame's own lights
        assert Layout.from_dict(layout.to_dict()) == layout  # a view's layout is a valid layout file
        masks = compute_masks(layout)
        rows, cols, tile_rows, tile_cols = tile_window(plan, tile)
        for name in ("amodal", "visible"):
            crop, own = getattr(full, name)[:, rows, cols], getattr(masks, name)[:, tile_rows, tile_cols]
            assert crop.any()
            # pixel centres on a box's edge may fall either way by float rounding: at most one in 10^4
            assert np.count_nonzero(crop != own) <= crop[0].size // 10_000


def test_bicubic_view_keeps_a_linear_picture_exact():
    """Resampling reproduces a linear ramp at the mapped coordinates: the framing is exact."""
    plan = plan_upscale(1920, 1080, seed=1)
    base = plan.base
    yy, xx = np.mgrid[0 : base.height, 0 : base.width]
    ramp = np.stack([xx * 0.1 + 20, yy * 0.2 + 10, xx * 0.05 + yy * 0.05], axis=-1)
    tile = plan.tiles[len(plan.tiles) // 2]  # inside the frame: no edge clamping
    out = sample_view(ramp.astype(np.uint8), base.rect, base.scale, tile.x, tile.y, tile.width, tile.height)
    fy, fx = np.mgrid[tile.y : tile.y + tile.height, tile.x : tile.x + tile.width]
    bx = (fx + 0.5 - base.rect.x) * base.scale - 0.5
    by = (fy + 0.5 - base.rect.y) * base.scale - 0.5
    expected = np.stack([bx * 0.1 + 20, by * 0.2 + 10, bx * 0.05 + by * 0.05], axis=-1)
    # the source was rounded to uint8 (0.5) and so is the result (0.5); bicubic overshoot at those steps
    assert np.abs(out - expected).max() <= 1.2


def test_resampling_at_scale_one_returns_the_picture():
    image = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    out = sample_view(image, FrameRect(0, 0, 60, 40), 1.0, 0, 0, 60, 40)
    np.testing.assert_array_equal(out, image)


def _seam_steps(image: np.ndarray, seams_x: list[int]) -> tuple[float, float]:
    """The largest step across the seam columns, and the 99.9th percentile of steps elsewhere."""
    steps = np.abs(np.diff(image.astype(np.float64), axis=1)).max(axis=2)  # step between x-1 and x
    at_seams = np.zeros(steps.shape[1], dtype=bool)
    for x in seams_x:
        at_seams[x - 1] = True
    return steps[:, at_seams].max(), np.percentile(steps[:, ~at_seams], 99.9)


@pytest.mark.parametrize("blend", [True, False])
def test_overlaps_blend_without_a_seam(blend):
    """Tiles that disagree (each brighter or darker by up to 24 levels, as img2img tiles can) leave no
    step at a seam larger than the picture's own steps elsewhere; with blending off they do."""
    plan = plan_upscale(1280, 512, seed=1, base_megapixels=0.25)
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0 : plan.frame_height, 0 : plan.frame_width]
    scene = 120 + 60 * np.sin(xx / 90.0) * np.cos(yy / 70.0)  # the picture all tiles show
    blender = TileBlend(plan, blend=blend)
    for tile in plan.tiles:
        offset = rng.uniform(-24, 24)
        ty, tx = np.mgrid[tile.y : tile.y + tile.height, tile.x : tile.x + tile.width]
        own = 120 + 60 * np.sin(tx / 90.0) * np.cos(ty / 70.0) + offset
        blender.add(tile, np.repeat(np.clip(own, 0, 255)[..., None], 3, axis=2).astype(np.uint8))
    image = blender.result()
    assert image.shape == (plan.frame_height, plan.frame_width, 3)
    assert np.abs(image[..., 0] - scene).mean() < 30  # it is the scene
    # where hard seams would be: the middles of the overlaps
    seams = [
        round((b + plan.tile_width / 2 + a + plan.tile_width / 2) / 2)
        for a, b in zip(plan.col_starts, plan.col_starts[1:], strict=False)
    ]
    worst_seam, elsewhere = _seam_steps(image, seams)
    assert (worst_seam <= elsewhere + 1) == blend, (worst_seam, elsewhere)


def test_a_tiles_prompt_holds_exactly_the_boxes_that_reach_into_it(layout_dict):
    """Tile jobs name only the boxes whose amodal mask meets the tile (inside the frame), in box order,
    with those boxes' token grids; the start image is the enlarged base over the tile, the whole tile
    may change (img2img at the plan's strength)."""
    layout_dict["boxes"].append(  # beside the camera: out of the frame
        {"description": "a lamp post", "center": [-0.8, -4.0, 1.0], "size": [0.2, 0.2, 2.0]}
    )
    frame = _frame(layout_dict, (384, 216))
    plan = plan_upscale(384, 216, seed=9, base_megapixels=0.0625, strength=0.4)
    base = np.random.default_rng(2).integers(0, 256, (plan.base.height, plan.base.width, 3), dtype=np.uint8)
    record = GenerationRecord("p", frame.scene_prompt, frame.descriptions, 9, 2, 3.5, plan.base.width,
                              plan.base.height, {}, None, True, [], {}, frame.to_dict())  # fmt: skip
    upscale = Upscale(plan, frame, base, record, Path("unused.png"), 2, 3.5, {})
    full = compute_masks(frame).amodal
    held = []
    for tile in plan.tiles:
        masks = compute_masks(tile_layout(frame, plan, tile))
        oscr = encode_png(np.zeros((tile.height, tile.width, 3), dtype=np.uint8))
        request, boxes = tile_request(upscale, tile, ViewCondition(oscr, masks.amodal, masks.token_grids()))
        rows, cols, _, _ = tile_window(plan, tile)
        assert boxes == [i for i in range(len(frame.boxes)) if full[i, rows, cols].any()]
        assert request.settings.descriptions == [frame.boxes[i].description for i in boxes]
        np.testing.assert_array_equal(request.masks, masks.token_grids()[boxes])
        settings = request.settings
        assert (settings.width, settings.height, settings.seed) == (tile.width, tile.height, tile.seed)
        assert request.edit.strength == 0.4 and request.edit.region().all()
        np.testing.assert_array_equal(request.edit.image, tile_start(upscale, tile))
        held.append(set(boxes))
    assert held[0] != held[1]  # the bench is in one tile only
    assert not full[1].any() and 1 not in held[0] | held[1]  # the lamp post: in no tile's prompt
