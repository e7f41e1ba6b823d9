"""Layouts to Blender scenes and back, through real .blend files."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import bpy
import pytest
from mathutils import Euler

from blender_addon.box_props import box_objects
from blender_addon.scene_io import add_box, layout_to_scene, load_blend_layout, scene_to_layout
from seethrough_core.errors import LayoutError
from seethrough_core.layout import Box, Layout, load_layout

EXAMPLE = "assets/examples/street.json"


@pytest.mark.each_blender
def test_layout_to_blend_and_back_is_lossless(empty_blender, tmp_path):
    layout = load_layout(EXAMPLE)
    data = layout.to_dict()
    data["light_seed"] = 12345
    data["extras"] = {"shot": "A-12"}
    data["camera"]["shift_x"] = 0.125
    data["boxes"][1]["rotation_euler_deg"] = [5.5, -3.25, -70.0]
    layout = Layout.from_dict(data)

    layout_to_scene(layout, bpy.context.scene)
    path = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.read_factory_settings(use_empty=True)

    loaded = load_blend_layout(path)
    assert loaded.to_dict() == layout.to_dict()


@pytest.mark.each_blender
def test_blend_to_layout_and_back_keeps_every_object(empty_blender):
    scene = bpy.context.scene
    layout_to_scene(load_layout(EXAMPLE), scene)
    car = box_objects(scene)[0]
    # An artist edits with the usual tools: non-uniform scale, rotation, a move.
    car.scale = (2.0, 4.0, 1.25)
    car.rotation_euler = Euler((0.0, 0.0, math.radians(-15.0)))
    car.location.x += 0.5
    first = scene_to_layout(scene)
    assert first.boxes[0].size == (2.0, 4.0, 1.25)
    assert first.boxes[0].rotation_euler_deg == (0.0, 0.0, -15.0)

    other = bpy.data.scenes.new("copy")
    layout_to_scene(first, other)
    second = scene_to_layout(other)

    def without_names(layout):  # Blender renames the copies' objects in the same file
        data = layout.to_dict()
        for item in [data["camera"], *data["boxes"]]:
            item.pop("name")
        return data

    assert without_names(second) == without_names(first)
    for a, b in zip(box_objects(scene), box_objects(other), strict=True):
        assert tuple(a.location) == tuple(b.location) and tuple(a.scale) == tuple(b.scale)
        assert tuple(a.rotation_euler) == tuple(b.rotation_euler)


@pytest.mark.each_blender
def test_parented_and_edited_boxes_use_world_geometry(empty_blender):
    scene = bpy.context.scene
    layout_to_scene(load_layout(EXAMPLE), scene)
    box = add_box(scene, Box("a crate", (0.0, 0.0, 0.0), (1.0, 2.0, 3.0), (0.0, 0.0, 30.0)), 9)
    parent = bpy.data.objects.new("rig", None)
    scene.collection.objects.link(parent)
    parent.location = (1.0, 2.0, 0.5)
    parent.rotation_euler = Euler((0.0, 0.0, math.radians(60.0)))
    parent.scale = (2.0, 2.0, 2.0)
    box.parent = parent
    bpy.context.view_layer.update()
    crate = scene_to_layout(scene).boxes[-1]
    assert crate.size == pytest.approx((2.0, 4.0, 6.0), abs=1e-5)
    assert crate.rotation_euler_deg == pytest.approx((0.0, 0.0, 90.0), abs=1e-3)
    assert crate.center == pytest.approx((1.0, 2.0, 0.5), abs=1e-5)


def test_scene_without_camera_is_refused(empty_blender):
    scene = bpy.context.scene
    layout_to_scene(load_layout(EXAMPLE), scene)
    scene.camera = None
    with pytest.raises(LayoutError) as info:
        scene_to_layout(scene)
    assert info.value.field == "camera"


def test_zero_size_box_is_refused_with_its_field(empty_blender):
    scene = bpy.context.scene
    layout_to_scene(load_layout(EXAMPLE), scene)
    box_objects(scene)[2].scale.z = 0.0
    with pytest.raises(LayoutError) as info:
        scene_to_layout(scene)
    assert info.value.field == "boxes[2].size[2]"


def test_broken_blend_gives_a_clear_error(empty_blender, tmp_path):
    broken = tmp_path / "broken.blend"
    broken.write_bytes(b"BLENDER-v404" + b"\x00garbage" * 100)
    with pytest.raises(LayoutError, match="not a readable .blend"):
        load_blend_layout(broken)
    with pytest.raises(LayoutError, match="not found"):
        load_blend_layout(tmp_path / "missing.blend")


@pytest.mark.slow
def test_cli_renders_a_blend_file(empty_blender, tmp_path):
    layout = Layout.from_dict({**load_layout(EXAMPLE).to_dict(), "resolution": [256, 256]})
    layout_to_scene(layout, bpy.context.scene)
    blend = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "seethrough", "render", str(blend), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert (out / "oscr.png").is_file()
    assert len(list((out / "masks").glob("amodal_*.png"))) == 4
    assert Layout.from_dict(json.loads((out / "layout.json").read_text())).to_dict() == layout.to_dict()
    assert "a red vintage car" in run.stdout


def test_cli_names_the_bad_field(tmp_path):
    bad = json.loads(open(EXAMPLE).read())
    bad["boxes"][0]["size"][0] = -1
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    run = subprocess.run(
        [sys.executable, "-m", "seethrough", "render", str(path), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "boxes[0].size[0]" in run.stderr
    assert not (tmp_path / "o").exists()
