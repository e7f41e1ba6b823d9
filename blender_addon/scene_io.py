"""Converts between a layout and the boxes and camera of a Blender scene.

A box is an ordinary mesh object marked by its ``seethrough`` property group ({"is_box": 1,
"description": ..., "index": ...}); the scene keeps the prompt in ``scene.seethrough``. These are
the ID properties behind the add-on's ``object.seethrough`` / ``scene.seethrough`` pointer
properties, read and written as plain ID properties (box_props.py) so conversion also works in a
bare ``bpy`` with the add-on not registered.

Round trips are exact to the precision Blender stores (float32): values read back are rounded to
1 micrometre, 1e-4 degree and 1e-4 mm, which recovers the decimals a layout file was written with.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import bpy
from mathutils import Euler, Matrix, Vector

from seethrough_core.errors import LayoutError
from seethrough_core.layout import FORMAT as LAYOUT_FORMAT
from seethrough_core.layout import VERSION as LAYOUT_VERSION
from seethrough_core.layout import Box, Camera, Layout

from .box_links import depsgraph_for, is_linked, linked_box
from .box_props import box_objects, get_props, set_props

UNIT_CUBE = [
    (-0.5, -0.5, -0.5),
    (-0.5, -0.5, 0.5),
    (-0.5, 0.5, -0.5),
    (-0.5, 0.5, 0.5),
    (0.5, -0.5, -0.5),
    (0.5, -0.5, 0.5),
    (0.5, 0.5, -0.5),
    (0.5, 0.5, 0.5),
]
UNIT_CUBE_FACES = [(0, 1, 3, 2), (2, 3, 7, 6), (6, 7, 5, 4), (4, 5, 1, 0), (2, 6, 4, 0), (7, 3, 1, 5)]


def _metres(v: float) -> float:
    return round(float(v), 6)


def _degrees(radians: float) -> float:
    return round(math.degrees(radians), 4) + 0.0  # + 0.0 turns -0.0 into 0.0


# --- Blender -> layout ------------------------------------------------------------------------


def scene_to_layout(
    scene: bpy.types.Scene, camera: bpy.types.Object | None = None, *, follow_links: bool = True
) -> Layout:
    """The layout a scene describes; raises LayoutError naming what is missing or wrong.

    ``follow_links=False`` reads linked boxes as their objects stand (the viewport's handlers keep
    them fitted) instead of refitting them to their sources: cheap enough for a panel's redraw."""
    camera = camera or scene.camera
    if camera is None:
        raise LayoutError("camera", f"scene {scene.name!r} has no active camera; add one and make it active")
    if camera.type != "CAMERA":
        raise LayoutError("camera", f"object {camera.name!r} is not a camera")
    props = get_props(scene) or {}
    render = scene.render
    extras = props.get("extras_json")
    data = {
        "format": LAYOUT_FORMAT,
        "version": LAYOUT_VERSION,
        "scene_prompt": str(props.get("scene_prompt", "")),
        "resolution": list(render_size(scene)),
        "camera": _camera_dict(camera, render),
        "boxes": _box_dicts(scene) if follow_links else [_box_dict(obj) for obj in box_objects(scene)],
        "extras": json.loads(extras) if extras else {},
    }
    if "light_seed" in props:
        data["light_seed"] = int(props["light_seed"])
    return Layout.from_dict(data)


def _is_simple(obj: bpy.types.Object) -> bool:
    """True when an object's own channels are its world transform (no parent, no constraints)."""
    return obj.parent is None and not obj.constraints


def _world_transform(obj: bpy.types.Object) -> tuple[Matrix, list[float], list[float]]:
    """World matrix, Euler XYZ rotation in degrees and absolute scale of an object.

    For a plain object the channels are read directly (what the artist typed, not a re-derived
    equivalent, and no need for an up-to-date depsgraph); otherwise from its world matrix.
    """
    if _is_simple(obj):
        matrix = obj.matrix_basis
        if obj.rotation_mode == "XYZ":
            euler = obj.rotation_euler
        else:
            euler = matrix.to_quaternion().to_euler("XYZ")
        scale = [abs(v) for v in obj.scale]
    else:
        matrix = obj.matrix_world
        _, rotation, scale_vec = matrix.decompose()
        euler = rotation.to_euler("XYZ")
        scale = [abs(v) for v in scale_vec]
    return matrix, [_degrees(a) for a in euler], scale


def render_size(scene: bpy.types.Scene) -> tuple[int, int]:
    """The frame the scene renders: its resolution times its percentage."""
    render = scene.render
    scale = render.resolution_percentage / 100.0
    return round(render.resolution_x * scale), round(render.resolution_y * scale)


def _camera_dict(obj: bpy.types.Object, render) -> dict:
    data = obj.data
    matrix, rotation, _ = _world_transform(obj)
    if data.type != "PERSP":
        raise LayoutError(
            "camera", f"camera {obj.name!r} is {data.type.lower()}; only perspective cameras are supported"
        )
    width, height = render.resolution_x, render.resolution_y
    sensor = data.sensor_width
    # Layouts use sensor fit AUTO (the sensor spans the larger side); convert other fits exactly.
    if data.sensor_fit == "HORIZONTAL" and height > width:
        sensor = data.sensor_width * height / width
    elif data.sensor_fit == "VERTICAL":
        sensor = data.sensor_height * max(width, height) / height
    return {
        "name": obj.name,
        "location": [_metres(v) for v in matrix.translation],
        "rotation_euler_deg": rotation,
        "lens_mm": round(data.lens, 4),
        "sensor_width_mm": round(sensor, 4),
        "shift_x": round(data.shift_x, 6),
        "shift_y": round(data.shift_y, 6),
        "clip_start": _metres(data.clip_start),
        "clip_end": _metres(data.clip_end),
    }


def _box_dicts(scene: bpy.types.Scene) -> list[dict]:
    """Every box as the layout has it: a linked box from its source as drawn now (box_links.py)."""
    boxes = box_objects(scene)
    depsgraph = depsgraph_for(scene) if any(is_linked(obj) for obj in boxes) else None
    dicts = []
    for obj in boxes:
        fitted = linked_box(obj, depsgraph) if depsgraph is not None else None
        dicts.append(_box_dict(obj) if fitted is None else _fitted_dict(fitted))
    return dicts


def _fitted_dict(box: Box) -> dict:
    return {
        "name": box.name,
        "description": box.description,
        "center": [_metres(v) for v in box.center],
        "size": [_metres(v) for v in box.size],
        "rotation_euler_deg": [round(float(a), 4) + 0.0 for a in box.rotation_euler_deg],
    }


def _box_dict(obj: bpy.types.Object) -> dict:
    props = get_props(obj)
    if not obj.data.vertices:
        raise LayoutError(f"box {obj.name!r}", "its mesh has no vertices")
    coords = [v.co for v in obj.data.vertices]
    low = Vector([min(c[i] for c in coords) for i in range(3)])
    high = Vector([max(c[i] for c in coords) for i in range(3)])
    matrix, rotation, scale = _world_transform(obj)
    return {
        "name": obj.name,
        "description": str(props.get("description", "")),
        "center": [_metres(v) for v in matrix @ ((low + high) / 2.0)],
        "size": [_metres((high[i] - low[i]) * scale[i]) for i in range(3)],
        "rotation_euler_deg": rotation,
    }


# --- layout -> Blender ------------------------------------------------------------------------


def layout_to_scene(layout: Layout, scene: bpy.types.Scene) -> list[bpy.types.Object]:
    """Create the layout's boxes and camera in ``scene`` and store its prompt; returns the boxes.

    Boxes already in the scene are left alone; the layout's camera becomes the active camera.
    Other keys of the scene's ``seethrough`` group (the add-on's settings) are kept.
    """
    scene.render.resolution_x, scene.render.resolution_y = layout.resolution
    scene.render.resolution_percentage = 100
    # Update the layout's keys only: the add-on keeps its generation settings and history in the
    # same property group, and importing a layout must not wipe them.
    props = get_props(scene)
    if props is None:
        props = set_props(scene, {})
    props["scene_prompt"] = layout.scene_prompt
    if layout.light_seed is None:
        props.pop("light_seed", None)
    else:
        props["light_seed"] = layout.light_seed
    if layout.extras:
        props["extras_json"] = json.dumps(layout.extras)
    else:
        props.pop("extras_json", None)
    scene.camera = add_camera(scene, layout.camera)
    return [add_box(scene, box, index) for index, box in enumerate(layout.boxes)]


def add_camera(scene: bpy.types.Scene, camera: Camera) -> bpy.types.Object:
    data = bpy.data.cameras.new(camera.name or "Camera")
    data.lens = camera.lens_mm
    data.sensor_width = camera.sensor_width_mm
    data.sensor_fit = "AUTO"
    data.shift_x, data.shift_y = camera.shift_x, camera.shift_y
    data.clip_start, data.clip_end = camera.clip_start, camera.clip_end
    obj = bpy.data.objects.new(camera.name or "Camera", data)
    scene.collection.objects.link(obj)
    obj.location = camera.location
    obj.rotation_mode = "XYZ"
    obj.rotation_euler = Euler([math.radians(a) for a in camera.rotation_euler_deg], "XYZ")
    return obj


BOX_NAME_CHARS = 40  # a box object named after its description keeps this much of it


def name_for_description(description: str) -> str:
    """The object name of a box described so: what the Outliner shows."""
    return " ".join(description.split())[:BOX_NAME_CHARS]


def add_box(scene: bpy.types.Scene, box: Box, index: int) -> bpy.types.Object:
    """A box object: a unit cube mesh scaled to the box size, so scaling it edits the size."""
    name = box.name or name_for_description(box.description)
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(UNIT_CUBE, [], UNIT_CUBE_FACES)
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    scene.collection.objects.link(obj)
    obj.location = box.center
    obj.rotation_mode = "XYZ"
    obj.rotation_euler = Euler([math.radians(a) for a in box.rotation_euler_deg], "XYZ")
    obj.scale = box.size
    set_props(obj, {"is_box": 1, "description": box.description, "index": index})
    return obj


# --- .blend files -----------------------------------------------------------------------------


def open_blend(path: str | Path, scene_name: str | None = None) -> bpy.types.Scene:
    """Open a .blend (replacing the current file in this Blender) and return its scene."""
    path = Path(path)
    if not path.is_file():
        raise LayoutError("", f".blend file not found: {path}")
    try:
        bpy.ops.wm.open_mainfile(filepath=str(path), load_ui=False)
    except RuntimeError as exc:
        raise LayoutError(
            "", f"cannot open {path}: it is not a readable .blend file ({str(exc).strip()})"
        ) from None
    if scene_name is None:
        return bpy.context.scene
    scene = bpy.data.scenes.get(scene_name)
    if scene is None:
        raise LayoutError("", f"{path} has no scene named {scene_name!r}")
    return scene


def load_blend_layout(path: str | Path, scene_name: str | None = None) -> Layout:
    """The layout of a .blend file's scene (the active one unless named)."""
    return scene_to_layout(open_blend(path, scene_name))
