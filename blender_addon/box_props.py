"""The ``seethrough`` ID property group of objects and scenes, and which objects are boxes.

These are the ID properties behind the add-on's ``object.seethrough`` / ``scene.seethrough`` pointer
properties, read and written as plain ID properties (in the storage compat.prop_storage names for
this Blender), so scene_io and box_links work in a bare ``bpy`` with the add-on not registered.
"""

from __future__ import annotations

import bpy

from . import compat

PROP = "seethrough"


def get_props(id_: bpy.types.ID):
    """The ID's ``seethrough`` group (the add-on's ``object.seethrough`` / ``scene.seethrough``), or None."""
    storage = compat.prop_storage(id_)
    return None if storage is None else storage.get(PROP)


def set_props(id_: bpy.types.ID, values: dict):
    """Replace the ID's ``seethrough`` group; returns it."""
    storage = compat.prop_storage(id_, create=True)
    storage[PROP] = values
    return storage[PROP]


def is_box(obj: bpy.types.Object) -> bool:
    props = get_props(obj)
    return obj.type == "MESH" and props is not None and bool(props.get("is_box", 0))


def box_index(obj: bpy.types.Object, default: int = 1 << 30) -> int:
    return int(get_props(obj).get("index", default))


def box_objects(scene: bpy.types.Scene) -> list[bpy.types.Object]:
    """The scene's boxes in layout order (their stored index, then name)."""
    boxes = [obj for obj in scene.objects if is_box(obj)]
    return sorted(boxes, key=lambda o: (box_index(o), o.name))
