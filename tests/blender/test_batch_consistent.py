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
from seethrough_core.edit_region import layout_change
from seethrough_core.layout import Layout, load_layout
from seethrough_core.record import GenerationRecord
from seethrough_core.server_process import ServerProcess

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
