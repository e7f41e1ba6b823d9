"""Builds the OSCR scene of a layout in a temporary Blender scene, then removes every trace of it.

The user's scene, objects, materials and settings are never touched: the OSCR scene gets its
own camera, boxes, ground, lights and materials, all tracked and deleted when the render is done.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import bpy
from mathutils import Euler, Vector

from seethrough_core.layout import Box, Camera, Layout
from seethrough_core.oscr_spec import OscrProfile, box_edge_colors, ground_center, light_positions

from . import compat

# Polygon order of Blender's cube primitive (-X, +Y, +X, -Y, -Z, +Z) with its vertex winding, so
# face i gets profile.face_colors[i] and the wireframe modifier sees the topology it saw in training.
_CUBE_VERTS = [
    (-1, -1, -1),
    (-1, -1, 1),
    (-1, 1, -1),
    (-1, 1, 1),
    (1, -1, -1),
    (1, -1, 1),
    (1, 1, -1),
    (1, 1, 1),
]
_CUBE_FACES = [(0, 1, 3, 2), (2, 3, 7, 6), (6, 7, 5, 4), (4, 5, 1, 0), (2, 6, 4, 0), (7, 3, 1, 5)]


class TemporaryScene:
    """A scene plus every datablock created for it, removed together by :meth:`remove`."""

    def __init__(self, name: str) -> None:
        self.scene = bpy.data.scenes.new(name)
        self._owned: list[tuple[object, bpy.types.ID]] = []

    def own(self, collection, datablock):
        self._owned.append((collection, datablock))
        return datablock

    def link(self, obj: bpy.types.Object) -> bpy.types.Object:
        self.scene.collection.objects.link(obj)
        return self.own(bpy.data.objects, obj)

    def remove(self) -> None:
        # Objects first, then their data, then the scene: nothing is left with users.
        for collection, datablock in reversed(self._owned):
            try:
                collection.remove(datablock, do_unlink=True)
            except ReferenceError:
                pass  # already gone with a datablock removed before it
        self._owned.clear()
        bpy.data.scenes.remove(self.scene, do_unlink=True)


@contextmanager
def oscr_scene(layout: Layout, profile: OscrProfile, engine: str) -> Iterator[bpy.types.Scene]:
    """A temporary scene set up to render the layout's OSCR image; removed on exit."""
    temp = TemporaryScene("SeeThrough OSCR (temporary)")
    try:
        _configure_render(temp.scene, layout, profile, engine)
        temp.scene.camera = _add_camera(temp, layout.camera)
        _add_ground(temp, layout, profile)
        for i, position in enumerate(light_positions(layout, profile)):
            _add_light(temp, f"OSCR Light {i}", position, profile.light_power_w)
        face_materials = _face_materials(temp, profile)
        for i, (box, edge_rgb) in enumerate(zip(layout.boxes, box_edge_colors(layout, profile), strict=True)):
            _add_box(temp, f"OSCR Box {i:03d}", box, profile, face_materials, edge_rgb)
        yield temp.scene
    finally:
        temp.remove()


def configure_png_still(scene: bpy.types.Scene, resolution: tuple[int, int], engine: str) -> None:
    """Render settings for one opaque 8-bit RGB PNG at ``resolution``, straight from the renderer."""
    render = scene.render
    render.engine = compat.engine_id(engine)
    render.resolution_x, render.resolution_y = resolution
    render.resolution_percentage = 100
    render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    render.film_transparent = False
    render.use_compositing = False
    render.use_sequencer = False
    settings = render.image_settings
    settings.file_format = "PNG"
    settings.color_mode = "RGB"
    settings.color_depth = "8"


def _configure_render(scene: bpy.types.Scene, layout: Layout, profile: OscrProfile, engine: str) -> None:
    scene.world = None  # no world: a black background, as in training
    configure_png_still(scene, layout.resolution, engine)
    scene.view_settings.view_transform = profile.view_transform
    scene.view_settings.look = profile.look
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    scene.display_settings.display_device = "sRGB"
    scene.cycles.samples = profile.samples
    scene.cycles.device = "CPU"
    if hasattr(scene, "eevee"):
        scene.eevee.taa_render_samples = profile.samples


def _add_camera(temp: TemporaryScene, camera: Camera) -> bpy.types.Object:
    data = temp.own(bpy.data.cameras, bpy.data.cameras.new("OSCR Camera"))
    data.type = "PERSP"
    data.lens = camera.lens_mm
    data.sensor_width = camera.sensor_width_mm
    data.sensor_fit = "AUTO"
    data.shift_x = camera.shift_x
    data.shift_y = camera.shift_y
    data.clip_start = camera.clip_start
    data.clip_end = camera.clip_end
    obj = temp.link(bpy.data.objects.new("OSCR Camera", data))
    obj.location = camera.location
    obj.rotation_mode = "XYZ"
    obj.rotation_euler = Euler([math.radians(a) for a in camera.rotation_euler_deg], "XYZ")
    return obj


def _add_ground(temp: TemporaryScene, layout: Layout, profile: OscrProfile) -> None:
    half = profile.ground_size_m / 2.0
    mesh = temp.own(bpy.data.meshes, bpy.data.meshes.new("OSCR Ground"))
    mesh.from_pydata(
        [(-half, -half, 0), (half, -half, 0), (half, half, 0), (-half, half, 0)], [], [(0, 1, 2, 3)]
    )
    # Training used a node-less material, which Cycles shades as a diffuse BSDF of the viewport
    # colour; an explicit Diffuse BSDF node renders the same and exists in every version.
    material, tree = compat.new_node_material("OSCR Ground")
    temp.own(bpy.data.materials, material)
    material.diffuse_color = (*profile.ground_color, 1.0)
    diffuse = tree.nodes.new("ShaderNodeBsdfDiffuse")
    diffuse.inputs["Color"].default_value = (*profile.ground_color, 1.0)
    output = tree.nodes.new("ShaderNodeOutputMaterial")
    tree.links.new(diffuse.outputs["BSDF"], output.inputs["Surface"])
    mesh.materials.append(material)
    obj = temp.link(bpy.data.objects.new("OSCR Ground", mesh))
    center, yaw = ground_center(layout, profile)
    obj.location = (float(center[0]), float(center[1]), 0.0)
    obj.rotation_euler = (0.0, 0.0, yaw)


def _add_light(temp: TemporaryScene, name: str, position, power_w: float) -> None:
    light = temp.own(bpy.data.lights, bpy.data.lights.new(name, "POINT"))
    light.energy = power_w
    light.use_shadow = True
    obj = temp.link(bpy.data.objects.new(name, light))
    obj.location = position


def _face_materials(temp: TemporaryScene, profile: OscrProfile) -> list[bpy.types.Material]:
    materials = []
    for i, rgb in enumerate(profile.face_colors):
        material, tree = compat.new_node_material(f"OSCR Face {i}")
        temp.own(bpy.data.materials, material)
        bsdf = tree.nodes.new("ShaderNodeBsdfPrincipled")
        emission_color, emission_strength = compat.principled_emission_inputs(bsdf)
        bsdf.inputs["Base Color"].default_value = (*rgb, 1.0)
        bsdf.inputs[emission_color].default_value = (*rgb, 1.0)
        bsdf.inputs[emission_strength].default_value = profile.face_emission_strength
        bsdf.inputs["Alpha"].default_value = profile.face_alpha
        output = tree.nodes.new("ShaderNodeOutputMaterial")
        tree.links.new(bsdf.outputs["BSDF"], output.inputs["Surface"])
        compat.set_alpha_blended(material, show_back_faces=False)
        materials.append(material)
    return materials


def _edge_material(temp: TemporaryScene, name: str, rgb) -> bpy.types.Material:
    material, tree = compat.new_node_material(name)
    temp.own(bpy.data.materials, material)
    emission = tree.nodes.new("ShaderNodeEmission")
    emission.inputs["Color"].default_value = (*rgb, 1.0)
    emission.inputs["Strength"].default_value = 1.0
    output = tree.nodes.new("ShaderNodeOutputMaterial")
    tree.links.new(emission.outputs["Emission"], output.inputs["Surface"])
    return material


def _add_box(
    temp: TemporaryScene, name: str, box: Box, profile: OscrProfile, face_materials, edge_rgb
) -> None:
    half = profile.mesh_cube_size / 2.0
    mesh = temp.own(bpy.data.meshes, bpy.data.meshes.new(name))
    mesh.from_pydata([Vector(v) * half for v in _CUBE_VERTS], [], _CUBE_FACES)
    for material in face_materials:
        mesh.materials.append(material)
    edge_material = _edge_material(temp, f"{name} Edges", edge_rgb)
    mesh.materials.append(edge_material)
    for i, polygon in enumerate(mesh.polygons):
        polygon.material_index = i
    mesh.update()
    obj = temp.link(bpy.data.objects.new(name, mesh))
    obj.location = box.center
    obj.rotation_mode = "XYZ"
    obj.rotation_euler = Euler([math.radians(a) for a in box.rotation_euler_deg], "XYZ")
    obj.scale = [side / profile.mesh_cube_size for side in box.size]
    wireframe = obj.modifiers.new("OSCR Edges", "WIREFRAME")
    wireframe.thickness = profile.edge_thickness
    wireframe.use_replace = False
    # Wire geometry takes material index (face index + offset), clamped to the last slot: the edges.
    wireframe.material_offset = len(face_materials)
