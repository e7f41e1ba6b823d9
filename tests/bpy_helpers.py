"""Helpers for Blender tests: reading renders and asking Blender for colour-managed values."""

from __future__ import annotations

import os
import tempfile

import numpy as np
from PIL import Image


def read_rgb(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def psnr_db(first: np.ndarray, second: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two 8-bit images, in dB (infinite when they are equal)."""
    mse = np.mean((first.astype(np.float64) - second.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def color_managed(scene, linear_rgb) -> np.ndarray:
    """The 8-bit pixel Blender writes for a linear colour under the scene's colour management."""
    import bpy

    image = bpy.data.images.new("expected colour", 4, 4, float_buffer=True)
    try:
        image.pixels.foreach_set(np.tile(np.r_[np.asarray(linear_rgb, float), 1.0], 16).astype(np.float32))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "expected.png")
            image.save_render(path, scene=scene)
            return read_rgb(path)[0, 0].astype(int)
    finally:
        bpy.data.images.remove(image)


def render_reference_mask(layout, box, path) -> np.ndarray:
    """One box's amodal mask rendered the way the SeeThrough3D authors made their training masks: the box
    alone as a 0.5 m cube mesh scaled to its size, its Wireframe modifier on (thickness 0.01, faces
    kept), Workbench with its default 8x anti-aliasing on a transparent film, every pixel of alpha > 0.
    Replaces the current scene's contents."""
    import math

    import bpy

    from blender_addon.scene_io import add_camera
    from seethrough_core.oscr_spec import SEETHROUGH3D_V1 as PROFILE

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.resolution_x, scene.render.resolution_y = layout.resolution
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True
    scene.display.render_aa = "8"
    scene.camera = add_camera(scene, layout.camera)
    bpy.ops.mesh.primitive_cube_add(size=PROFILE.mesh_cube_size, location=box.center)
    cube = bpy.context.active_object
    cube.scale = [extent / PROFILE.mesh_cube_size for extent in box.size]
    cube.rotation_euler = [math.radians(angle) for angle in box.rotation_euler_deg]
    wire = cube.modifiers.new("EdgeDelimiter", "WIREFRAME")
    wire.thickness, wire.use_replace = PROFILE.edge_thickness, False
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    return np.asarray(Image.open(path))[:, :, 3] > 0
