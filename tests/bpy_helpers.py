"""Helpers for Blender tests: reading renders and asking Blender for colour-managed values."""

from __future__ import annotations

import os
import tempfile

import numpy as np
from PIL import Image


def read_rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


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
