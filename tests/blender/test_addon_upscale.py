"""The add-on makes the frame at the scene's render size (docs/upscale.md): Generate above the base size
gives a base picture upscaled in tiles, in one job; Upscale makes a smaller result into the frame. A real
tiny server, real background renders of every tile view; the bpy module never fires timers, so the test
drives the add-on's main-thread pump itself."""

from __future__ import annotations

import json

import bpy
import pytest
from addon_support import DrawSelf, RecordingLayout, configure, pump_until_done
from addon_support import tiny_server as start_tiny_server
from conftest import BASE_LAYOUT, MAIN_PYTHON

from blender_addon import images, ui
from blender_addon.generation_jobs import RUNNER
from seethrough_core.upscale_plan import plan_upscale

pytestmark = pytest.mark.slow

# The smallest sizes that still take both stages, so every render (base, tile views) stays tiny.
BASE_MEGAPIXELS = 0.0625  # 256 x 256: a 330x256 frame is a 304x256 base and 2 tiles of 256 x 256
FRAME = (330, 256)  # 330 is no multiple of 16: the model cannot make this frame directly
SMALL = (256, 256)  # the base size itself: generated in one pass, then upscaled (cropped) to FRAME


def set_render_size(scene: bpy.types.Scene, size: tuple[int, int]) -> None:
    scene.render.resolution_x, scene.render.resolution_y = size
    scene.render.resolution_percentage = 100


def test_generate_and_upscale_give_the_render_size(addon, tmp_path):
    path = tmp_path / "layout.json"
    path.write_text(json.dumps(BASE_LAYOUT))
    assert bpy.ops.seethrough.import_layout(filepath=str(path)) == {"FINISHED"}
    scene = bpy.context.scene
    props = scene.seethrough
    props.random_seed, props.seed, props.steps, props.show_previews = False, 3, 2, False
    props.base_megapixels = BASE_MEGAPIXELS
    plan = plan_upscale(*FRAME, seed=3, base_megapixels=BASE_MEGAPIXELS)
    assert plan.two_stages and len(plan.tiles) == 2

    with start_tiny_server(MAIN_PYTHON, tmp_path / "server.log") as address:
        configure(address, tmp_path / "out")
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
