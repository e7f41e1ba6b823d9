"""The add-on from this checkout, enabled as Blender enables it: registration, boxes, layout files,
refusals of bad scenes, and its panels' draw code."""

from __future__ import annotations

import json
import math

import addon_utils
import bpy
import numpy as np
import pytest
from addon_support import ADDON, DrawSelf, FakeServer, RecordingLayout, configure, prefs
from mathutils import Vector

from blender_addon import box_props, scene_io
from blender_addon.templates import load_templates
from seethrough_core.layout import load_layout
from seethrough_core.limits import MAX_BOXES

EXAMPLE = "assets/examples/street.json"
OPERATORS = [
    "add_box", "boxes_from_selection", "flip_front", "remove_box", "import_layout", "export_layout",
    "render_oscr", "generate", "cancel",
    "open_history_item", "use_as_background", "remove_history_item", "start_server", "stop_server",
    "apply_loras",
]  # fmt: skip

pytestmark = pytest.mark.each_blender  # all of authoring, on each tested Blender


def _raise(exc: BaseException) -> None:
    raise exc


def add_camera(location=(0.0, -10.0, 1.6), rotation_deg=(90.0, 0.0, 0.0)) -> bpy.types.Object:
    scene = bpy.context.scene
    camera = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    scene.collection.objects.link(camera)
    camera.location = location
    camera.rotation_euler = [math.radians(a) for a in rotation_deg]
    scene.camera = camera
    scene.render.resolution_x = scene.render.resolution_y = 256
    return camera


def test_register_and_unregister_twice_keeps_the_data(empty_blender):
    for round_ in range(2):
        assert addon_utils.enable(ADDON, default_set=True, handle_error=_raise) is not None
        assert hasattr(bpy.types.Scene, "seethrough") and hasattr(bpy.types.Object, "seethrough")
        for name in OPERATORS:
            assert hasattr(bpy.types, f"SEETHROUGH_OT_{name}"), name
        assert hasattr(bpy.types, "SEETHROUGH_PT_scene") and prefs().server_address.startswith("tcp://")
        if round_ == 0:
            bpy.ops.seethrough.add_box(template="dog", description="a corgi")
            bpy.context.scene.seethrough.steps = 9
        else:  # the ID properties outlived the unregistration and read back through RNA
            box = box_props.box_objects(bpy.context.scene)[0]
            assert box.seethrough.description == "a corgi" and bpy.context.scene.seethrough.steps == 9
        addon_utils.disable(ADDON, default_set=True, handle_error=_raise)
        assert not hasattr(bpy.types.Scene, "seethrough") and not hasattr(bpy.types.Object, "seethrough")
        assert not any(hasattr(bpy.types, f"SEETHROUGH_OT_{name}") for name in OPERATORS)
        assert box_props.get_props(box_props.box_objects(bpy.context.scene)[0])["description"] == "a corgi"


def test_size_templates_cover_the_usual_objects():
    ids = {t.id for t in load_templates()}
    assert {"person", "car", "dog", "cat", "chair", "table", "sofa", "bicycle", "bottle", "tree"} <= ids
    car = next(t for t in load_templates() if t.id == "car")
    assert car.size == (1.8, 4.5, 1.5)  # the front is +Y: a car's length runs along Y


def test_add_box_sizes_places_and_turns_boxes(addon):
    scene = bpy.context.scene
    camera = add_camera()
    scene.cursor.location = (2.0, 3.0, -1.0)  # below the ground: the box still rests on z = 0
    assert bpy.ops.seethrough.add_box(template="car") == {"FINISHED"}
    scene.cursor.location = (0.0, 0.0, 0.75)  # above the ground (a table top): the box stands on it
    bpy.ops.seethrough.add_box(template="bottle", description="a green glass bottle", face_camera=False)

    layout = scene_io.scene_to_layout(scene)
    car, bottle = layout.boxes
    assert (car.description, car.center, car.size) == ("a car", (2.0, 3.0, 0.75), (1.8, 4.5, 1.5))
    assert (bottle.description, bottle.center, bottle.rotation_euler_deg) == (
        "a green glass bottle",
        (0.0, 0.0, 0.9),
        (0.0, 0.0, 0.0),
    )
    # The car's front (+Y) turns towards the camera, about Z only.
    yaw = math.radians(car.rotation_euler_deg[2])
    front = Vector((-math.sin(yaw), math.cos(yaw), 0.0))
    to_camera = (camera.location - Vector(car.center)).to_2d().to_3d().normalized()
    assert car.rotation_euler_deg[:2] == (0.0, 0.0) and front.dot(to_camera) > 0.999

    # The viewport look: translucent faces coloured by role, the front red, the wireframe on.
    obj = box_props.box_objects(scene)[0]
    assert obj.show_wire and obj.hide_render
    by_normal = {
        tuple(round(c) for c in p.normal): obj.data.materials[p.material_index] for p in obj.data.polygons
    }
    assert by_normal[(0, 1, 0)].name == "SeeThrough Box Front"
    assert tuple(by_normal[(0, 1, 0)].diffuse_color)[:3] == (1.0, 0.0, 0.0)
    assert tuple(by_normal[(-1, 0, 0)].diffuse_color)[:3] == (0.0, 0.0, 1.0)
    assert tuple(by_normal[(0, 0, 1)].diffuse_color)[:3] == (0.0, 1.0, 0.0)
    assert 0.0 < by_normal[(0, 1, 0)].diffuse_color[3] < 1.0

    # Non-uniform scale and rotation are the layout's size and rotation, exactly.
    obj.scale = (2.0, 5.0, 1.25)
    obj.rotation_euler = (0.0, 0.0, math.radians(-30.0))
    edited = scene_io.scene_to_layout(scene).boxes[0]
    assert edited.size == (2.0, 5.0, 1.25) and edited.rotation_euler_deg == (0.0, 0.0, -30.0)


def test_box_limit_and_removal_renumbers(addon):
    scene = bpy.context.scene
    for i in range(MAX_BOXES):
        bpy.ops.seethrough.add_box(template="cube", description=f"box {i}")
    with pytest.raises(RuntimeError, match=f"at most {MAX_BOXES} boxes"):
        bpy.ops.seethrough.add_box(template="cube")
    assert bpy.ops.seethrough.remove_box(name="box 1") == {"FINISHED"}
    boxes = box_props.box_objects(scene)
    assert [b.seethrough.description for b in boxes[:3]] == ["box 0", "box 2", "box 3"]
    assert [b.seethrough.index for b in boxes] == list(range(MAX_BOXES - 1))
    assert "box 1" not in bpy.data.meshes


def test_layout_json_round_trips_through_import_and_export(addon, tmp_path):
    scene = bpy.context.scene
    scene.seethrough.steps = 7  # the add-on's own settings survive an import
    bpy.ops.seethrough.add_box(template="cat")  # replaced by the import
    assert bpy.ops.seethrough.import_layout(filepath=EXAMPLE) == {"FINISHED"}
    assert len(box_props.box_objects(scene)) == 4 and scene.seethrough.steps == 7
    assert all(len(b.data.materials) == 3 for b in box_props.box_objects(scene))
    assert scene.seethrough.scene_prompt == load_layout(EXAMPLE).scene_prompt

    exported = tmp_path / "out.json"
    assert bpy.ops.seethrough.export_layout(filepath=str(exported)) == {"FINISHED"}
    original = load_layout(EXAMPLE)
    assert load_layout(exported).to_dict() == original.to_dict()
    assert exported.read_text(encoding="utf-8") == original.to_json()

    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "seethrough.layout", "version": 1, "resolution": [9000, 256]}')
    with pytest.raises(RuntimeError, match="outside 16..8192"):
        bpy.ops.seethrough.import_layout(filepath=str(broken))
    assert len(box_props.box_objects(scene)) == 4  # nothing was touched


def test_bad_scenes_are_refused_before_anything_is_sent(addon, tmp_path):
    scene = bpy.context.scene
    server = FakeServer()
    try:
        configure(server.address, tmp_path)
        with pytest.raises(RuntimeError, match="no active camera"):
            bpy.ops.seethrough.generate()
        add_camera()
        with pytest.raises(RuntimeError, match="no SeeThrough boxes"):
            bpy.ops.seethrough.generate()
        bpy.ops.seethrough.add_box(template="dog")
        box = box_props.box_objects(scene)[0]
        box.seethrough.description = "   "
        with pytest.raises(RuntimeError, match='box "a dog" has no description'):
            bpy.ops.seethrough.generate()
        box.seethrough.description = "a dog"
        box.scale.z = 0.0
        with pytest.raises(RuntimeError, match=r'box "a dog": its height \(local Z\) must be positive'):
            bpy.ops.seethrough.generate()
        box.scale.z = 0.6
        scene.render.resolution_x = 264
        scene.seethrough.upscale_to_render = False  # the model's own sizes (on: upscaled to any size)
        with pytest.raises(RuntimeError, match="not a multiple of 16"):
            bpy.ops.seethrough.generate()
        scene.render.resolution_x = 9000  # beyond what even an upscale makes
        scene.seethrough.upscale_to_render = True
        with pytest.raises(RuntimeError, match="9000 px is outside"):
            bpy.ops.seethrough.generate()
        scene.render.resolution_x = 256
        prefs().server_address = f"http://127.0.0.1:{server.port}"
        with pytest.raises(RuntimeError, match="speaks ZeroMQ, not http"):
            bpy.ops.seethrough.generate()
        assert server.received == []  # nothing reached the server
        assert not (tmp_path / "Scene").exists()  # and nothing was rendered
    finally:
        server.close()


def test_panels_and_lists_draw(addon, tmp_path):
    from blender_addon import preferences, ui

    scene = bpy.context.scene
    add_camera()
    bpy.ops.seethrough.import_layout(filepath=EXAMPLE, replace_boxes=True)
    bpy.context.view_layer.objects.active = box_props.box_objects(scene)[1]
    item = scene.seethrough.history.add()
    item.name, item.image = "earlier", bpy.data.images.new("earlier", 8, 8)
    scene.seethrough.history_index = 0

    log: list[str] = []
    for panel in (ui.SEETHROUGH_PT_scene, ui.SEETHROUGH_PT_boxes, ui.SEETHROUGH_PT_generate):
        panel.draw(DrawSelf(RecordingLayout(log)), bpy.context)
    for panel in (ui.SEETHROUGH_PT_results, ui.SEETHROUGH_PT_server):
        panel.draw(DrawSelf(RecordingLayout(log)), bpy.context)
    assert {
        "operator:seethrough.add_box",
        "list:SEETHROUGH_UL_boxes",
        "operator:seethrough.remove_box",
    } <= set(log)
    assert {"operator:seethrough.generate", "list:SEETHROUGH_UL_history"} <= set(log)

    # Clicking a row selects that box; selecting a box moves the row.
    first = box_props.box_objects(scene)[0]
    scene.seethrough.box_index = list(scene.objects).index(first)
    assert bpy.context.view_layer.objects.active == first and first.select_get()
    assert scene.seethrough.box_index == list(scene.objects).index(first)

    # The box list shows boxes only, in layout order.
    flags, order = ui.SEETHROUGH_UL_boxes.filter_items(DrawSelf(None), bpy.context, scene, "objects")
    shown = sorted((order[i], obj.name) for i, obj in enumerate(scene.objects) if flags[i])
    assert [name for _, name in shown] == [b.name for b in box_props.box_objects(scene)]
    row = RecordingLayout(log)
    ui.SEETHROUGH_UL_boxes.draw_item(
        DrawSelf(row), bpy.context, row, scene, box_props.box_objects(scene)[0], 0, None, ""
    )

    # An http:// address is explained in the preferences.
    prefs().server_address = "http://localhost:5555"
    log.clear()
    preferences.SEETHROUGH_AP_preferences.draw(DrawSelf(RecordingLayout(log), prefs()), bpy.context)
    problem = " ".join(line for line in log if line.startswith("label:"))
    assert "ZeroMQ" in problem and "not http" in problem and "tcp://localhost:5555" in problem


def test_import_layout_restores_the_scene_and_settings_of_a_result_png(addon, tmp_path):
    from seethrough_core.png import write_png
    from seethrough_core.record import GenerationRecord

    layout = load_layout(EXAMPLE)
    record = GenerationRecord(
        prompt="", scene_prompt=layout.scene_prompt, descriptions=layout.descriptions, seed=1234, steps=9,
        guidance=2.5, width=layout.width, height=layout.height, model={}, lora=None, is_noise=True,
        call_ids=[], timings={}, layout=layout.to_dict(),
    )  # fmt: skip
    result = tmp_path / "result.png"
    write_png(result, np.zeros((8, 8, 3), np.uint8), text=record.png_text())
    scene = bpy.context.scene
    assert scene.seethrough.random_seed
    assert bpy.ops.seethrough.import_layout(filepath=str(result)) == {"FINISHED"}
    assert len(scene_io.box_objects(scene)) == len(layout.boxes)
    assert scene_io.scene_to_layout(scene).to_dict() == layout.to_dict()
    props = scene.seethrough
    assert (props.seed, props.random_seed, props.steps) == (1234, False, 9)
    assert props.guidance == pytest.approx(2.5)

    plain = tmp_path / "plain.png"
    write_png(plain, np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(RuntimeError, match="no SeeThrough generation record"):
        bpy.ops.seethrough.import_layout(filepath=str(plain))


def test_import_layout_names_a_misspelled_key(addon, tmp_path):
    data = load_layout(EXAMPLE).to_dict()
    data["boxes"][0]["rotation"] = data["boxes"][0].pop("rotation_euler_deg")
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps(data))
    with pytest.raises(
        RuntimeError, match=r"unknown key 'rotation' in boxes\[0\]; did you mean 'rotation_euler_deg'"
    ):
        bpy.ops.seethrough.import_layout(filepath=str(typo))
    assert not scene_io.box_objects(bpy.context.scene)


def test_a_box_is_renamed_when_its_description_changes(addon):
    add_camera()
    bpy.ops.seethrough.add_box(template="cat", description="a grey cat")
    box = bpy.context.active_object
    assert box.name == "a grey cat"
    box.seethrough.description = "a small brown dog"
    assert box.name == "a small brown dog" and box.data.name == "a small brown dog"
    assert scene_io.scene_to_layout(bpy.context.scene).boxes[0].description == "a small brown dog"
