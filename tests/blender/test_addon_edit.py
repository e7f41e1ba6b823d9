"""Regenerate Changed and Vary Box in Blender, against a real tiny server: every pixel outside the
edited region stays the shown result's, byte for byte; the history says which result came from which.
Blender's timers never fire in the bpy module, so the tests drive the add-on's pump themselves."""

from __future__ import annotations

import hashlib
import io
import json
import math
import threading
from pathlib import Path

import bpy
import numpy as np
import pytest
from addon_support import (
    DrawSelf,
    RecordingLayout,
    drawn_generate_panel,
    import_scene,
    prefs,
    pump_until_done,
)
from conftest import LAYOUT_WITH_DOG
from PIL import Image
from reprojection_support import RESAMPLE_TOLERANCE, max_resample_error, resample_through

from blender_addon import box_props, edit_jobs, generation, images, result_edits, scene_io, ui
from blender_addon.generation_jobs import RUNNER
from blender_addon.preferences import settings
from seethrough_core.edit_plan import EditPlanError
from seethrough_core.edit_region import box_region
from seethrough_core.generate_and_save import safe_name
from seethrough_core.geometry import CameraModel
from seethrough_core.layout import Layout
from seethrough_core.record import read_png_record
from seethrough_core.reprojection import rotation_homography

pytestmark = pytest.mark.slow


@pytest.fixture
def shot(addon, tmp_path, tiny_server):
    """LAYOUT_WITH_DOG imported through the add-on, connected to the tiny server, with one result generated
    (seed 5, 2 steps) and shown in the history."""
    scene = import_scene(LAYOUT_WITH_DOG, tmp_path, tiny_server, seed=5)
    props = scene.seethrough
    assert bpy.ops.seethrough.generate() == {"FINISHED"}
    status = pump_until_done()
    assert status.state == "done", status.message
    assert len(props.history) == 1 and props.history_index == 0
    return scene


def packed_rgb(image: bpy.types.Image) -> tuple[bytes, np.ndarray]:
    """The PNG bytes a result carries and its pixels as decoded by Pillow (not by the add-on)."""
    png = bytes(image.packed_file.data)
    with Image.open(io.BytesIO(png)) as decoded:
        return png, np.asarray(decoded.convert("RGB"))


def run_and_wait(operator) -> bpy.types.Image:
    assert operator() == {"FINISHED"}
    status = pump_until_done()
    assert status.state == "done", status.message
    return bpy.data.images[status.image_name]


def drawn_results() -> list[str]:
    log: list[str] = []
    ui.SEETHROUGH_PT_results.draw(DrawSelf(RecordingLayout(log)), bpy.context)
    return log


@pytest.mark.each_blender
def test_regenerate_changed_keeps_every_pixel_outside_the_changed_region(shot):
    first = shot.seethrough.history[0].image
    assert not bpy.ops.seethrough.regenerate_changed.poll()  # nothing changed yet

    shot.objects["a small white dog"].location.x += 0.4
    assert bpy.ops.seethrough.regenerate_changed.poll()
    # The panel's Steps are for Generate: an edit keeps the shown result's, and the panel says so
    assert "Edits keep" not in drawn_generate_panel()
    shot.seethrough.steps = 3
    kept = "Edits keep the shown result's 2 steps and guidance 3.5; the panel's are for Generate"
    assert kept in drawn_generate_panel()
    edited = run_and_wait(bpy.ops.seethrough.regenerate_changed)

    before_png, before = packed_rgb(first)
    _, after = packed_rgb(edited)
    record = read_png_record(bytes(edited.packed_file.data))
    parent = record.parent
    assert parent["sha256"] == hashlib.sha256(before_png).hexdigest() and parent["kind"] == "edit"
    assert parent["image"] == first.name and "a small white dog: moved" in parent["changes"]
    assert record.seed == 5 and record.steps == 2  # the shown result's settings
    assert record.layout == scene_io.scene_to_layout(shot).to_dict()

    # The region saved beside the result: everything outside it is the shown result's, exactly.
    png_path = next(p for p in shot_out(shot).glob("*edit*.png") if not p.stem.endswith("_region"))
    with Image.open(png_path.with_name(f"{png_path.stem}_region.png")) as region_png:
        region = np.asarray(region_png) == 255
    assert 0 < region.mean() < 0.5
    assert np.array_equal(after[~region], before[~region])
    assert not np.array_equal(after[region], before[region])

    history = shot.seethrough.history
    assert len(history) == 2 and history[1].image == edited and history[1].parent == first.name
    assert "a small white dog: moved" in history[1].change
    assert any(first.name in line and "Made from" in line for line in drawn_results())
    assert not bpy.ops.seethrough.regenerate_changed.poll()  # the shown result is now the edit


def test_vary_box_gives_new_noise_inside_that_box_only(shot):
    first = shot.seethrough.history[0].image
    car = shot.objects["a red vintage car"]
    bpy.context.view_layer.objects.active = car
    varied = run_and_wait(bpy.ops.seethrough.vary_box)

    _, before = packed_rgb(first)
    _, after = packed_rgb(varied)
    record = read_png_record(bytes(varied.packed_file.data))
    assert record.seed != 5 and record.parent["kind"] == "variation" and record.parent["box"] == car.name
    layout = scene_io.scene_to_layout(shot)
    region = box_region(layout, box_props.box_objects(shot).index(car), shot.seethrough.edit_margin)
    assert np.array_equal(after[~region], before[~region])
    assert not np.array_equal(after[region], before[region])
    history = shot.seethrough.history
    assert history[1].parent == first.name and history[1].change.startswith(f"new noise in {car.name}")


def test_a_camera_move_past_the_limit_regenerates_the_whole_picture_and_vary_box_refuses(shot):
    first = shot.seethrough.history[0].image
    shot.camera.location.z += 0.5
    bpy.context.view_layer.objects.active = shot.objects["a red vintage car"]
    with pytest.raises(RuntimeError, match="cannot vary the box: .*camera"):
        bpy.ops.seethrough.vary_box()

    regenerated = run_and_wait(bpy.ops.seethrough.regenerate_changed)
    record = read_png_record(bytes(regenerated.packed_file.data))
    # rising 50 cm over this close-up would regenerate ~90% of it, past the default limit (0.5)
    assert record.parent["kind"] == "regeneration" and "camera moved too far" in record.parent["reason"]
    assert record.seed == 5
    assert not list(shot_out(shot).glob("*_region.png"))  # a regeneration has no region
    assert shot.seethrough.history[1].parent == first.name


def test_without_a_result_the_edit_buttons_are_off_and_say_why(addon, tmp_path):
    path = tmp_path / "layout.json"
    path.write_text(json.dumps(LAYOUT_WITH_DOG))
    assert bpy.ops.seethrough.import_layout(filepath=str(path)) == {"FINISHED"}
    assert not bpy.ops.seethrough.regenerate_changed.poll()
    bpy.context.view_layer.objects.active = bpy.context.scene.objects["a red vintage car"]
    assert not bpy.ops.seethrough.vary_box.poll()
    with pytest.raises(RuntimeError, match="pick a generated result in the history first"):
        bpy.ops.seethrough.use_result_settings()


def test_use_its_seed_sets_the_panel_to_make_the_shown_result_again(shot):
    props = shot.seethrough
    props.random_seed, props.seed, props.steps, props.guidance = True, 9, 3, 2.0
    assert bpy.ops.seethrough.use_result_settings() == {"FINISHED"}
    assert (props.random_seed, props.seed, props.steps) == (False, 5, 2)
    assert props.guidance == pytest.approx(
        read_png_record(bytes(shot.seethrough.history[0].image.packed_file.data)).guidance
    )


def test_a_camera_pan_keeps_the_shown_result_reprojected(shot):
    first = shot.seethrough.history[0].image
    props = shot.seethrough
    props.edit_margin, props.reproject_limit = 4, 0.95  # the car fills much of this 256 px picture
    shot.camera.rotation_euler.z += math.radians(2.0)
    edited = run_and_wait(bpy.ops.seethrough.regenerate_changed)

    _, before = packed_rgb(first)
    _, after = packed_rgb(edited)
    record = read_png_record(bytes(edited.packed_file.data))
    parent = record.parent
    assert parent["kind"] == "reprojected" and parent["image"] == first.name and record.seed == 5
    assert parent["reproject_limit"] == pytest.approx(0.95) and parent["changes"] == []
    beside = ("_region", "_reprojected")
    png_path = next(p for p in shot_out(shot).glob("*reprojected*.png") if not p.stem.endswith(beside))
    region = pixels(png_path.with_name(f"{png_path.stem}_region.png")) == 255
    reprojected = pixels(png_path.with_name(f"{png_path.stem}_reprojected.png"))
    assert parent["kept"] == pytest.approx(1 - region.mean(), abs=1e-4) and 0 < region.mean() < 0.95
    # outside the region: the reprojected picture, byte for byte, which is the shown result panned
    assert np.array_equal(after[~region], reprojected[~region])
    old, new = (
        CameraModel(Layout.from_dict(r["layout"]).camera, 256, 256)
        for r in (images.image_record(first), record.to_dict())
    )
    expected, inside = resample_through(before, rotation_homography(old, new))
    assert (~region <= inside).all()
    assert max_resample_error(after, expected, ~region) <= RESAMPLE_TOLERANCE
    assert "reprojected" in shot.seethrough.history[1].change

    # Panning on from the edit: what both kept of the first result is sampled from the first's file
    shot.camera.rotation_euler.z += math.radians(2.0)
    again = read_png_record(bytes(run_and_wait(bpy.ops.seethrough.regenerate_changed).packed_file.data))
    sources, saved_as = again.parent["sources"], str(images.image_file(shot.seethrough.history[2].image))
    assert again.parent["file"] == str(png_path) and saved_as in sources  # each picture by its file
    assert sources[str(images.image_file(first))] > 0.2
    assert sum(sources.values()) == pytest.approx(1, abs=1e-3)


def test_regenerate_changed_is_planned_on_the_jobs_thread_and_blender_is_free_meanwhile(shot, monkeypatch):
    """A camera move's reprojection takes seconds at 1024 px: the operator returns at once, the job's
    thread plans; only what is quick to refuse (nothing changed) is refused on the main thread."""
    planned_on, entered, release = [], threading.Event(), threading.Event()
    plan_edit = edit_jobs.plan_edit

    def gated_plan(*args, **kwargs):
        planned_on.append(threading.current_thread())
        entered.set()
        assert release.wait(60), "the plan was made on the thread that should have released it"
        return plan_edit(*args, **kwargs)

    monkeypatch.setattr(edit_jobs, "plan_edit", gated_plan)
    with pytest.raises(EditPlanError, match="nothing to regenerate"):
        result_edits.regenerate_changed_spec(shot, settings())
    assert planned_on == []

    shot.seethrough.edit_margin, shot.seethrough.reproject_limit = 4, 0.95  # as in the pan test above
    shot.camera.rotation_euler.z += math.radians(2.0)
    assert bpy.ops.seethrough.regenerate_changed() == {"FINISHED"}  # returned with the plan not made
    assert entered.wait(60)
    assert planned_on == [RUNNER.job._thread] and threading.main_thread() not in planned_on
    generation.pump()
    assert RUNNER.status.state == "planning" and RUNNER.status.active
    release.set()
    status = pump_until_done()
    assert status.state == "done", status.message
    record = images.image_record(bpy.data.images[status.image_name])
    assert record["parent"]["kind"] == "reprojected"
    assert "reprojected" in status.image_name and "reprojected" in shot.seethrough.history[1].change


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def shot_out(scene: bpy.types.Scene) -> Path:
    """Where the add-on saved this scene's results."""
    return Path(prefs().output_dir) / safe_name(scene.name) / "results"
