"""`seethrough batch --consistent`: each frame after the first is an edit of the frame before it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import bpy
import numpy as np
import pytest
from bpy_helpers import read_rgb
from PIL import Image

from blender_addon.scene_io import layout_to_scene
from seethrough.batch.inputs import expand_inputs
from seethrough.batch.runner import BatchOptions, BatchRunner
from seethrough_core.edit_region import dilate, layout_change
from seethrough_core.frame_reuse import base_to_frame
from seethrough_core.layout import Layout, load_layout
from seethrough_core.record import GenerationRecord, read_png_file_record
from seethrough_core.server_process import ServerProcess
from seethrough_core.upscale_plan import plan_upscale

pytestmark = pytest.mark.slow  # renders with Blender and runs a server

MARGIN = 8


def write_animated_blend(path: Path) -> None:
    """The car drives 1 m between frames 1 and 3 while the woman stands still; at frame 4 the camera rises."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    data = load_layout("assets/examples/street.json").to_dict()
    data["resolution"] = [256, 256]
    data["boxes"] = data["boxes"][:2]
    car = layout_to_scene(Layout.from_dict(data), scene)[0]
    car.keyframe_insert("location", frame=1)
    car.location.x += 1.0
    car.keyframe_insert("location", frame=3)
    camera = scene.camera
    camera.keyframe_insert("location", frame=3)
    camera.location.z += 0.5
    camera.keyframe_insert("location", frame=4)
    scene.frame_set(1)
    bpy.ops.wm.save_as_mainfile(filepath=str(path))


def test_only_the_moving_box_regenerates_and_a_camera_move_is_reprojected(empty_blender, tmp_path):
    write_animated_blend(tmp_path / "drive.blend")
    out = tmp_path / "out"
    with ServerProcess.tiny(tmp_path / "server.log") as server:
        options = BatchOptions(
            out_dir=out, servers=[server.endpoint], seeds=[5], frames=[1, 2, 3, 4], steps=2,
            consistent=True, margin_px=MARGIN,
        )  # fmt: skip
        summary = BatchRunner(options).run(expand_inputs([str(tmp_path / "drive.blend")]))
    assert summary.ok and summary.count("done") == 4

    folder = out / "drive" / "Camera"
    images = [read_rgb(folder / f"000{frame}_5.png") for frame in (1, 2, 3, 4)]
    records = [
        GenerationRecord.from_dict(json.loads((folder / f"000{f}_5.json").read_text())) for f in (1, 2, 3, 4)
    ]
    assert records[0].parent is None
    assert [r.parent["kind"] for r in records[1:]] == ["edit", "edit", "reprojected"]
    for frame in (2, 3):
        before = (folder / f"000{frame - 1}_5.png").read_bytes()
        assert records[frame - 1].parent["sha256"] == hashlib.sha256(before).hexdigest()

    regions = [np.asarray(Image.open(folder / f"000{f}_5_region.png")) == 255 for f in (2, 3)]
    for k, region in enumerate(regions, start=1):
        old, new = (Layout.from_dict(records[i].layout) for i in (k - 1, k))
        expected = layout_change(old, new, MARGIN)
        assert [c.kinds for c in expected.boxes] == [("moved",)]  # only the car
        assert np.array_equal(region, expected.region)
        assert np.array_equal(images[k][~region], images[k - 1][~region])  # the rest, byte for byte
        assert (images[k][region] != images[k - 1][region]).any()
    background = ~(regions[0] | regions[1])
    assert background.mean() > 0.3
    assert np.array_equal(images[0][background], images[1][background])
    assert np.array_equal(images[0][background], images[2][background])
    # The camera rose at frame 4: an edit of frame 3 reprojected into the new camera
    # (test_batch_reprojected.py checks its pixels); the region and the reprojected picture beside it.
    assert (folder / "0004_5_region.png").exists() and (folder / "0004_5_reprojected.png").exists()
    assert 0 < records[3].parent["kept"] < 1
    assert ["model_encode_edit_s" in r.timings for r in records] == [False, True, True, True]


def write_dog_blend(path: Path, size: tuple[int, int]) -> None:
    """The small white dog trots 30 cm between frames 1 and 2, then stands still at frame 3."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    data = load_layout("assets/examples/street.json").to_dict()
    data["resolution"] = list(size)
    dog = layout_to_scene(Layout.from_dict(data), scene)[2]
    dog.keyframe_insert("location", frame=1)
    dog.location.y += 0.3
    dog.keyframe_insert("location", frame=2)
    dog.keyframe_insert("location", frame=3)
    scene.frame_set(1)
    bpy.ops.wm.save_as_mainfile(filepath=str(path))


def test_frames_in_two_stages_keep_the_frame_before_wherever_the_edit_does_not_reach(empty_blender, tmp_path):
    """Frames larger than the model's size: each frame's base is an edit of the one before, and its
    upscale refines only the tiles that edit reaches; the rest of the frame is the frame before's, byte
    for byte. A frame whose layout did not change is the frame before, without a single tile job."""
    size = (640, 360)  # a 352x256 base and 3 x 2 tiles of 256 px at 0.0625 megapixels
    write_dog_blend(tmp_path / "dog.blend", size)
    out = tmp_path / "out"
    with ServerProcess.tiny(tmp_path / "server.log") as server:
        options = BatchOptions(
            out_dir=out, servers=[server.endpoint], seeds=[5], frames=[1, 2, 3], steps=2,
            consistent=True, margin_px=MARGIN, base_megapixels=0.0625,
        )  # fmt: skip
        summary = BatchRunner(options).run(expand_inputs([str(tmp_path / "dog.blend")]))
    assert summary.ok and summary.count("done") == 3

    folder = out / "dog" / "Camera"
    frames = [read_rgb(folder / f"000{f}_5.png") for f in (1, 2, 3)]
    stages = [read_png_file_record(folder / f"000{f}_5.png").upscale for f in (1, 2, 3)]
    refined = [[t["name"] for t in stage["tiles"] if not t.get("reused")] for stage in stages]
    assert "reuses" not in stages[0] and len(refined[0]) == 6  # the first frame: every tile
    assert stages[1]["reuses"]["file"] == str(folder / "0001_5.png") and 0 < len(refined[1]) < 6
    assert stages[2]["reuses"]["file"] == str(folder / "0002_5.png") and refined[2] == []
    assert np.array_equal(frames[2], frames[1])  # nothing changed: the frame before, exactly

    # where the dog's region (beside frame 2's base) does not reach, frame 2 is frame 1
    region = read_rgb(folder / "0002_5_base_region.png")[..., 0] > 0
    plan = plan_upscale(*size, seed=5, base_megapixels=0.0625)
    reach = dilate(base_to_frame(region, plan), round(plan.tile_side / 32))
    assert 0.05 < reach.mean() < 0.9
    assert np.array_equal(frames[1][~reach], frames[0][~reach])
    assert (frames[1][reach] != frames[0][reach]).any()
