"""Checks a scene before anything is rendered or sent, and says what to fix in the artist's terms.

scene_to_layout already refuses every bad scene (no camera, no boxes, an empty description, a zero
size, a bad resolution); this module only rewrites its field paths (``boxes[2].size[2]``) into the
names the artist sees (box "car", its height) and adds where in the UI to fix it.
"""

from __future__ import annotations

import re

import bpy

from seethrough_core.errors import LayoutError
from seethrough_core.layout import Layout

from .box_props import box_objects
from .scene_io import scene_to_layout

_BOX_FIELD = re.compile(r"^boxes\[(\d+)\](?:\.(\w+))?(?:\[(\d)\])?")
_AXES = ("width (local X)", "depth (local Y)", "height (local Z)")


class SceneError(LayoutError):
    """A LayoutError phrased for the artist: ``str()`` is the message alone; ``field`` is kept."""

    def __str__(self) -> str:
        return self.message


def scene_layout(scene: bpy.types.Scene) -> Layout:
    """The scene's layout; SceneError with a message fit for the UI when it cannot be used."""
    try:
        return scene_to_layout(scene)
    except LayoutError as exc:
        raise SceneError(exc.field, explain(scene, exc)) from None


def explain(scene: bpy.types.Scene, exc: LayoutError) -> str:
    field, message = exc.field, exc.message
    if field == "boxes":
        if "no boxes" in message:
            return "the scene has no SeeThrough boxes: add one with Add Box in the SeeThrough sidebar tab"
        return message
    if field == "resolution":
        return f"output size: {message}; set it under Output Size in the SeeThrough tab"
    if field.startswith("camera"):
        return f"{field}: {message}" if field != "camera" else message
    match = _BOX_FIELD.match(field)
    if match is None:
        return str(exc)
    index, key, axis = int(match[1]), match[2], match[3]
    boxes = box_objects(scene)
    name = boxes[index].name if index < len(boxes) else f"#{index}"
    if key == "description" and "is empty" in message:
        return f'box "{name}" has no description: type what it is in the box list, e.g. "a red vintage car"'
    if key == "size" and axis is not None:
        return f'box "{name}": its {_AXES[int(axis)]} {message}; scale it back up'
    return f'box "{name}": {field}: {message}'
