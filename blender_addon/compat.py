"""The one place that knows how Blender 4.5 LTS .. 5.2 LTS differ in the API we use.

Everything else calls these helpers, so supporting the next release means editing this file only. What
differs in 5.x for us: Eevee's engine identifier, Material.use_nodes (deprecated, always on) and where
bpy.props data lives (bl_system_properties_get). Checked against the RNA of bpy 4.5.15 and 5.2.3; the
5.2 test pass fails on any deprecated call.
"""

from __future__ import annotations

import bpy

BLENDER_VERSION: tuple[int, int, int] = tuple(bpy.app.version)  # type: ignore[assignment]
IS_5X = BLENDER_VERSION >= (5, 0, 0)

ENGINES = {
    "cycles": "CYCLES",
    "eevee": "BLENDER_EEVEE" if IS_5X else "BLENDER_EEVEE_NEXT",
    "workbench": "BLENDER_WORKBENCH",
}


def engine_id(name: str) -> str:
    """Blender's engine identifier for 'cycles', 'eevee' or 'workbench'."""
    try:
        return ENGINES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown render engine {name!r}; choose one of: {', '.join(ENGINES)}") from None


def set_alpha_blended(material: bpy.types.Material, *, show_back_faces: bool) -> None:
    """Alpha-blended transparency for Eevee (Cycles always honours alpha).

    The names since 4.2; 5.x still has blend_method and show_transparent_back, deprecated.
    """
    material.surface_render_method = "BLENDED"
    material.use_transparency_overlap = show_back_faces


def new_node_material(name: str) -> tuple[bpy.types.Material, bpy.types.NodeTree]:
    """A material whose node tree is empty and in use (5.0 always uses nodes)."""
    material = bpy.data.materials.new(name)
    if not IS_5X:
        material.use_nodes = True
    tree = material.node_tree
    tree.nodes.clear()
    return material, tree


def principled_emission_inputs(node: bpy.types.Node) -> tuple[str, str]:
    """Names of the Principled BSDF's emission colour and strength sockets."""
    color = "Emission Color" if "Emission Color" in node.inputs else "Emission"
    return color, "Emission Strength"


_PROP_PARAMETERS = set(bpy.types.UILayout.bl_rna.functions["prop"].parameters.keys())


def placeholder(text: str) -> dict[str, str]:
    """Keyword arguments giving a text field a grey hint, where this Blender supports one."""
    return {"placeholder": text} if "placeholder" in _PROP_PARAMETERS else {}


def prop_storage(id_: bpy.types.ID, *, create: bool = False):
    """Where an ID keeps the data of properties registered with bpy.props (``scene.seethrough``).

    Up to 4.5 that is the ID's own custom properties (``id["seethrough"]``). 5.0 keeps it apart, in
    ``bl_system_properties_get()``, and copies old files' custom properties there on load. Returns
    None when 5.0 has no storage yet and ``create`` is false.
    """
    if hasattr(id_, "bl_system_properties_get"):
        return id_.bl_system_properties_get(do_create=create)
    return id_
