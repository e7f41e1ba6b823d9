"""Render and generate from Blender: against a real tiny server in a subprocess, an unreachable
address, a server that dies mid-job, and the local-server controls. Blender's timers never fire in
the bpy module, so the tests drive the add-on's main-thread pump themselves."""

from __future__ import annotations

import json
import time

import addon_utils
import bpy
import numpy as np
import pytest
from addon_support import (
    ADDON,
    DrawSelf,
    FakeServer,
    RecordingLayout,
    configure,
    prefs,
    pump_until_done,
)
from bpy_helpers import read_rgb
from conftest import LAYOUT_WITH_DOG, MAIN_PYTHON
from PIL import Image

from blender_addon import background_render, images, scene_io, ui
from blender_addon.generation_jobs import RUNNER
from blender_addon.render import render_layout
from blender_addon.server_launcher import SERVER
from seethrough_core.client import SeeThroughClient
from seethrough_core.keys import ClientKeys, create_key_pair
from seethrough_core.rendered_layout import render_key as cache_key
from seethrough_core.server_process import ServerProcess
from seethrough_core.server_process import free_loopback_port as free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    """One output folder for the module, so the OSCR render of LAYOUT_WITH_DOG is cached across tests."""
    return tmp_path_factory.mktemp("addon-out")


@pytest.fixture
def shot(addon, tmp_path):
    """The add-on enabled, with LAYOUT_WITH_DOG imported through its operator."""
    path = tmp_path / "layout.json"
    path.write_text(json.dumps(LAYOUT_WITH_DOG))
    assert bpy.ops.seethrough.import_layout(filepath=str(path)) == {"FINISHED"}
    return bpy.context.scene


def draw_generate_panel() -> list[str]:
    log: list[str] = []
    ui.SEETHROUGH_PT_generate.draw(DrawSelf(RecordingLayout(log)), bpy.context)
    return log


@pytest.mark.each_blender
def test_render_oscr_runs_in_the_background_and_shows_the_image_and_masks(shot, out_dir, tmp_path):
    configure("tcp://127.0.0.1:5555", out_dir)
    assert bpy.ops.seethrough.render_oscr() == {"FINISHED"}  # returns at once: the UI never waits
    assert RUNNER.status.state == "rendering" and images.OSCR_IMAGE not in bpy.data.images
    drawn: list[str] = []
    status = pump_until_done(on_pump=lambda: drawn.extend(draw_generate_panel()))
    assert status.state == "done" and status.message.startswith("OSCR rendered in"), status.message
    assert any(line.startswith("progress:Rendering OSCR") for line in drawn)
    assert "operator:seethrough.cancel" in drawn  # a render can be cancelled like a generation
    oscr = bpy.data.images[images.OSCR_IMAGE]
    assert tuple(oscr.size) == (256, 256)
    for i in range(2):
        for kind in ("amodal", "visible"):
            assert tuple(bpy.data.images[f"SeeThrough {kind} {i:03d}"].size) == (256, 256)

    # The background process renders what this process renders: the same picture within a level or two
    # (two processes may round a float differently in the last bit), the same masks exactly.
    layout = scene_io.scene_to_layout(shot)
    here = render_layout(layout, tmp_path / "here", quiet=True)
    cache = out_dir / "Scene" / "oscr" / cache_key(layout, "cycles")
    background, foreground = (
        read_rgb(path).astype(np.int16) for path in (cache / "oscr.png", here.oscr_path)
    )
    assert np.abs(background - foreground).max() <= 2 and np.abs(background - foreground).mean() < 0.01
    report = json.loads((cache / "masks.json").read_text())
    assert report["boxes"] == here.report["boxes"] and report["depth_order"] == here.report["depth_order"]
    assert report["render"]["lights"] == here.report["render"]["lights"]

    # Unchanged layout: shown at once from the cache, no job.
    bpy.data.images.remove(oscr)
    job = RUNNER.job
    assert bpy.ops.seethrough.render_oscr() == {"FINISHED"}
    assert RUNNER.job is job and images.OSCR_IMAGE in bpy.data.images


def test_cancelling_a_background_render_stops_it_and_leaves_nothing_half_written(shot, out_dir):
    configure("tcp://127.0.0.1:5555", out_dir)
    shot.objects["a red vintage car"].location.x += 0.25  # a layout the cache does not have
    assert bpy.ops.seethrough.render_oscr() == {"FINISHED"}
    render = RUNNER.job.spec.render
    deadline = time.monotonic() + 30
    while not background_render._RUNNING:  # the render process has started
        assert time.monotonic() < deadline
        time.sleep(0.02)
    (process,) = background_render._RUNNING
    assert bpy.ops.seethrough.cancel() == {"FINISHED"}
    status = pump_until_done(timeout_s=30)
    assert status.state == "cancelled"
    assert process.poll() is not None and not background_render._RUNNING
    assert not (render.out_dir / "masks.json").exists()


def test_a_failed_background_render_says_why(shot, out_dir):
    configure("tcp://127.0.0.1:5555", out_dir)
    shot.objects["a red vintage car"].location.x -= 0.25  # another layout the cache does not have
    layout = scene_io.scene_to_layout(shot)
    blocker = out_dir / "Scene" / "oscr" / cache_key(layout, "cycles")
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the render's folder should go")
    try:
        assert bpy.ops.seethrough.render_oscr() == {"FINISHED"}
        status = pump_until_done()
    finally:
        blocker.unlink()
    assert status.state == "failed" and "the OSCR render failed" in status.message, status.message
    assert "log" in status.message and "Error" in status.message  # the child's own error, quoted


@pytest.mark.each_blender
def test_generate_brings_back_a_packed_image_with_its_record(shot, tiny_server, out_dir, tmp_path):
    configure(tiny_server, out_dir)
    props = shot.seethrough
    props.random_seed, props.seed, props.steps, props.show_previews = False, 7, 2, True

    started = time.monotonic()
    assert bpy.ops.seethrough.generate() == {"FINISHED"}
    drawn: list[str] = []
    status = pump_until_done(on_pump=lambda: drawn.extend(draw_generate_panel()))
    assert status.state == "done", status.message
    assert any(line.startswith("progress:") for line in drawn)  # the panel showed a progress bar
    assert time.monotonic() - started < 120

    name = "Scene Camera seed 7"
    image = bpy.data.images[name]
    assert tuple(image.size) == (256, 256) and image.packed_file is not None and image.use_fake_user
    assert bpy.data.images["SeeThrough Preview"].size[0] > 0  # step previews arrived
    layout = scene_io.scene_to_layout(shot)  # what was sent: LAYOUT_WITH_DOG with the objects' names
    stored = images.image_record(image)  # the record, stored once on the image
    assert stored["seed"] == 7 and stored["steps"] == 2 and stored["guidance"] == pytest.approx(3.5)
    assert list(stored["descriptions"]) == layout.descriptions
    assert stored["prompt"] == "a photo of a red vintage car and a small white dog on a quiet street"
    assert "tiny" in stored["model"]["name"]
    assert "lora" in stored
    assert stored["layout"] == layout.to_dict()
    assert set(image["seethrough"].keys()) == {"record_json"}

    history = props.history
    assert len(history) == 1 and history[0].image == image and history[0].seed == "7"
    assert list((out_dir / "Scene" / "results").glob("*.png"))  # the file arrived on disk first

    # Saved from Blender, the PNG still carries the record (Blender keeps PNG text chunks).
    saved = tmp_path / "saved.png"
    image.save(filepath=str(saved))
    with Image.open(saved) as png:
        assert png.size == (256, 256)
        record = json.loads(png.text["seethrough"])
    assert record["seed"] == 7 and record["descriptions"] == layout.descriptions
    assert record["layout"] == layout.to_dict()

    # History: reopen, then put it behind the camera.
    assert bpy.ops.seethrough.open_history_item(index=0) == {"FINISHED"}
    assert bpy.ops.seethrough.use_as_background() == {"FINISHED"}
    camera = shot.camera.data
    assert camera.show_background_images
    assert [(bg.image, bg.display_depth) for bg in camera.background_images] == [(image, "BACK")]
    assert bpy.ops.seethrough.use_as_background() == {"FINISHED"}  # replaces, never piles up
    assert len(camera.background_images) == 1

    # The .blend carries the image, its record and the history.
    blend = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    reopened = bpy.data.images[name]
    assert reopened.packed_file is not None and images.image_record(reopened)["seed"] == 7
    assert bpy.context.scene.seethrough.history[0].image == reopened


def test_a_stored_record_is_parsed_once_and_never_stale(addon):
    """The panel asks for the shown result's record in several polls and lines each redraw: the same
    record is parsed once, and a changed or other record is read anew."""
    first, second = bpy.data.images.new("first", 4, 4), bpy.data.images.new("second", 4, 4)
    first[images.PROP] = {images.RECORD_KEY: json.dumps({"seed": 1})}
    second[images.PROP] = {images.RECORD_KEY: json.dumps({"seed": 2})}
    record = images.image_record(first)
    assert images.image_record(first) is record and record["seed"] == 1
    assert images.image_record(second)["seed"] == 2
    assert images.image_record(first)["seed"] == 1
    first[images.PROP] = {images.RECORD_KEY: json.dumps({"seed": 3})}
    assert images.image_record(first)["seed"] == 3
    assert images.image_record(bpy.data.images.new("plain", 4, 4)) is None


def test_generate_renders_a_changed_layout_in_the_background_first(shot, tiny_server, out_dir):
    configure(tiny_server, out_dir)
    shot.objects["a small white dog"].location.y -= 0.5  # a layout the cache does not have
    layout = scene_io.scene_to_layout(shot)
    props = shot.seethrough
    props.random_seed, props.seed, props.steps, props.show_previews = False, 11, 2, False
    assert bpy.ops.seethrough.generate() == {"FINISHED"}
    states: list[str] = []
    status = pump_until_done(on_pump=lambda: states.append(RUNNER.status.state))
    assert status.state == "done", status.message
    first_render = states.index("rendering")  # connected first, then rendered, then generated
    assert set(states[:first_render]) <= {"starting"}
    assert (out_dir / "Scene" / "oscr" / cache_key(layout, "cycles") / "masks.json").is_file()
    assert images.image_record(bpy.data.images[status.image_name])["layout"] == layout.to_dict()


def test_draft_is_a_smaller_quicker_look_beside_generate(shot, tiny_server, out_dir):
    configure(tiny_server, out_dir)  # the layout's OSCR render is cached: a draft renders nothing new
    props = shot.seethrough
    props.random_seed, props.seed, props.steps, props.show_previews = False, 5, 3, False
    assert "operator:seethrough.generate" in draw_generate_panel()  # Generate, and Draft beside it
    assert bpy.ops.seethrough.generate(draft=True) == {"FINISHED"}
    status = pump_until_done()
    assert status.state == "done", status.message
    image = bpy.data.images[status.image_name]
    assert tuple(image.size) == (256, 256)  # within the draft's 512 px already (draft_size: core tests)
    record = images.image_record(image)
    assert record["steps"] == 3 and 1 <= record["steps_computed"] <= 3  # the step cache's count
    assert (record["condition_cache"], record["step_cache"]) == (True, pytest.approx(0.1))  # the draft's


@pytest.mark.each_blender
def test_cancel_stops_the_job_on_the_server(shot, tiny_server, out_dir):
    configure(tiny_server, out_dir)
    props = shot.seethrough
    props.random_seed, props.steps, props.show_previews = True, 40, False
    assert bpy.ops.seethrough.generate() == {"FINISHED"}

    def cancel_after_first_step() -> None:
        if RUNNER.status.step >= 1 and RUNNER.status.state == "running":
            assert bpy.ops.seethrough.cancel() == {"FINISHED"}
            assert "operator:seethrough.cancel" in draw_generate_panel()

    status = pump_until_done(timeout_s=60, on_pump=cancel_after_first_step)
    assert status.state == "cancelled" and status.step < 40
    assert len(props.history) == 0
    with SeeThroughClient(tiny_server, timeout_s=10) as client:
        assert client.info().queue_length == 0  # stopped on the server, not only in Blender


def test_unreachable_server_reports_within_the_timeout(shot, out_dir):
    configure(f"tcp://127.0.0.1:{free_port()}", out_dir, timeout_s=0.5)
    assert bpy.ops.seethrough.generate() == {"FINISHED"}  # returns at once: the UI never waits
    started = time.monotonic()
    status = pump_until_done(timeout_s=10)
    assert time.monotonic() - started < 3.0
    assert status.state == "failed" and "seethrough serve" in status.message, status.message
    assert any("seethrough serve" in line for line in draw_generate_panel())
    assert len(shot.seethrough.history) == 0


def test_a_refused_key_is_explained_in_the_panel_within_the_timeout(shot, out_dir, tmp_path):
    create_key_pair("server", tmp_path)
    create_key_pair("studio", tmp_path / "clients")
    create_key_pair("stranger", tmp_path)
    studio = ClientKeys.from_files(tmp_path / "server.key", tmp_path / "clients" / "studio.key_secret")
    curve = ("--server-key", str(tmp_path / "server.key_secret"), "--client-keys", str(tmp_path / "clients"))
    with ServerProcess.tiny(tmp_path / "server.log", *curve, keys=studio) as server:
        server.wait_ready(300)
        configure(server.endpoint, out_dir, timeout_s=1.0)
        p = prefs()
        p.server_public_key = str(tmp_path / "server.key")
        p.client_secret_key = str(tmp_path / "stranger.key_secret")
        try:
            assert bpy.ops.seethrough.generate() == {"FINISHED"}
            status = pump_until_done(timeout_s=30)
        finally:
            p.server_public_key = p.client_secret_key = ""
    assert status.state == "failed" and "refused this client's key" in status.message, status.message
    assert any("refused" in line for line in draw_generate_panel())


def test_a_server_that_dies_mid_job_and_stays_away_fails_the_job_and_keeps_earlier_results(shot, out_dir):
    healthy, dying, again = FakeServer("finish"), FakeServer("die"), FakeServer("die")
    try:
        configure(healthy.address, out_dir, timeout_s=0.5)
        shot.seethrough.random_seed = True
        bpy.ops.seethrough.generate()
        assert pump_until_done(timeout_s=20).state == "done"
        first = shot.seethrough.history[0].image

        prefs().server_address, prefs().retry_s = dying.address, 1.0
        bpy.ops.seethrough.generate()
        states: list[str] = []
        status = pump_until_done(timeout_s=20, on_pump=lambda: states.append(RUNNER.status.state))
        assert "waiting" in states  # asked again for Retry For, then given up on
        assert status.state == "failed" and "no answer" in status.message, status.message
        assert "it did not come back within 1 s" in status.message, status.message
        assert status.step == 1  # it was mid-job
        assert [item.image for item in shot.seethrough.history] == [first]
        assert first.name in bpy.data.images and first.packed_file is not None

        # Cancel ends the waiting at once (here the server would be asked again for a minute)
        prefs().server_address, prefs().retry_s = again.address, 60.0
        bpy.ops.seethrough.generate()

        def cancel_when_waiting() -> None:
            if RUNNER.status.state == "waiting":
                assert bpy.ops.seethrough.cancel() == {"FINISHED"}

        status = pump_until_done(timeout_s=20, on_pump=cancel_when_waiting)
        assert status.state == "cancelled", status.message
    finally:
        for server in (healthy, dying, again):
            server.close()


@pytest.mark.each_blender
def test_local_server_starts_and_stops_with_the_addon(addon, tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    configure(address, tmp_path)
    p = prefs()
    p.server_executable, p.server_arguments = MAIN_PYTHON, "-m seethrough serve --tiny"
    p.server_log = str(tmp_path / "server.log")

    assert bpy.ops.seethrough.start_server() == {"FINISHED"}
    with pytest.raises(RuntimeError, match="already running"):
        bpy.ops.seethrough.start_server()
    with SeeThroughClient(address, timeout_s=60) as client:
        info = client.info()  # it listens where the add-on will look for it (answers while loading)
    assert info.state in ("loading", "ready") and "tiny" in info.model["name"]
    process = SERVER.process
    addon_utils.disable(ADDON, default_set=True)  # disabling the add-on stops its server
    assert process.poll() is not None and not SERVER.running
    assert "--bind" in (tmp_path / "server.log").read_text()
    addon_utils.enable(ADDON, default_set=True)
    prefs().server_executable = str(tmp_path / "no-such-seethrough")
    with pytest.raises(RuntimeError, match="cannot find"):
        bpy.ops.seethrough.start_server()
