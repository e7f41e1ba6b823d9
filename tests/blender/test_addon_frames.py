"""Generate Frames in Blender, against a real tiny server: the scene's frame range as one steady shot,
written as a numbered image sequence. Frame 1 is generated, an unchanged frame is a copy, a box's move
is an edit of the frame before (every other pixel kept, byte for byte), a camera move keeps the frame
before reprojected; the layouts are the ones the frames had when the shot started; a rerun goes on
after the last frame written. Blender's timers never fire in the bpy module: the tests drive the pump."""

from __future__ import annotations

import hashlib
import math
import re
import tempfile
from pathlib import Path

import bpy
import numpy as np
import pytest
from addon_support import drawn_generate_panel, import_scene, prefs, pump_until_done, tiny_server_process
from conftest import DOG, LAYOUT_WITH_DOG, MAIN_PYTHON
from PIL import Image

from blender_addon import generation_jobs, scene_io
from blender_addon.frame_sequence import SHOT, frame_file, frames_written
from blender_addon.generation_jobs import RUNNER
from blender_addon.panel_settings import PanelSettings
from blender_addon.render_ahead import AHEAD
from seethrough_core.generate_and_save import safe_name
from seethrough_core.limits import DRAFT_STEP_CACHE
from seethrough_core.record import read_png_record

pytestmark = pytest.mark.slow


@pytest.fixture
def animated(addon, tmp_path, tiny_server):
    """LAYOUT_WITH_DOG over frames 1-4: frame 2 is frame 1; at frame 3 the dog has moved; at frame 4
    the camera has panned 2 degrees. Seed 5, 2 steps, connected to the tiny server."""
    scene = import_scene(LAYOUT_WITH_DOG, tmp_path, tiny_server, seed=5)
    props = scene.seethrough
    props.edit_margin, props.reproject_limit = 4, 0.95  # the car fills much of this 256 px picture
    scene.frame_start, scene.frame_end = 1, 4
    dog, camera = scene.objects[DOG], scene.camera
    dog.keyframe_insert("location", frame=2)
    dog.location.x += 0.4
    dog.keyframe_insert("location", frame=3)
    camera.keyframe_insert("rotation_euler", frame=3)
    camera.rotation_euler.z += math.radians(2.0)
    camera.keyframe_insert("rotation_euler", frame=4)
    scene.frame_set(2)
    return scene


def layout_at(scene: bpy.types.Scene, frame: int) -> dict:
    shown = scene.frame_current
    scene.frame_set(frame)
    layout = scene_io.scene_to_layout(scene).to_dict()
    scene.frame_set(shown)
    return layout


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def shot_dir(scene: bpy.types.Scene) -> Path:
    shots = Path(prefs().output_dir) / safe_name(scene.name) / "frames"
    return shots / safe_name(f"{scene.camera.name} seed 5")


@pytest.mark.each_blender
def test_generate_frames_makes_a_steady_shot_and_a_rerun_goes_on_where_it_stopped(animated, monkeypatch):
    scene = animated
    expected = {frame: layout_at(scene, frame) for frame in (1, 2, 3, 4)}
    job_renders, render = [], generation_jobs.run_render

    def counted_render(*args, **kwargs):
        job_renders.append(args[0])
        return render(*args, **kwargs)

    monkeypatch.setattr(generation_jobs, "run_render", counted_render)
    rendered_ahead = AHEAD.rendered
    packed_before = {image.name for image in bpy.data.images if image.packed_file is not None}
    assert bpy.ops.seethrough.generate_frames() == {"FINISHED"}
    assert SHOT.running and not bpy.ops.seethrough.generate_frames.poll()
    # The artist works on: renaming the dog, or no reprojection (frame 4 would be a full regeneration),
    # changes nothing of the shot: its layouts and settings were read when it started
    dog = scene.objects[DOG]
    dog.seethrough.description = "a black cat"
    scene.seethrough.reproject_limit = 0.0
    during: dict[int, str] = {}  # the panel as first drawn while each frame is made

    def draw_once_a_frame() -> None:
        if SHOT.running and SHOT.index not in during:
            during[SHOT.index] = drawn_generate_panel()

    status = pump_until_done(on_pump=draw_once_a_frame)
    assert "Generate Frames: Frame 1 (1 of 4)" in during[0] and "operator:seethrough.cancel" in during[0]
    assert "left" not in during[0]  # no pace yet; from the second job on, the time left at the pace so far
    assert re.search(r"Generate Frames: Frame 4 \(4 of 4\), \d+:\d\d left", during[3]), during[3]
    assert "Done: 4 of 4 frames" in drawn_generate_panel()
    assert SHOT.state == "done", SHOT.message
    assert status.state == "done" and SHOT.made == 3 and SHOT.copied == 1, SHOT.message
    assert scene.seethrough.shot_done and "did not finish" not in drawn_generate_panel()
    assert scene.frame_current == 2  # the scene shows the frame it showed
    # Frames 3 and 4 render their OSCR images while the frames before them generate, each once: a job
    # waits for its frame's render in progress, or takes it back from the queue and renders it itself
    assert len(job_renders) + AHEAD.rendered - rendered_ahead == 3 and AHEAD.rendered > rendered_ahead

    folder = shot_dir(scene)
    files = {frame: frame_file(folder, frame) for frame in (1, 2, 3, 4)}
    assert sorted(p.name for p in folder.iterdir()) == ["0001.png", "0002.png", "0003.png", "0004.png"]
    records = {frame: read_png_record(path.read_bytes()) for frame, path in files.items()}
    for frame, record in records.items():
        assert record.seed == 5 and record.steps == 2
        if frame != 2:  # frame 2 is frame 1's picture
            assert record.layout == expected[frame], frame
    assert files[2].read_bytes() == files[1].read_bytes()  # unchanged: the frame before, copied

    # Frame 3: the dog's move, an edit of frame 2 (frame 1's picture) over the changed region only
    parent = records[3].parent
    assert parent["kind"] == "edit" and f"{DOG}: moved" in parent["changes"]
    assert parent["sha256"] == hashlib.sha256(files[2].read_bytes()).hexdigest()
    before, after = pixels(files[2]), pixels(files[3])
    region_png = next(Path(prefs().output_dir).rglob("*frame_3_*_region.png"))
    region = pixels(region_png)[..., 0] == 255
    assert 0 < region.mean() < 0.5
    assert np.array_equal(after[~region], before[~region]) and not np.array_equal(after, before)
    # Frame 4: the camera pan, frame 3 reprojected into the new camera
    assert records[4].parent["kind"] == "reprojected"
    assert records[4].parent["sha256"] == hashlib.sha256(files[3].read_bytes()).hexdigest()

    # Nothing packed into the .blend, nothing in the Results list; the shot is behind the camera
    assert {image.name for image in bpy.data.images if image.packed_file is not None} == packed_before
    assert len(scene.seethrough.history) == 0
    [background] = [bg for bg in scene.camera.data.background_images if bg.image is not None]
    assert background.image.source == "SEQUENCE"
    assert Path(bpy.path.abspath(background.image.filepath)) == files[1]
    user = background.image_user
    assert (user.frame_start, user.frame_duration, user.frame_offset) == (1, 4, 0)

    # A rerun with the same seed keeps the frames written for the same layouts and makes the rest
    kept = {frame: files[frame].read_bytes() for frame in (1, 2, 3)}
    files[4].unlink()
    dog.seethrough.description, scene.seethrough.reproject_limit = DOG, 0.95
    assert bpy.ops.seethrough.generate_frames() == {"FINISHED"}
    pump_until_done()
    assert SHOT.state == "done" and (SHOT.kept, SHOT.made, SHOT.copied) == (3, 1, 0), SHOT.message
    assert all(files[frame].read_bytes() == data for frame, data in kept.items())
    assert read_png_record(files[4].read_bytes()).parent["kind"] == "reprojected"

    # A frame is kept only for the settings it was made with, which its record holds: more steps, or
    # another edit margin from frame 3 on (the frames before it are copies of frame 1), are made again
    shot = PanelSettings.of(scene).shot_settings()
    assert read_png_record(files[4].read_bytes()).source["shot"] == shot
    assert frames_written(folder, SHOT.frames, shot) == (4, "")
    assert frames_written(folder, SHOT.frames, {**shot, "steps": 3}) == (
        0, "the settings changed (steps 2 → 3)"
    )  # fmt: skip
    margin = {**shot, "edit margin": 8}  # frame 1 and its copy are no edits: frame 3 is made again
    assert frames_written(folder, SHOT.frames, margin) == (2, "the settings changed (edit margin 4 → 8)")
    scene.seethrough.steps = 3
    assert bpy.ops.seethrough.generate_frames() == {"FINISHED"}
    assert SHOT.note == "frame 1 and the frames after it are made again: the settings changed (steps 2 → 3)"
    assert "Frame 1 and the frames after it are made again" in drawn_generate_panel()
    assert bpy.ops.seethrough.cancel() == {"FINISHED"}
    pump_until_done()


def test_a_frame_that_cannot_be_used_is_named_and_nothing_is_sent(animated):
    scene = animated
    car = scene.objects["a red vintage car"]
    car.keyframe_insert("scale", frame=2)
    car.scale.z = 0.0
    car.keyframe_insert("scale", frame=3)
    with pytest.raises(RuntimeError, match=r"cannot generate frames: frame 3: box \"a red vintage car\""):
        bpy.ops.seethrough.generate_frames()
    assert not SHOT.running and scene.frame_current == 2
    assert not shot_dir(scene).exists()


def test_cancel_stops_the_shot_and_says_what_is_written(animated):
    animated.frame_step = 3  # frames 1 and 4, as a render with this Frame Step makes
    assert bpy.ops.seethrough.generate_frames() == {"FINISHED"}
    assert [frame.number for frame in SHOT.frames] == [1, 4]
    assert bpy.ops.seethrough.cancel() == {"FINISHED"}
    pump_until_done()
    assert SHOT.state == "cancelled", SHOT.message
    assert "frame 1 was not made" in SHOT.message and "0 of 2 frames" in SHOT.message
    assert "Generate Frames again with seed 5 goes on from there" in SHOT.message
    # Resume goes on with the shot's seed, though the panel now draws a new one for every press
    assert "button:Resume Generate Frames (seed 5)" in drawn_generate_panel()
    animated.seethrough.random_seed = True
    assert bpy.ops.seethrough.generate_frames(seed=SHOT.seed) == {"FINISHED"}
    assert SHOT.running and SHOT.seed == 5 and SHOT.folder == shot_dir(animated)
    assert bpy.ops.seethrough.cancel() == {"FINISHED"}
    pump_until_done()
    # The .blend keeps which shot did not finish: reopened (the add-on knows of no shot), it offers it
    SHOT._reset()
    drawn = drawn_generate_panel()
    assert "The last Generate Frames (seed 5) did not finish" in drawn
    assert "button:Resume Generate Frames (seed 5)" in drawn


def test_frames_made_in_two_stages_edit_the_base_of_the_frame_before(animated):
    """A render size the model cannot make directly (330 x 256 at base size 0.0625 MP: a base and two
    tiles): frame 2 edits frame 1's base where the dog moved, then upscales it; its file is the frame."""
    scene = animated
    scene.frame_end = 3  # frame 3: the dog moved
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 330, 256, 100
    scene.seethrough.base_megapixels = 0.0625
    assert bpy.ops.seethrough.generate_frames() == {"FINISHED"}
    pump_until_done(timeout_s=300)
    assert SHOT.state == "done" and (SHOT.made, SHOT.copied) == (2, 1), SHOT.message
    first, last = (read_png_record(frame_file(shot_dir(scene), n).read_bytes()) for n in (1, 3))
    assert (first.width, first.height) == (last.width, last.height) == (330, 256)
    assert first.upscale is not None and last.upscale is not None
    base = read_png_record(Path(last.source["base"]).read_bytes())  # the edited base, then upscaled
    assert base.parent["kind"] == "edit" and f"{DOG}: moved" in base.parent["changes"]
    assert base.parent["sha256"] == hashlib.sha256(Path(first.source["base"]).read_bytes()).hexdigest()


def test_a_shot_waits_for_a_server_that_went_away_and_goes_on(animated, tmp_path):
    """The server is killed (SIGKILL) as soon as frame 1 is written, and started again at the same address
    once the panel says that it went away: frame 3 is sent to it again and the shot completes (before,
    the shot stopped at frame 3 with "server unreachable")."""
    scene = animated
    scene.frame_end = 3  # frame 2 is a copy; frame 3 (the dog moved) is the job the kill hits
    server = tiny_server_process(MAIN_PYTHON, tmp_path / "server.log")
    endpoint = server.endpoint
    server.start()
    waiting: list[str] = []

    def kill_then_restart() -> None:
        if SHOT.made == 1 and not waiting and server.running:
            server.process.kill()
            server.process.wait()
        elif RUNNER.status.state == "waiting" and not waiting:
            waiting.append(drawn_generate_panel())
            server.start()  # the artist starts it again (Server panel); it answers within seconds

    try:
        server.wait_ready()
        prefs().server_address, prefs().timeout_s, prefs().retry_s = endpoint, 3.0, 120.0
        assert bpy.ops.seethrough.generate_frames() == {"FINISHED"}
        pump_until_done(timeout_s=240, on_pump=kill_then_restart)
    finally:
        server.stop()
    assert waiting, "the shot never waited for the server"
    assert "Generate Frames: Frame 3 (3 of 3)" in waiting[0] and "Waiting for the server" in waiting[0]
    assert "The server went away" in waiting[0] and "operator:seethrough.cancel" in waiting[0]
    assert SHOT.state == "done" and (SHOT.made, SHOT.copied) == (2, 1), SHOT.message
    files = [frame_file(shot_dir(scene), n) for n in (1, 2, 3)]
    last = read_png_record(files[2].read_bytes())
    assert last.parent["kind"] == "edit" and f"{DOG}: moved" in last.parent["changes"]
    assert last.parent["sha256"] == hashlib.sha256(files[1].read_bytes()).hexdigest()


def test_draft_frames_make_the_shot_small_and_quick_in_a_folder_of_its_own(animated):
    """Draft Frames at a render size of 768 x 576: every frame rendered and generated at the draft size
    (512 x 384), one pass, with the draft speed options (the edits of later frames too), into a folder
    of its own; the final shot's folder is not touched."""
    scene = animated
    scene.frame_step = 2  # frames 1 and 3: the dog moved
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 768, 576, 100
    scene.seethrough.upscale_to_render = True  # a draft is one pass all the same
    assert bpy.ops.seethrough.generate_frames(draft=True) == {"FINISHED"}
    assert "Draft Frames: Frame 1 (1 of 2)" in drawn_generate_panel()
    pump_until_done(timeout_s=300)
    assert SHOT.state == "done" and SHOT.made == 2, SHOT.message
    folder = shot_dir(scene).with_name(safe_name(f"{scene.camera.name} seed 5 draft"))
    records = [read_png_record(frame_file(folder, n).read_bytes()) for n in (1, 3)]
    for record in records:
        assert (record.width, record.height) == (512, 384) and record.layout["resolution"] == [512, 384]
        assert record.upscale is None
        assert record.condition_cache is True and record.step_cache == DRAFT_STEP_CACHE
    assert records[1].parent["kind"] == "edit" and f"{DOG}: moved" in records[1].parent["changes"]
    assert not shot_dir(scene).exists()


def test_without_an_output_folder_a_shot_goes_beside_the_saved_blend(animated, tmp_path, monkeypatch):
    """Frames are not packed into the .blend: without an Output Folder they go beside the saved .blend
    (seethrough_NAME/, as Blender's blendcache_NAME/), and for an unsaved one to the temp folder, which
    the panel says, with what to do."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    prefs().output_dir = ""
    for saved in (False, True):
        if saved:
            bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "street.blend"))
        assert bpy.ops.seethrough.generate_frames() == {"FINISHED"}
        folder = SHOT.folder
        assert bpy.ops.seethrough.cancel() == {"FINISHED"}
        pump_until_done()
        if saved:
            assert folder.parent.parent == tmp_path / "seethrough_street" / safe_name(animated.name)
            assert SHOT.note == ""
        else:
            assert folder.is_relative_to(tmp_path / "temp" / "seethrough")
            assert SHOT.note.startswith("the .blend is not saved and no Output Folder is set")
