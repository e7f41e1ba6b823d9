"""How boxes look in the viewport: as in the OSCR image, so the front is visible at a glance.

Translucent faces coloured like the profile's (front +Y red, -X blue, the rest green), brightened
for the viewport, plus the wireframe. Three materials shared by all boxes; each face picks one by
its normal, so boxes whose mesh an artist edited still get the right colours. These materials only
affect the viewport: the OSCR render builds its own scene (oscr_scene.py).
"""

from __future__ import annotations

import bpy

from seethrough_core.oscr_spec import SEETHROUGH3D_V1

from . import compat

VIEWPORT_ALPHA = 0.35
# Face order of the profile: -X, +Y, +X, -Y, -Z, +Z, as (axis, sign).
_FACE_AXES = ((0, -1), (1, 1), (0, 1), (1, -1), (2, -1), (2, 1))
_ROLE_OF_FACE = ("left", "front", "side", "side", "side", "side")
_MATERIAL_NAMES = {
    "front": "SeeThrough Box Front",
    "left": "SeeThrough Box Left",
    "side": "SeeThrough Box Side",
}
_SLOTS = ("left", "front", "side")


def viewport_color(rgb: tuple[float, float, float]) -> tuple[float, float, float, float]:
    """The profile colour scaled so its brightest channel is 1 (0.5 red reads as dull in a viewport)."""
    peak = max(rgb) or 1.0
    r, g, b = (c / peak for c in rgb)
    return (r, g, b, VIEWPORT_ALPHA)


def _role_colors() -> dict[str, tuple[float, float, float, float]]:
    colors = {}
    for role, rgb in zip(_ROLE_OF_FACE, SEETHROUGH3D_V1.face_colors, strict=True):
        colors.setdefault(role, viewport_color(rgb))
    return colors


def box_material(role: str) -> bpy.types.Material:
    """The shared material of a face role, created on first use."""
    name = _MATERIAL_NAMES[role]
    material = bpy.data.materials.get(name)
    if material is not None:
        return material
    color = _role_colors()[role]
    material, tree = compat.new_node_material(name)
    material.diffuse_color = color  # Solid shading: the viewport display colour, alpha included
    material.use_backface_culling = False
    compat.set_alpha_blended(material, show_back_faces=True)
    shader = tree.nodes.new("ShaderNodeBsdfPrincipled")
    shader.inputs["Base Color"].default_value = color
    shader.inputs["Alpha"].default_value = VIEWPORT_ALPHA
    emission, strength = compat.principled_emission_inputs(shader)
    shader.inputs[emission].default_value = color
    shader.inputs[strength].default_value = 0.5
    output = tree.nodes.new("ShaderNodeOutputMaterial")
    tree.links.new(shader.outputs["BSDF"], output.inputs["Surface"])
    return material


def face_role(normal) -> str:
    """Which role a face of the unit box plays, from its local normal (dominant axis)."""
    axis = max(range(3), key=lambda i: abs(normal[i]))
    sign = 1 if normal[axis] > 0 else -1
    return _ROLE_OF_FACE[_FACE_AXES.index((axis, sign))]


def style_box(obj: bpy.types.Object) -> None:
    """Give a box object the OSCR look: per-face materials, wireframe, translucency."""
    mesh = obj.data
    mesh.materials.clear()
    for role in _SLOTS:
        mesh.materials.append(box_material(role))
    for polygon in mesh.polygons:
        polygon.material_index = _SLOTS.index(face_role(polygon.normal))
    obj.show_wire = True
    obj.show_all_edges = True
    obj.color = (1.0, 1.0, 1.0, VIEWPORT_ALPHA)
    # A layout helper, like an empty: kept out of the artist's own renders (OSCR builds its own scene).
    obj.hide_render = True
