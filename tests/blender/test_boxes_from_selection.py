"""Boxes fitted to the artist's own objects, with real bpy: evaluated geometry, fronts, refusals."""

from __future__ import annotations

import math

import bpy
import numpy as np
import pytest

from blender_addon import box_links, box_props, scene_io
from seethrough_core.geometry import euler_xyz_matrix
from seethrough_core.limits import MAX_BOXES

pytestmark = pytest.mark.each_blender  # fast, and it reads evaluated geometry: worth the 5.2 pass


def select_only(*objects: bpy.types.Object) -> None:
    for other in bpy.context.view_layer.objects:
        other.select_set(False)
    for obj in objects:
        obj.select_set(True)
    bpy.context.view_layer.objects.active = objects[0] if objects else None


def fitted_boxes() -> list:
    return [scene_io._box_dict(obj) for obj in box_props.box_objects(bpy.context.scene)]


def vertices(obj: bpy.types.Object) -> np.ndarray:
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    local = np.array([v.co[:] for v in mesh.vertices])
    evaluated.to_mesh_clear()
    matrix = np.array(obj.matrix_world)
    return local @ matrix[:3, :3].T + matrix[:3, 3]


def contains(box: dict, points: np.ndarray, tolerance: float = 1e-4) -> bool:
    local = (points - np.asarray(box["center"])) @ euler_xyz_matrix(box["rotation_euler_deg"])
    return bool((np.abs(local) <= np.asarray(box["size"]) / 2 + tolerance).all())


def test_a_turned_stretched_cube_gives_exactly_its_box(addon):
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(2.0, -1.0, 0.9), rotation=(0, 0, math.radians(35)))
    cube = bpy.context.active_object
    cube.name = "Red_Vintage_Car.001"
    cube.scale = (2.0, 0.8, 1.8)
    select_only(cube)
    assert bpy.ops.seethrough.boxes_from_selection() == {"FINISHED"}
    (box,) = fitted_boxes()
    assert box["description"] == "a red vintage car"  # an article, as a description reads
    np.testing.assert_allclose(box["center"], [2.0, -1.0, 0.9], atol=1e-4)
    np.testing.assert_allclose(box["size"], [2.0, 0.8, 1.8], atol=1e-4)
    # the red side faces the cube's own front (its local -Y): half a turn from the cube
    assert abs(math.remainder(box["rotation_euler_deg"][2] - (35.0 + 180.0), 360.0)) < 1e-4
    active = bpy.context.active_object
    assert box_props.is_box(active) and box_props.get_props(active)["source"] == "Red_Vintage_Car.001"

    assert bpy.ops.seethrough.flip_front() == {"FINISHED"}
    (flipped,) = fitted_boxes()
    assert abs(math.remainder(flipped["rotation_euler_deg"][2] - 35.0, 360.0)) < 1e-4


def test_a_cylinder_is_inside_its_box_and_the_footprint_is_least(addon):
    bpy.ops.mesh.primitive_cylinder_add(vertices=64, radius=0.5, depth=2.0, location=(0, 0, 1))
    cylinder = bpy.context.active_object
    cylinder["seethrough_description"] = "a tall blue vase"
    select_only(cylinder)
    bpy.ops.seethrough.boxes_from_selection()
    (box,) = fitted_boxes()
    assert box["description"] == "a tall blue vase"
    assert contains(box, vertices(cylinder))
    assert box["size"][0] * box["size"][1] <= 1.0 + 1e-4 and box["size"][2] == pytest.approx(2.0, abs=1e-4)


def test_modifiers_and_parents_are_applied(addon):
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(0, 0, 0.5))
    bent = bpy.context.active_object
    bent.scale = (0.3, 0.3, 3.0)
    plain = bent.dimensions.copy()
    deform = bent.modifiers.new("bend", "SIMPLE_DEFORM")
    deform.deform_method, deform.angle = "BEND", math.radians(90)
    bpy.ops.object.empty_add(location=(5.0, 0.0, 0.0))
    parent = bpy.context.active_object
    bent.parent = parent  # the child moves with its parent: world coordinates count
    bpy.context.view_layer.update()
    select_only(bent)
    bpy.ops.seethrough.boxes_from_selection()
    (box,) = fitted_boxes()
    assert contains(box, vertices(bent))
    assert box["center"][0] > 4.0  # where the parent put it
    assert abs(box["size"][2] - plain.z) > 0.1  # the bend changed its shape, and the box with it


def test_an_empty_stands_for_its_children(addon):
    bpy.ops.object.empty_add(location=(0, 0, 0))
    group = bpy.context.active_object
    group.name = "Garden Bench"
    parts = []
    for x in (-1.0, 1.0):
        bpy.ops.mesh.primitive_cube_add(size=0.5, location=(x, 0, 0.25))
        parts.append(bpy.context.active_object)
        parts[-1].parent = group
    select_only(group)
    bpy.ops.seethrough.boxes_from_selection()
    (box,) = fitted_boxes()
    assert box["description"] == "a garden bench"
    assert box["size"][0] == pytest.approx(2.5, abs=1e-4) or box["size"][1] == pytest.approx(2.5, abs=1e-4)
    assert all(contains(box, vertices(part)) for part in parts)


def test_refusals_say_why_and_add_nothing(addon):
    select_only()
    with pytest.raises(RuntimeError, match="select the objects"):
        bpy.ops.seethrough.boxes_from_selection()
    bpy.ops.object.empty_add()
    lonely = bpy.context.active_object
    lonely.name = "Lonely Empty"
    select_only(lonely)
    with pytest.raises(RuntimeError, match='"Lonely Empty" has no geometry'):
        bpy.ops.seethrough.boxes_from_selection()
    cubes = []
    for i in range(MAX_BOXES + 1):
        bpy.ops.mesh.primitive_cube_add(location=(i * 3.0, 0, 0))
        cubes.append(bpy.context.active_object)
    select_only(*cubes)
    with pytest.raises(RuntimeError, match=f"at most {MAX_BOXES}"):
        bpy.ops.seethrough.boxes_from_selection()
    assert fitted_boxes() == []


def layout_boxes() -> list:
    """The boxes as the layout reads them (a linked box from its object, as drawn now)."""
    return [b.__dict__ for b in scene_io.scene_to_layout(bpy.context.scene, camera_for_layout()).boxes]


def camera_for_layout() -> bpy.types.Object:
    scene = bpy.context.scene
    scene.render.resolution_x = scene.render.resolution_y = 512
    scene.render.resolution_percentage = 100
    if scene.camera is None:
        bpy.ops.object.camera_add(location=(0.0, -8.0, 3.0), rotation=(math.radians(70), 0.0, 0.0))
        scene.camera = bpy.context.active_object
    return scene.camera


def linked_cube(location=(0.0, 0.0, 0.5)) -> tuple[bpy.types.Object, bpy.types.Object]:
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=location)
    cube = bpy.context.active_object
    cube.name = "Blockout Crate"
    select_only(cube)
    bpy.ops.seethrough.boxes_from_selection()
    return cube, bpy.context.active_object


def test_a_linked_box_follows_its_object_and_an_unlinked_one_stays(addon):
    camera_for_layout()
    cube, box_obj = linked_cube()
    assert box_links.is_linked(box_obj)
    cube.location = (3.0, 1.0, 0.5)
    cube.rotation_euler.z = math.radians(20)
    cube.scale.x = 2.0
    bpy.context.view_layer.update()
    (box,) = layout_boxes()
    np.testing.assert_allclose(box["center"], [3.0, 1.0, 0.5], atol=1e-4)
    np.testing.assert_allclose(sorted(box["size"]), [1.0, 1.0, 2.0], atol=1e-4)
    # The add-on's depsgraph handler moved the box object too, as after an edit in the viewport.
    assert contains(scene_io._box_dict(box_obj), vertices(cube))
    box_links.unregister_handlers()
    try:
        cube.location.y = -2.0
        bpy.context.view_layer.update()
        assert not contains(scene_io._box_dict(box_obj), vertices(cube))  # no handler: the box stayed
        assert box_links.refit_scene(bpy.context.scene, bpy.context.evaluated_depsgraph_get()) == 1
        assert contains(scene_io._box_dict(box_obj), vertices(cube))
    finally:
        box_links.register_handlers()

    select_only(box_obj)
    assert bpy.ops.seethrough.toggle_link() == {"FINISHED"}
    assert not box_links.is_linked(box_obj)
    cube.location = (-5.0, 0.0, 0.5)
    bpy.context.view_layer.update()
    (box,) = layout_boxes()
    np.testing.assert_allclose(box["center"], [3.0, -2.0, 0.5], atol=1e-4)  # stays where it was
    assert bpy.ops.seethrough.toggle_link() == {"FINISHED"}  # linking again snaps it back
    np.testing.assert_allclose(scene_io._box_dict(box_obj)["center"], [-5.0, 0.0, 0.5], atol=1e-4)


def test_flip_front_on_a_linked_box_survives_refits(addon):
    camera_for_layout()
    cube, box_obj = linked_cube()
    before = layout_boxes()[0]["rotation_euler_deg"][2]
    select_only(box_obj)
    bpy.ops.seethrough.flip_front()
    cube.location.x = 2.0
    bpy.context.view_layer.update()
    (box,) = layout_boxes()
    assert abs(math.remainder(box["rotation_euler_deg"][2] - before - 180.0, 360.0)) < 1e-3
    assert box["center"][0] == pytest.approx(2.0, abs=1e-4)


def test_an_armature_pose_changes_the_box(addon):
    camera_for_layout()
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(0.0, 0.0, 1.0))
    arm_mesh = bpy.context.active_object
    arm_mesh.scale = (0.2, 0.2, 1.0)
    bpy.context.view_layer.update()
    bpy.ops.object.armature_add(location=(0.0, 0.0, 0.5))
    rig = bpy.context.active_object
    arm_mesh.parent = rig
    arm_mesh.matrix_parent_inverse = rig.matrix_world.inverted()
    modifier = arm_mesh.modifiers.new("rig", "ARMATURE")
    modifier.object = rig
    group = arm_mesh.vertex_groups.new(name=rig.data.bones[0].name)
    group.add(list(range(len(arm_mesh.data.vertices))), 1.0, "REPLACE")
    select_only(arm_mesh)
    bpy.ops.seethrough.boxes_from_selection()
    upright = layout_boxes()[0]
    rig.pose.bones[0].rotation_mode = "XYZ"
    rig.pose.bones[0].rotation_euler.x = math.radians(90)  # the bone lays the arm down
    bpy.context.view_layer.update()
    posed = layout_boxes()[0]
    assert upright["size"][2] > 0.9 and posed["size"][2] < 0.5
    assert contains(posed, vertices(arm_mesh))


def test_an_animated_object_drives_its_box_frame_by_frame_in_the_batch(addon, tmp_path):
    from blender_addon.blend_shots import read_blend_shots

    camera_for_layout()
    cube, _ = linked_cube(location=(0.0, 0.0, 0.5))
    cube.keyframe_insert("location", frame=1)
    cube.location.x = 4.5
    cube.keyframe_insert("location", frame=10)
    path = tmp_path / "animated.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    shots = read_blend_shots(path, "active", (), [1, 10])  # what `seethrough batch --frames 1,10` reads
    assert [shot.frame for shot in shots] == [1, 10]
    assert shots[0].layout.boxes[0].center[0] == pytest.approx(0.0, abs=1e-4)
    assert shots[1].layout.boxes[0].center[0] == pytest.approx(4.5, abs=1e-4)
