"""The add-on makes the frame at the scene's render size (docs/upscale.md): Generate above the base size
gives a base picture upscaled in tiles, in one job; Upscale makes a smaller result into the frame; an
edit of a frame edits its base and upscales it again; a stopped upscale resumes with the tiles it kept.
A real tiny server, real background renders of every tile view; the bpy module never fires timers, so
the tests drive the add-on's main-thread pump themselves."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import bpy
import numpy as np
import pytest
from addon_support import DrawSelf, RecordingLayout, configure, prefs, pump_until_done, tiny_server_process
from bpy_helpers import read_rgb
from conftest import BASE_LAYOUT, LAYOUT_WITH_DOG, MAIN_PYTHON

from blender_addon import background_render, generation_jobs, images, render_ahead, scene_io, ui
from blender_addon.generation_jobs import RUNNER
from blender_addon.render_ahead import AHEAD
from seethrough.previous_picture import read_previous
from seethrough_core.frame_reuse import frame_reuse
from seethrough_core.generate_and_save import base_path_for, frame_path_for, region_path_for, tiles_dir_for
from seethrough_core.layout import Layout
from seethrough_core.record import read_png_file_record
from seethrough_core.upscale_plan import base_layout, plan_upscale
from seethrough_core.upscale_run import SHARED_VIEW, VIEWS_FOLDER, UpscaleRunner

pytestmark = pytest.mark.slow

# The smallest sizes that still take both stages, so every render (base, tile views) stays tiny.
BASE_MEGAPIXELS = 0.0625  # 256 x 256: a 330x256 frame is a 304x256 base and 2 tiles of 256 x 256
FRAME = (330, 256)  # 330 is no multiple of 16: the model cannot make this frame directly
SMALL = (256, 256)  # the base size itself: generated in one pass, then upscaled (cropped) to FRAME


def set_render_size(scene: bpy.types.Scene, size: tuple[int, int]) -> None:
    scene.render.resolution_x, scene.render.resolution_y = size
    scene.render.resolution_percentage = 100


def frame_scene(tmp_path: Path, layout: dict = BASE_LAYOUT) -> bpy.types.Scene:
    """``layout`` imported through the add-on: seed 3, 2 steps, the tiny base size."""
    path = tmp_path / "layout.json"
    path.write_text(json.dumps(layout))
    assert bpy.ops.seethrough.import_layout(filepath=str(path)) == {"FINISHED"}
    scene = bpy.context.scene
    props = scene.seethrough
    props.random_seed, props.seed, props.steps, props.show_previews = False, 3, 2, False
    props.base_megapixels = BASE_MEGAPIXELS
    return scene


def run_and_wait(operator, on_pump=None) -> bpy.types.Image:
    assert operator() == {"FINISHED"}
    status = pump_until_done(timeout_s=300, on_pump=on_pump)
    assert status.state == "done", status.message
    return bpy.data.images[status.image_name]


def results_dir() -> Path:
    return Path(prefs().output_dir) / "Scene" / "results"


def test_generate_and_upscale_give_the_render_size(addon, tmp_path, tiny_server):
    scene = frame_scene(tmp_path)
    props = scene.seethrough
    plan = plan_upscale(*FRAME, seed=3, base_megapixels=BASE_MEGAPIXELS)
    assert plan.two_stages and len(plan.tiles) == 2

    configure(tiny_server, tmp_path / "out")
    set_render_size(scene, FRAME)

    props.upscale_to_render = False  # off: the frame goes to the model as it is, and is refused
    with pytest.raises(RuntimeError, match="not a multiple of 16"):
        bpy.ops.seethrough.generate()
    props.upscale_to_render = True

    # The panel says what Generate makes of the render size, and has the Upscale button.
    drawn: list[str] = []
    ui.SEETHROUGH_PT_generate.draw(DrawSelf(RecordingLayout(drawn)), bpy.context)
    ui.SEETHROUGH_PT_results.draw(DrawSelf(RecordingLayout(drawn)), bpy.context)
    assert "prop:upscale_to_render" in drawn and "operator:seethrough.upscale_result" in drawn
    labels = " ".join(line.removeprefix("label:") for line in drawn if line.startswith("label:"))
    assert "330x256: base 304x256, then 2 tiles of 256x256" in labels, drawn

    # Generate: the base, then its tiles, in one job; the panel follows each tile.
    assert bpy.ops.seethrough.generate() == {"FINISHED"}
    messages: list[str] = []
    status = pump_until_done(timeout_s=300, on_pump=lambda: messages.append(RUNNER.status.message))
    assert status.state == "done", status.message
    assert any(m.startswith("Upscaling: tile 2/2") and "step" in m for m in messages), set(messages)
    frame_image = bpy.data.images[status.image_name]
    assert tuple(frame_image.size) == FRAME
    record = images.image_record(frame_image)
    assert (record["width"], record["height"]) == FRAME and record["seed"] == 3
    stage = record["upscale"]
    assert stage["base"]["size"] == [plan.base.width, plan.base.height] and stage["base"]["seed"] == 3
    assert [t["name"] for t in stage["tiles"]] == [t.name for t in plan.tiles]
    assert all(t["boxes"] for t in stage["tiles"])  # the car reaches into both tiles
    assert list((tmp_path / "out" / "Scene" / "results").glob("*_base.png"))  # the base is kept
    assert not list((tmp_path / "out" / "Scene" / "results").glob("*.tiles"))  # tiles gone once written

    # A smaller result, then Upscale on it: the frame at the render size, from that picture.
    set_render_size(scene, SMALL)
    assert bpy.ops.seethrough.generate() == {"FINISHED"}
    status = pump_until_done(timeout_s=300)
    assert status.state == "done", status.message
    small = bpy.data.images[status.image_name]
    assert tuple(small.size) == SMALL and images.image_record(small).get("upscale") is None

    set_render_size(scene, FRAME)
    assert props.history[props.history_index].image == small
    assert bpy.ops.seethrough.upscale_result() == {"FINISHED"}  # Cancel stops it: the tile render here

    def cancel_when_upscaling() -> None:
        if RUNNER.status.state == "upscaling":
            assert bpy.ops.seethrough.cancel() == {"FINISHED"}

    status = pump_until_done(timeout_s=120, on_pump=cancel_when_upscaling)
    assert status.state == "cancelled" and len(props.history) == 2

    assert bpy.ops.seethrough.upscale_result() == {"FINISHED"}
    status = pump_until_done(timeout_s=300)
    assert status.state == "done", status.message
    upscaled = bpy.data.images[status.image_name]
    assert tuple(upscaled.size) == FRAME and upscaled.packed_file is not None
    stage = images.image_record(upscaled)["upscale"]
    assert stage["base"]["size"] == list(SMALL) and len(stage["tiles"]) == 2
    assert props.history[props.history_index].parent == small.name

    # The backplate is the frame itself, at full resolution.
    assert bpy.ops.seethrough.use_as_background() == {"FINISHED"}
    assert scene.camera.data.background_images[0].image == upscaled

    with pytest.raises(RuntimeError, match="already 330x256"):  # nothing to upscale
        bpy.ops.seethrough.upscale_result()
    assert not list((tmp_path / "out" / "Scene" / "results").glob("*.tiles"))  # the cancelled one's too


def test_a_stopped_upscale_resumes_and_an_edit_of_the_frame_edits_its_base(
    addon, tmp_path, tiny_server, monkeypatch
):
    """Cancel after the upscale's first tile, Upscale on the base picture (only the missing tile is made),
    then Regenerate Changed on that frame: its base edited, then upscaled again. One story, so that a
    2-core machine makes four tiles, not six."""
    scene = frame_scene(tmp_path, LAYOUT_WITH_DOG)
    configure(tiny_server, tmp_path / "out")
    set_render_size(scene, FRAME)
    first_tile = threading.Event()

    class HeldAfterTheFirstTile(UpscaleRunner):
        """The upscale's progress callback, held at its first finished tile until Cancel arrives."""

        def __init__(self, *args, on_progress, stop, **kwargs):
            def progress(event):
                on_progress(event)
                if event.generated and event.step is None:
                    first_tile.set()
                    assert stop.wait(60)  # the artist's Cancel, pressed on the main thread

            super().__init__(*args, on_progress=progress, stop=stop, **kwargs)

    def cancel_after_the_first_tile() -> None:
        if first_tile.is_set() and RUNNER.status.state != "cancelling":
            assert bpy.ops.seethrough.cancel() == {"FINISHED"}

    monkeypatch.setattr(generation_jobs, "UpscaleRunner", HeldAfterTheFirstTile)
    assert bpy.ops.seethrough.generate() == {"FINISHED"}
    status = pump_until_done(timeout_s=300, on_pump=cancel_after_the_first_tile)
    monkeypatch.undo()
    assert status.state == "cancelled" and "1 of 2 tiles of the upscale to 330x256 are kept" in status.message

    # The base picture is in the Results list, shown, with the tile it kept beside its frame's name.
    props = scene.seethrough
    assert len(props.history) == 1
    item = props.history[0]
    assert tuple(item.image.size) == (304, 256) and item.change.startswith("base picture: its upscale")
    base = images.image_file(item.image)
    frame_path = frame_path_for(base)
    assert not frame_path.exists() and len(list(tiles_dir_for(frame_path).glob("*.npy"))) == 1

    messages: list[str] = []
    frame = run_and_wait(bpy.ops.seethrough.upscale_result, lambda: messages.append(RUNNER.status.message))
    assert tuple(frame.size) == FRAME and images.image_file(frame) == frame_path
    tiles = images.image_record(frame)["upscale"]["tiles"]
    assert [t["kept"] for t in tiles] == [True, False]  # only the missing tile was generated
    assert any("resumed: 1 of 2 tiles kept" in m for m in messages), set(messages)
    assert "resumed: 1 of 2 tiles kept" in RUNNER.status.message
    assert props.history[1].parent == item.image.name and "resumed" in props.history[1].change
    assert images.image_record(frame)["source"]["base"] == str(base)
    assert not tiles_dir_for(frame_path).exists()  # the frame is written: its tiles go

    # Regenerate Changed on that frame: a new frame at the render size, upscaled from a new base that is
    # an edit of the old one; the earlier files stay as they were.
    before = {p: p.read_bytes() for p in results_dir().iterdir() if p.is_file()}
    scene.objects["a small white dog"].location.x += 0.3
    assert bpy.ops.seethrough.regenerate_changed.poll()
    edited = run_and_wait(bpy.ops.seethrough.regenerate_changed)
    assert tuple(edited.size) == FRAME and edited.packed_file is not None
    record = images.image_record(edited)
    assert record["upscale"]["base"]["size"] == [304, 256] and len(record["upscale"]["tiles"]) == 2
    new_base = Path(record["source"]["base"])
    assert new_base == base_path_for(images.image_file(edited)) and new_base not in before
    new_base_record = read_png_file_record(new_base)
    parent = new_base_record.parent
    assert parent["kind"] == "edit" and parent["file"] == str(base) and new_base_record.seed == 3
    assert parent["sha256"] == hashlib.sha256(before[base]).hexdigest()
    assert "a small white dog: moved" in parent["changes"]
    plan = plan_upscale(*FRAME, seed=3, base_megapixels=BASE_MEGAPIXELS)
    assert new_base_record.layout == base_layout(scene_io.scene_to_layout(scene), plan).to_dict()
    region = read_rgb(region_path_for(new_base))[..., 0] == 255
    old_pixels, new_pixels = read_rgb(base), read_rgb(new_base)
    assert 0 < region.mean() < 0.5 and np.array_equal(new_pixels[~region], old_pixels[~region])
    assert {p: p.read_bytes() for p in before} == before  # the earlier frame and base are untouched

    # The tiles the change does not reach keep the shown frame's pixels: outside the change's reach, the
    # new frame is the old one, byte for byte.
    stage = record["upscale"]
    assert stage["reuses"] == {
        "file": str(frame_path),
        "sha256": hashlib.sha256(before[frame_path]).hexdigest(),
    }
    reuse = frame_reuse(
        read_previous(frame_path), old_pixels, new_pixels,
        plan=replace(plan, strength=props.upscale_strength), frame_layout=Layout.from_dict(record["layout"]),
        steps=record["steps"], guidance=record["guidance"], region=region,
    )  # fmt: skip
    refined = [t["name"] for t in stage["tiles"] if not t.get("reused")]
    assert refined == [t.name for t in reuse.refined(plan)]
    outside = ~reuse.reach
    after, shown = read_rgb(images.image_file(edited)), read_rgb(frame_path)
    assert outside.any() and np.array_equal(after[outside], shown[outside])

    entry = props.history[props.history_index]
    assert entry.image == edited and entry.parent == frame.name
    assert "a small white dog: moved" in entry.change
    assert "its base edited, then upscaled to 330x256" in entry.change
    assert f"of 2 tiles refined, the rest of {frame_path.name} kept" in entry.change
    assert not list(results_dir().glob("*.tiles"))

    # Without its base picture, an edit of the frame says what is missing and what to do.
    new_base.rename(tmp_path / "elsewhere.png")
    bpy.context.view_layer.objects.active = scene.objects["a small white dog"]
    gone = f"its base picture is gone .*{new_base.name}.*put the base picture back"
    with pytest.raises(RuntimeError, match=gone):
        bpy.ops.seethrough.vary_box()


WIDE = (800, 256)  # a 464x256 base and 4 tiles: a tile's own view, then one view cut into the other three
JOB_THREAD, AHEAD_THREAD = "seethrough-generate", "SeeThrough render ahead"


def test_tile_views_render_while_the_base_is_generated(addon, tmp_path, tiny_server, monkeypatch):
    """While the server generates the base, the views of the tiles the upscale will refine render in the
    background: a tile's own, then one view cut into the others; the upscale renders none itself. An
    edit that keeps the camera renders ahead only the views of the tiles its region reaches, which are
    the tiles the upscale refines (the frame before lends the rest). A job cancelled before its upscale
    leaves no tiles folder behind."""
    scene = frame_scene(tmp_path, LAYOUT_WITH_DOG)
    configure(tiny_server, tmp_path / "out")
    set_render_size(scene, WIDE)
    rendered: list[tuple[str, Path]] = []  # (thread, folder) of every background render
    run_render = background_render.run_render

    def recorded(task, cancel, on_tick=None):
        rendered.append((threading.current_thread().name, task.out_dir))
        return run_render(task, cancel, on_tick)

    for module in (background_render, render_ahead, generation_jobs):
        monkeypatch.setattr(module, "run_render", recorded)
    generate_and_save = generation_jobs.generate_and_save

    views_rendered, cancel_pressed, hold_for_cancel = threading.Event(), threading.Event(), threading.Event()

    def slower_than_the_views(*args, **kwargs):
        """A real server takes longer over the base than the views' renders: the base waits for them."""
        deadline = time.monotonic() + 120
        while AHEAD.busy and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the render queue for the event
        views_rendered.set()
        if hold_for_cancel.is_set():  # the artist's Cancel comes before the base
            assert cancel_pressed.wait(60)
        return generate_and_save(*args, **kwargs)

    monkeypatch.setattr(generation_jobs, "generate_and_save", slower_than_the_views)

    def rendered_by(thread: str) -> list[Path]:
        assert {name for name, _ in rendered} <= {JOB_THREAD, AHEAD_THREAD}
        return [folder for name, folder in rendered if name == thread]

    plan = plan_upscale(*WIDE, seed=3, base_megapixels=BASE_MEGAPIXELS)
    assert len(plan.tiles) == 4
    frame = run_and_wait(bpy.ops.seethrough.generate)
    assert tuple(frame.size) == WIDE and len(images.image_record(frame)["upscale"]["tiles"]) == 4
    [base_render] = rendered_by(JOB_THREAD)  # the base's OSCR image; no tile view
    assert base_render.parent.name != VIEWS_FOLDER
    assert [f.name for f in rendered_by(AHEAD_THREAD)] == [plan.tiles[0].name, SHARED_VIEW]

    rendered.clear()
    scene.objects["a small white dog"].location.x += 0.3
    edited = run_and_wait(bpy.ops.seethrough.regenerate_changed)
    tiles = images.image_record(edited)["upscale"]["tiles"]
    refined = [t["name"] for t in tiles if not t.get("reused")]
    assert 0 < len(refined) < len(tiles)
    assert len(rendered_by(JOB_THREAD)) == 1
    assert [f.name for f in rendered_by(AHEAD_THREAD)] == refined[:1] + (
        [SHARED_VIEW] if len(refined) >= 3 else refined[1:]
    )

    # Cancel once the views are rendered, before the base arrives: they go with the job.
    rendered.clear()
    views_rendered.clear()
    hold_for_cancel.set()

    def cancel_once_the_views_are_rendered() -> None:
        if views_rendered.is_set() and not cancel_pressed.is_set():
            assert bpy.ops.seethrough.cancel() == {"FINISHED"}
            cancel_pressed.set()

    assert bpy.ops.seethrough.generate() == {"FINISHED"}
    status = pump_until_done(timeout_s=300, on_pump=cancel_once_the_views_are_rendered)
    assert status.state == "cancelled" and cancel_pressed.is_set()
    assert rendered_by(AHEAD_THREAD) and not list(results_dir().glob("*.tiles"))


def test_the_panel_says_which_tile_views_render():
    """A tile's own view, then the views of the other tiles in one render, then a tile's steps."""
    from blender_addon.generation_jobs import JobStatus, TileStep, _update_status

    status = JobStatus()
    _update_status(status, TileStep("tile_r00_c00", 0, 4, rendering=True))
    assert status.message == "Upscaling: tile 1/4 (tile_r00_c00) rendering its OSCR view"
    _update_status(status, TileStep("tile_r00_c01", 0, 4, rendering=True, views=3))
    assert status.message == "Upscaling: rendering the OSCR views of 3 more tiles in one go"
    _update_status(status, TileStep("tile_r00_c00", 0, 4, 3, 10))
    assert status.message == "Upscaling: tile 1/4 (tile_r00_c00) step 3/10" and status.total == 40


def test_a_server_that_goes_away_during_the_tiles_is_waited_for(addon, tmp_path, monkeypatch):
    """Generate at the render size; the server is killed (SIGKILL) just before the first tile is sent,
    and started again at the same address once the panel says that it went away: the tile is sent to it
    again and the frame is made (before, the job failed and only Upscale resumed it)."""
    scene = frame_scene(tmp_path)
    set_render_size(scene, FRAME)
    scene.seethrough.upscale_to_render = True
    server = tiny_server_process(MAIN_PYTHON, tmp_path / "server.log")
    endpoint = server.endpoint
    killed, run_tile = threading.Event(), UpscaleRunner._run_tile

    def kill_before_the_first_tile(self, client, tile, request, boxes):
        if not killed.is_set():
            server.process.kill()
            server.process.wait()
            killed.set()
        return run_tile(self, client, tile, request, boxes)

    monkeypatch.setattr(UpscaleRunner, "_run_tile", kill_before_the_first_tile)
    states: list[str] = []

    def restart_when_waiting() -> None:
        states.append(RUNNER.status.state)
        if states[-1] == "waiting" and not server.running:
            server.start()  # the artist starts it again; it answers within seconds

    server.start()
    try:
        server.wait_ready()
        configure(endpoint, tmp_path / "out", timeout_s=3.0)
        prefs().retry_s = 120.0
        frame = run_and_wait(bpy.ops.seethrough.generate, on_pump=restart_when_waiting)
    finally:
        server.stop()
    assert killed.is_set() and "waiting" in states
    assert tuple(frame.size) == FRAME and len(images.image_record(frame)["upscale"]["tiles"]) == 2
