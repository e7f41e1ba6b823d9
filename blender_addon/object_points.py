"""The world-space points of a Blender object as it is drawn: modifiers, shape keys, armature pose and
parenting applied (the evaluated depsgraph). An empty counts as its children; a collection instance as
the objects it instances."""

from __future__ import annotations

import bpy
import numpy as np

GEOMETRY_TYPES = {"MESH", "CURVE", "SURFACE", "FONT", "META"}


def fits(obj: bpy.types.Object) -> bool:
    """Objects a box can be fitted to: geometry, or an empty standing for a group of objects."""
    return obj.type in GEOMETRY_TYPES or obj.type == "EMPTY"


def world_points(obj: bpy.types.Object, depsgraph: bpy.types.Depsgraph) -> np.ndarray:
    """N x 3 float64 world-space vertices of ``obj`` (an empty: of its children and instances)."""
    chunks: list[np.ndarray] = []
    if obj.type in GEOMETRY_TYPES:
        chunks.append(_evaluated_vertices(obj.evaluated_get(depsgraph), obj.matrix_world))
    for child in obj.children_recursive:
        if child.type in GEOMETRY_TYPES:
            chunks.append(_evaluated_vertices(child.evaluated_get(depsgraph), child.matrix_world))
    if obj.type == "EMPTY" and obj.instance_type == "COLLECTION":
        for instance in depsgraph.object_instances:
            parent = instance.parent
            if instance.is_instance and parent is not None and parent.original == obj:
                if instance.object.type in GEOMETRY_TYPES:
                    chunks.append(_evaluated_vertices(instance.object, instance.matrix_world))
    chunks = [chunk for chunk in chunks if len(chunk)]
    return np.concatenate(chunks) if chunks else np.zeros((0, 3))


def front_direction(obj: bpy.types.Object) -> np.ndarray:
    """The object's own front in world space: its local -Y (Blender's convention)."""
    rotation = np.array(obj.matrix_world.to_3x3().normalized())
    return rotation @ np.array([0.0, -1.0, 0.0])


def _evaluated_vertices(evaluated: bpy.types.Object, matrix_world) -> np.ndarray:
    mesh = evaluated.to_mesh()
    try:
        local = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", local)
    finally:
        evaluated.to_mesh_clear()
    matrix = np.array(matrix_world, dtype=np.float64)
    return local.reshape(-1, 3).astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
