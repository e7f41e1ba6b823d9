"""The target image of a dataset sample: the real assets where the layout's boxes stand, rendered with
Cycles under a randomised sun and sky on a floor of random colour and roughness.

Each box gets an instance of its asset's collection, turned and scaled so that the box fitted to the
asset coincides with the layout's box; the scene is temporary and removed after the render.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import bpy
from mathutils import Euler, Matrix, Vector

from seethrough_core.dataset_scenes import TargetLook
from seethrough_core.layout import Layout

from .. import compat
from ..oscr_scene import TemporaryScene, configure_png_still
from ..render import blender_stdout_silenced
from ..scene_io import add_camera
from .asset_library import AssetLibrary, LoadedAsset

FLOOR_SIZE_M = 400.0  # far beyond any camera's view at the dataset's elevations
VIEW_TRANSFORM = "AgX"  # Blender 4.x's default, as the reference's renders


def render_target(
    layout: Layout,
    asset_ids: list[str],
    library: AssetLibrary,
    look: TargetLook,
    path: str | Path,
    *,
    samples: int,
    quiet: bool = True,
) -> None:
    """Render the target image of a layout to ``path`` (PNG, RGB, the layout's resolution)."""
    path = Path(path)
    partial = path.with_name(f".{path.stem}.partial.png")
    temp = TemporaryScene("SeeThrough dataset target (temporary)")
    try:
        scene = temp.scene
        _configure(scene, layout, samples)
        camera = add_camera(scene, layout.camera)
        temp.own(bpy.data.cameras, camera.data)
        temp.own(bpy.data.objects, camera)
        scene.camera = camera
        _add_world(temp, look)
        _add_sun(temp, look)
        _add_floor(temp, look)
        for i, (box, asset_id) in enumerate(zip(layout.boxes, asset_ids, strict=True)):
            _add_instance(temp, f"Asset {i:03d}", library.get(asset_id), box)
        scene.render.filepath = str(partial)
        with blender_stdout_silenced(quiet):
            bpy.ops.render.render(write_still=True, scene=scene.name)
    finally:
        temp.remove()
    if not partial.is_file():
        raise RuntimeError(f"Blender finished rendering but wrote no image to {partial}")
    os.replace(partial, path)


def _configure(scene: bpy.types.Scene, layout: Layout, samples: int) -> None:
    configure_png_still(scene, layout.resolution, "cycles")
    scene.view_settings.view_transform = VIEW_TRANSFORM
    scene.display_settings.display_device = "sRGB"
    scene.cycles.samples = samples
    scene.cycles.device = "CPU"
    scene.cycles.use_denoising = False  # few samples stay noisy; a denoiser would smear the assets' detail


def _add_world(temp: TemporaryScene, look: TargetLook) -> None:
    world = temp.own(bpy.data.worlds, bpy.data.worlds.new("Dataset sky"))
    if not compat.IS_5X:
        world.use_nodes = True
    background = world.node_tree.nodes.get("Background") or world.node_tree.nodes.new("ShaderNodeBackground")
    background.inputs["Color"].default_value = (*look.sky_color, 1.0)
    background.inputs["Strength"].default_value = look.sky_strength
    temp.scene.world = world


def _add_sun(temp: TemporaryScene, look: TargetLook) -> None:
    sun = temp.own(bpy.data.lights, bpy.data.lights.new("Dataset sun", "SUN"))
    sun.energy = look.sun_strength
    sun.angle = math.radians(look.sun_angle_deg)
    obj = temp.link(bpy.data.objects.new("Dataset sun", sun))
    # A sun shines along its local -Z: tilt it from the zenith down to its elevation, facing its azimuth.
    obj.rotation_euler = Euler(
        (math.radians(90.0 - look.sun_elevation_deg), 0.0, math.radians(look.sun_azimuth_deg + 90.0)), "XYZ"
    )


def _add_floor(temp: TemporaryScene, look: TargetLook) -> None:
    half = FLOOR_SIZE_M / 2.0
    mesh = temp.own(bpy.data.meshes, bpy.data.meshes.new("Dataset floor"))
    mesh.from_pydata(
        [(-half, -half, 0), (half, -half, 0), (half, half, 0), (-half, half, 0)], [], [(0, 1, 2, 3)]
    )
    material, tree = compat.new_node_material("Dataset floor")
    temp.own(bpy.data.materials, material)
    bsdf = tree.nodes.new("ShaderNodeBsdfPrincipled")
    bsdf.inputs["Base Color"].default_value = (*look.floor_color, 1.0)
    bsdf.inputs["Roughness"].default_value = look.floor_roughness
    output = tree.nodes.new("ShaderNodeOutputMaterial")
    tree.links.new(bsdf.outputs["BSDF"], output.inputs["Surface"])
    mesh.materials.append(material)
    temp.link(bpy.data.objects.new("Dataset floor", mesh))


def _add_instance(temp: TemporaryScene, name: str, asset: LoadedAsset, box) -> None:
    """An instance of the asset whose fitted box lands on ``box``: the collection's instance offset is the
    fitted centre, so the empty's transform moves it to the box centre, turned by the yaw difference."""
    obj = temp.link(bpy.data.objects.new(name, None))
    obj.instance_type = "COLLECTION"
    obj.instance_collection = asset.collection
    yaw = math.radians(box.rotation_euler_deg[2] - asset.fit_yaw_deg)
    obj.matrix_world = (
        Matrix.Translation(Vector(box.center)) @ Matrix.Rotation(yaw, 4, "Z") @ Matrix.Scale(asset.scale, 4)
    )
