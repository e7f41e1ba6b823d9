"""Real Blender renders of the upscale's views: a tile's OSCR and masks are the frame's cropped, and the
base picture, cut to the frame, has Blender's own framing at the frame's resolution."""

from __future__ import annotations

import copy
import json
import threading

import numpy as np
import pytest
from bpy_helpers import read_rgb
from conftest import BASE_LAYOUT

from blender_addon import background_render
from blender_addon import render as blender_render
from blender_addon.render import TileViews, render_layout, render_oscr_image, render_views
from seethrough_core.geometry import CameraModel
from seethrough_core.layout import Layout
from seethrough_core.rendered_layout import reusable
from seethrough_core.resample import sample_view
from seethrough_core.upscale_plan import (
    base_layout,
    frame_layout_at,
    plan_upscale,
    shared_view,
    tile_layout,
    tile_window,
)
from seethrough_core.upscale_run import shared_view_rendered
from seethrough_core.vocabulary import DEFAULT_RENDER_ENGINE

pytestmark = pytest.mark.slow  # renders with Blender

FRAME = (384, 216)  # not a size the model takes: the base is 352 x 256, a taller view cut back
MARKER_INSET_PX = 16


def _frame_layout() -> Layout:
    """The test scene plus a small marker box near each corner of the frame."""
    data = copy.deepcopy(BASE_LAYOUT)
    data["boxes"].append({"description": "a bench", "center": [-4.5, 1.6, 0.4], "size": [1.6, 0.6, 0.8]})
    data["camera"]["shift_x"] = 0.07
    layout = frame_layout_at(Layout.from_dict(data), FRAME)
    cam = CameraModel(layout.camera, *FRAME)
    rays = cam.pixel_rays() @ cam.rotation.T
    w, h = FRAME
    for col, row in (
        (MARKER_INSET_PX, MARKER_INSET_PX),
        (w - MARKER_INSET_PX, MARKER_INSET_PX),
        (MARKER_INSET_PX, h - MARKER_INSET_PX),
        (w - MARKER_INSET_PX, h - MARKER_INSET_PX),
    ):
        centre = cam.position + 4.0 * rays[row, col]
        data["boxes"].append(
            {"description": "a marker", "center": centre.tolist(), "size": [0.12, 0.12, 0.12]}
        )
    return frame_layout_at(Layout.from_dict(data), FRAME)


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    out = tmp_path_factory.mktemp("upscale_views")
    frame = _frame_layout()
    plan = plan_upscale(*FRAME, seed=1, base_megapixels=0.0625)
    full = render_layout(frame, out / "frame", quiet=True)
    tiles = {t.name: render_layout(tile_layout(frame, plan, t), out / t.name, quiet=True) for t in plan.tiles}
    render_oscr_image(base_layout(frame, plan), out / "base.png", quiet=True)
    return plan, full, tiles, read_rgb(out / "base.png")


def test_a_tiles_oscr_is_the_frames_oscr_cropped(renders):
    """Same rays, same lights, same pixel density: the tile's OSCR equals the frame's over the tile.

    Tolerance: the two renders differ only in Cycles' sampling (32 samples; a pixel's sample pattern is
    seeded by its position in its own image), i.e. noise on the anti-aliased wire edges and the lit
    faces. Measured: mean difference under 1 level, 99th percentile 3, largest 12 of 255. A view off by
    one pixel gives a mean above 3 and a 99th percentile of about 40 (the wires move).
    """
    plan, full, tiles, _ = renders
    frame_oscr = read_rgb(full.oscr_path)
    assert len(plan.tiles) == 2 and plan.tile_height > FRAME[1]  # one tile row reaching past both edges
    for tile in plan.tiles:
        own = read_rgb(tiles[tile.name].oscr_path)
        assert own.shape == (tile.height, tile.width, 3)
        rows, cols, tile_rows, tile_cols = tile_window(plan, tile)
        diff = np.abs(frame_oscr[rows, cols].astype(int) - own[tile_rows, tile_cols].astype(int)).max(axis=2)
        assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 8 and diff.max() <= 40, (
            diff.mean(),
            np.percentile(diff, 99),
            diff.max(),
        )
        shifted = np.abs(frame_oscr[rows, cols][:, 1:].astype(int) - own[tile_rows, tile_cols][:, :-1]).max(
            axis=2
        )
        assert np.percentile(shifted, 99) > 3 * np.percentile(diff, 99)  # the comparison can see a pixel


def test_a_tiles_masks_are_the_frames_masks_cropped(renders):
    plan, full, tiles, _ = renders
    for tile in plan.tiles:
        masks = tiles[tile.name].masks
        rows, cols, tile_rows, tile_cols = tile_window(plan, tile)
        for kind in ("amodal", "visible"):
            crop = getattr(full.masks, kind)[:, rows, cols]
            own = getattr(masks, kind)[:, tile_rows, tile_cols]
            assert np.count_nonzero(crop != own) <= crop[0].size // 10_000  # a box edge's float rounding


def _marker_centroid(image: np.ndarray, corner: tuple[int, int]) -> np.ndarray:
    """Centroid (x, y) of what stands out of the background in a window around a frame corner."""
    col, row = corner
    half = 2 * MARKER_INSET_PX
    window = image[max(row - half, 0) : row + half, max(col - half, 0) : col + half].astype(float)
    strength = np.abs(window - np.median(window.reshape(-1, 3), axis=0)).max(axis=2)
    strength[strength < 12] = 0
    ys, xs = np.mgrid[0 : window.shape[0], 0 : window.shape[1]]
    total = strength.sum()
    assert total > 0, "no marker in the corner window"
    return np.array([(xs * strength).sum() / total, (ys * strength).sum() / total])


def test_the_frame_cut_from_the_base_has_blenders_framing(renders):
    """The base (rendered larger than the frame's aspect, then cut and resampled to the frame's size) puts
    the corner markers where Blender's render of the camera at the frame's resolution does, within 1 px."""
    plan, full, _, base = renders
    assert (base.shape[1], base.shape[0]) == (plan.base.width, plan.base.height) == (352, 256)
    assert plan.base.rect.height > FRAME[1]  # a taller view than the frame: it is cut, not squeezed
    final = sample_view(base, plan.base.rect, plan.base.scale, 0, 0, *FRAME)
    assert final.shape == (FRAME[1], FRAME[0], 3)
    blender = read_rgb(full.oscr_path)
    w, h = FRAME
    corners = [
        (MARKER_INSET_PX, MARKER_INSET_PX),
        (w - MARKER_INSET_PX, MARKER_INSET_PX),
        (MARKER_INSET_PX, h - MARKER_INSET_PX),
        (w - MARKER_INSET_PX, h - MARKER_INSET_PX),
    ]
    for corner in corners:
        offset = _marker_centroid(final, corner) - _marker_centroid(blender, corner)
        assert np.abs(offset).max() <= 1.0, (corner, offset)


def test_tile_views_cut_from_one_render_are_the_tiles_own_renders(renders, tmp_path, monkeypatch):
    """render_views: one render of the view covering the tiles, each tile's folder cut from it, is each
    tile's own render (up to Cycles' sampling noise, the tolerance above), complete and reusable as one."""
    plan, _, tiles, _ = renders
    frame = _frame_layout()
    whole, crops = shared_view(frame, plan, plan.tiles, lambda tile: tmp_path / "cut" / tile.name)
    assert (whole.width, whole.height) == (FRAME[0], plan.tile_height)  # past both edges, like the tiles
    render_views(whole, tmp_path / "shared", crops, quiet=True)
    shared = read_rgb(tmp_path / "shared" / "oscr.png")
    for tile, crop in zip(plan.tiles, crops, strict=True):
        cut = reusable(crop.folder, tile_layout(frame, plan, tile))
        assert cut is not None  # complete, and the render of the tile's own layout by its key
        assert (cut.report["render"]["cut_from"]["x"], cut.report["render"]["cut_from"]["y"]) == (
            crop.x,
            crop.y,
        )
        pixels = read_rgb(cut.oscr_path)
        assert np.array_equal(pixels, shared[crop.y : crop.y + tile.height, crop.x : crop.x + tile.width])
        own = tiles[tile.name]
        diff = np.abs(pixels.astype(int) - read_rgb(own.oscr_path).astype(int)).max(axis=2)
        assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 8 and diff.max() <= 40
        assert np.array_equal(cut.token_grids, own.masks.token_grids())
        assert np.array_equal(cut.view_condition().amodal, own.masks.amodal)

    # found complete (rendered ahead, or left by an interrupted run): the command line renders none again
    assert shared_view_rendered(whole, tmp_path / "shared", crops, DEFAULT_RENDER_ENGINE)
    renders_here: list[object] = []

    def counted(*args, **kwargs):
        renders_here.append(args)
        return render_views(*args, **kwargs)

    monkeypatch.setattr(blender_render, "render_views", counted)
    assert TileViews().shared(whole, tmp_path / "shared", crops)
    assert renders_here == []
    (crops[-1].folder / "masks.json").unlink()  # one view incomplete: the shared view renders again
    assert not shared_view_rendered(whole, tmp_path / "shared", crops, DEFAULT_RENDER_ENGINE)
    assert TileViews().shared(whole, tmp_path / "shared", crops)
    assert len(renders_here) == 1
    assert shared_view_rendered(whole, tmp_path / "shared", crops, DEFAULT_RENDER_ENGINE)


def test_the_addons_background_render_cuts_the_tile_views_too(renders, tmp_path):
    """The add-on renders in a background Blender process: there too one render gives every tile's
    folder (this Python, which imports bpy, stands in for Blender's executable)."""
    plan, _, tiles, _ = renders
    frame = _frame_layout()
    whole, crops = shared_view(frame, plan, plan.tiles, lambda tile: tmp_path / "cut" / tile.name)
    assert background_render.render_views(whole, tmp_path / "shared", crops, "cycles", "", threading.Event())
    shared = read_rgb(tmp_path / "shared" / "oscr.png")
    for tile, crop in zip(plan.tiles, crops, strict=True):
        condition = background_render.render_view(
            tile_layout(frame, plan, tile), crop.folder, "cycles", "", threading.Event()
        )  # the cut folder is found complete: nothing renders
        assert "cut_from" in json.loads((crop.folder / "masks.json").read_text())["render"]
        pixels = read_rgb(crop.folder / "oscr.png")
        assert np.array_equal(pixels, shared[crop.y : crop.y + tile.height, crop.x : crop.x + tile.width])
        diff = np.abs(pixels.astype(int) - read_rgb(tiles[tile.name].oscr_path).astype(int)).max(axis=2)
        assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 8
        # the cut folder's masks were computed in the other process: a box edge's float rounding may differ
        assert np.count_nonzero(condition.token_grids != tiles[tile.name].masks.token_grids()) <= 1
