"""`seethrough batch --consistent` over a camera pan: each frame is the previous one reprojected, and only
what the pan reveals (and the boxes) regenerates. Real Blender renders, a real tiny server, the command
line as people run it (interrupted with Ctrl-C, then resumed).

Tolerance: reprojection_support.RESAMPLE_TOLERANCE (one 8-bit level of rounding).
"""

from __future__ import annotations

import _thread
import hashlib
import io
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import bpy
import numpy as np
import pytest
from bpy_helpers import read_rgb
from reprojection_support import RESAMPLE_TOLERANCE, max_resample_error, resample_through

from blender_addon.scene_io import layout_to_scene
from seethrough.batch.inputs import expand_inputs
from seethrough.batch.runner import BatchOptions, BatchRunner
from seethrough_core.edit_region import dilate
from seethrough_core.geometry import CameraModel
from seethrough_core.layout import Layout, load_layout
from seethrough_core.masks import compute_masks
from seethrough_core.record import GenerationRecord
from seethrough_core.reprojection import rotation_homography
from seethrough_core.server_process import ServerProcess

pytestmark = pytest.mark.slow  # renders with Blender and runs a server

MARGIN = 8
LIMIT = 0.6
FRAMES = (1, 2, 3, 4, 5)


def write_pan_blend(path: Path) -> None:
    """A camera panning 2 degrees a frame over a street with a parked car (frames 1-3), whipping 36
    degrees at frame 4 (too far to keep the picture), then panning on while the car moves (frame 5)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    data = load_layout("assets/examples/street.json").to_dict()
    data["resolution"] = [256, 256]
    data["camera"].update(location=[0.0, 0.0, 1.6], rotation_euler_deg=[80.0, 0.0, 0.0], lens_mm=35.0)
    car = {**data["boxes"][0], "center": [3.0, 14.0, 0.75], "rotation_euler_deg": [0.0, 0.0, 0.0]}
    data["boxes"] = [car]
    (car_object,) = layout_to_scene(Layout.from_dict(data), scene)
    camera = scene.camera
    for frame, turn in ((1, 0.0), (2, 2.0), (3, 2.0), (4, -36.0), (5, 2.0)):
        camera.rotation_euler.z += math.radians(turn)
        camera.keyframe_insert("rotation_euler", frame=frame)
    car_object.keyframe_insert("location", frame=4)
    car_object.location.x -= 0.8
    car_object.keyframe_insert("location", frame=5)
    scene.frame_set(1)
    bpy.ops.wm.save_as_mainfile(filepath=str(path))


class CtrlCAfter(io.StringIO):
    """A progress stream that presses Ctrl-C once a line starts with ``line_start``."""

    def __init__(self, line_start: str) -> None:
        super().__init__()
        self.line_start, self.pressed = line_start, False

    def write(self, text: str) -> int:
        if text.startswith(self.line_start) and not self.pressed:
            self.pressed = True
            _thread.interrupt_main()
        return super().write(text)


def batch_command(blend: Path, out: Path, endpoint: str) -> list[str]:
    return [
        sys.executable, "-m", "seethrough", "batch", str(blend), "--out", str(out), "--server", endpoint,
        "--frames", "1-5", "--seeds", "5", "--consistent", "--margin", str(MARGIN),
        "--reproject-limit", str(LIMIT), "--steps", "2",
    ]  # fmt: skip


def test_a_pan_keeps_the_picture_and_only_the_revealed_strip_regenerates(empty_blender, tmp_path):
    blend = tmp_path / "pan.blend"
    write_pan_blend(blend)
    out = tmp_path / "out"
    folder = out / "pan" / "Camera"
    with ServerProcess.tiny(tmp_path / "server.log") as server:
        # Ctrl-C once the second frame is done: KeyboardInterrupt in the thread running the batch, as
        # a terminal's Ctrl-C raises it, while the third frame generates (12 steps: it takes a while)
        options = BatchOptions(
            out_dir=out, servers=[server.endpoint], seeds=[5], frames=list(FRAMES), steps=12,
            consistent=True, margin_px=MARGIN, reproject_limit=LIMIT,
        )  # fmt: skip
        progress = CtrlCAfter("[2/5] done")
        summary = BatchRunner(options, progress).run(expand_inputs([str(blend)]))
        assert summary.interrupted and progress.pressed
        assert not [p for p in out.rglob("*") if "partial" in p.name or p.name.startswith(".")]
        interrupted = sorted(p.name for p in folder.glob("000?_5.png"))
        assert interrupted == [f"000{f}_5.png" for f in FRAMES[: len(interrupted)]]  # a prefix of the chain
        assert 2 <= len(interrupted) < 5
        for png in folder.glob("000?_5.png"):
            assert png.with_suffix(".json").is_file()

        rerun = subprocess.run(
            batch_command(blend, out, server.endpoint), capture_output=True, text=True, timeout=600
        )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stderr.count("skipped") == len(interrupted)
    check_frames(folder)


def model(record: GenerationRecord) -> CameraModel:
    return CameraModel(Layout.from_dict(record.layout).camera, 256, 256)


def from_frame_1(folder: Path, cameras: list[CameraModel]) -> np.ndarray:
    """Frame 3's pixels whose spot in frame 2 lies wholly outside frame 2's region: frame 2 kept them
    from frame 1, so frame 1 is their source."""
    region = read_rgb(folder / "0002_5_region.png").astype(np.float64)
    touched, _ = resample_through(region, rotation_homography(*cameras))
    return touched[..., 0] == 0


def check_frames(folder: Path) -> None:
    """The chain's records, regions and pixels against the pan's exact homographies."""
    images = {f: read_rgb(folder / f"000{f}_5.png") for f in FRAMES}
    records = {
        f: GenerationRecord.from_dict(json.loads((folder / f"000{f}_5.json").read_text())) for f in FRAMES
    }
    assert records[1].parent is None
    kinds = [records[f].parent["kind"] for f in FRAMES[1:]]
    assert kinds == ["reprojected", "reprojected", "regeneration", "reprojected"]
    for frame in FRAMES[1:]:  # each made from the previous frame as saved, across the interruption
        before = (folder / f"000{frame - 1}_5.png").read_bytes()
        assert records[frame].parent["sha256"] == hashlib.sha256(before).hexdigest()

    # The whip pan: past the limit, a new picture (no region, nothing reprojected)
    assert "too far" in records[4].parent["reason"]
    assert not (folder / "0004_5_region.png").exists() and not (folder / "0004_5_reprojected.png").exists()

    for frame in (2, 3, 5):
        old, new = (Layout.from_dict(records[f].layout) for f in (frame - 1, frame))
        region = read_rgb(folder / f"000{frame}_5_region.png")[..., 0] == 255
        reprojected = read_rgb(folder / f"000{frame}_5_reprojected.png")
        assert records[frame].parent["kept"] == pytest.approx(1 - region.mean(), abs=1e-4)
        # outside the region, the frame is the reprojected picture byte for byte (the edit path) ...
        assert np.array_equal(images[frame][~region], reprojected[~region])
        assert (images[frame][region] != reprojected[region]).any()
        # ... which is the previous frame through the pan's exact homography
        cameras = [CameraModel(layout.camera, 256, 256) for layout in (old, new)]
        assert np.allclose(cameras[0].position, cameras[1].position)  # a pure rotation
        expected, inside = resample_through(images[frame - 1], rotation_homography(*cameras))
        kept = ~region
        assert (kept <= inside).all()
        if frame == 3:  # what frame 2 kept of frame 1 is sampled once, from frame 1 (pixel sources)
            from_first = from_frame_1(folder, cameras)
            once, _ = resample_through(images[1], rotation_homography(model(records[1]), cameras[1]))
            assert (from_first & kept).mean() > 0.5
            assert max_resample_error(images[3], once, from_first & kept) <= RESAMPLE_TOLERANCE
            assert max_resample_error(images[3], expected, from_first & kept) > RESAMPLE_TOLERANCE
            share = records[3].parent["sources"][str(folder / "0001_5.png")]
            assert share == pytest.approx((from_first & kept).mean(), abs=1e-3)
            kept &= ~from_first  # the rest: frame 2's own pixels, sampled from frame 2
        assert max_resample_error(images[frame], expected, kept) <= RESAMPLE_TOLERANCE
        # the region: the revealed strip and the car, each grown by the margin (and nothing more while
        # the car stands still; the strip runs along one side, thin ones along the top and bottom)
        car_now = compute_masks(new).amodal.any(axis=0)
        strip = ~inside
        assert (dilate(strip | car_now, MARGIN) <= region).all()
        assert 0.01 < strip.mean() < 0.1
        if frame != 5:
            car_share = (dilate(car_now, MARGIN) & inside).mean()
            assert region.mean() <= strip.mean() + car_share + MARGIN * (256 * 3) / 256**2
    # frame 5: the car moved as well; where it was, seen from the new camera, regenerates too
    old = Layout.from_dict(records[4].layout)
    new = Layout.from_dict(records[5].layout)
    assert records[5].parent["changes"] and "moved" in records[5].parent["changes"][0]
    old_car_now = compute_masks(replace(old, camera=new.camera)).amodal[0]
    region = read_rgb(folder / "0005_5_region.png")[..., 0] == 255
    assert old_car_now.any() and (old_car_now <= region).all()
