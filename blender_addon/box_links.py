"""Linked boxes: a box made by Boxes From Selection keeps following its source object.

The layout always reads a linked box from its source as the source is drawn at the current frame
(modifiers, shape keys, armature pose, parents, animation), so `seethrough render`, `seethrough batch
--frames` and the add-on's renders see the box where the object is, with or without the add-on
running. In Blender, handlers also move the box objects themselves after every change and frame
step, so the viewport shows what the layout will be. Unlinking a box keeps it where it is, to edit
by hand.
"""

from __future__ import annotations

import math

import bpy
import numpy as np
from mathutils import Euler

from seethrough_core.box_fitting import FittedBox, fit_box
from seethrough_core.geometry import euler_xyz_matrix, matrix_to_euler_xyz
from seethrough_core.layout import Box

from .box_props import box_objects, get_props
from .object_points import front_direction, world_points

# Keys of a box's `seethrough` properties: the source object's name, whether the box follows it,
# and how it was fitted (upright: yaw only, as the model was trained).
SOURCE_KEY = "source"
LINKED_KEY = "linked"
UPRIGHT_KEY = "upright"
FLIPPED_KEY = "flipped"  # Flip Front on a linked box: its front on the other side of the object
_HALF_TURN = np.diag([-1.0, -1.0, 1.0])
_SAME = 1e-6  # metres / radians under which a refit leaves the box untouched (no update loops)


def link(box_obj: bpy.types.Object, source: bpy.types.Object, upright: bool) -> None:
    props = get_props(box_obj)
    props[SOURCE_KEY], props[LINKED_KEY], props[UPRIGHT_KEY] = source.name, 1, int(upright)


def is_linked(box_obj: bpy.types.Object) -> bool:
    props = get_props(box_obj)
    return props is not None and bool(props.get(LINKED_KEY, 0))


def set_linked(box_obj: bpy.types.Object, linked: bool) -> None:
    get_props(box_obj)[LINKED_KEY] = int(linked)


def source_of(box_obj: bpy.types.Object) -> bpy.types.Object | None:
    """The object a linked box follows; None when unlinked or when the source is gone."""
    if not is_linked(box_obj):
        return None
    return bpy.data.objects.get(str(get_props(box_obj).get(SOURCE_KEY, "")))


def fit_to(
    source: bpy.types.Object, depsgraph: bpy.types.Depsgraph, upright: bool = True
) -> FittedBox | None:
    """The box of an object as drawn now; None when it has no geometry."""
    points = world_points(source, depsgraph)
    return fit_box(points, front_direction(source), yaw_only=upright) if len(points) else None


def linked_box(box_obj: bpy.types.Object, depsgraph: bpy.types.Depsgraph) -> Box | None:
    """The layout box of a linked box object, from its source; None to read the box object itself."""
    source = source_of(box_obj)
    if source is None:
        return None
    upright = bool(get_props(box_obj).get(UPRIGHT_KEY, 1))
    fitted = fit_to(source, depsgraph, upright)
    if fitted is None:
        return None
    props = get_props(box_obj)
    rotation = fitted.rotation_euler_deg
    if props.get(FLIPPED_KEY, 0):  # half a turn about the box's own Z: same extents, front reversed
        rotation = matrix_to_euler_xyz(euler_xyz_matrix(rotation) @ _HALF_TURN)
    return Box(str(props.get("description", "")), fitted.center, fitted.size, rotation, name=box_obj.name)


def depsgraph_for(scene: bpy.types.Scene) -> bpy.types.Depsgraph:
    """The evaluated state of ``scene`` (the context's depsgraph when it is the context's scene)."""
    if bpy.context.scene == scene:
        return bpy.context.evaluated_depsgraph_get()
    depsgraph = scene.view_layers[0].depsgraph
    depsgraph.update()
    return depsgraph


def refit(box_obj: bpy.types.Object, depsgraph: bpy.types.Depsgraph) -> bool:
    """Move a linked box object onto its source as drawn now; True when it moved."""
    box = linked_box(box_obj, depsgraph)
    if box is None:
        return False
    rotation = [math.radians(a) for a in box.rotation_euler_deg]
    now = [*box_obj.location, *box_obj.rotation_euler, *box_obj.scale]
    wanted = [*box.center, *rotation, *box.size]
    if box_obj.parent is None and all(abs(a - b) < _SAME for a, b in zip(now, wanted, strict=True)):
        return False
    box_obj.parent = None  # a linked box lives in world space: its source carries the hierarchy
    box_obj.location = box.center
    box_obj.rotation_mode = "XYZ"
    box_obj.rotation_euler = Euler(rotation, "XYZ")
    box_obj.scale = box.size
    return True


def refit_scene(
    scene: bpy.types.Scene, depsgraph: bpy.types.Depsgraph, sources: set[str] | None = None
) -> int:
    """Refit the scene's linked boxes (only those following ``sources``, when given); how many moved."""
    moved = 0
    for box_obj in box_objects(scene):
        source = source_of(box_obj)
        if source is not None and (sources is None or source.name in sources):
            moved += refit(box_obj, depsgraph)
    return moved


# --- Blender handlers (the add-on registers them) ----------------------------------------------


def _source_names(scene: bpy.types.Scene) -> set[str]:
    return {s.name for s in (source_of(b) for b in box_objects(scene)) if s is not None}


def on_depsgraph_update(scene: bpy.types.Scene, depsgraph: bpy.types.Depsgraph) -> None:
    """After any edit: refit the boxes whose source (or a child of it) changed."""
    sources = _source_names(scene)
    if not sources:
        return
    changed = set()
    for update in depsgraph.updates:
        original = getattr(update.id, "original", None)
        if isinstance(original, bpy.types.Object) and (
            update.is_updated_transform or update.is_updated_geometry
        ):
            changed |= {original.name, *(p.name for p in _parents(original))}
    if changed & sources:
        refit_scene(scene, depsgraph, changed & sources)


def on_frame_change(scene: bpy.types.Scene, depsgraph: bpy.types.Depsgraph | None = None) -> None:
    """On every frame step: an animated blockout drives its boxes."""
    refit_scene(scene, depsgraph or depsgraph_for(scene))


def _parents(obj: bpy.types.Object):
    while obj.parent is not None:
        obj = obj.parent
        yield obj


HANDLERS = (
    (bpy.app.handlers.depsgraph_update_post, on_depsgraph_update),
    (bpy.app.handlers.frame_change_post, on_frame_change),
)


def register_handlers() -> None:
    for handlers, function in HANDLERS:
        if function not in handlers:
            handlers.append(function)


def unregister_handlers() -> None:
    for handlers, function in HANDLERS:
        while function in handlers:
            handlers.remove(function)
