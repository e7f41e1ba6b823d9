"""Reads the shots of one input: each chosen camera at each chosen frame, as a layout."""

from __future__ import annotations

from pathlib import Path

import bpy

from seethrough_core.errors import LayoutError
from seethrough_core.layout import load_layout

from ..scene_io import open_blend, scene_to_layout
from .inputs import CameraChoice
from .plan import Shot

JSON_FRAME = 1  # a layout file is a still: its one shot is numbered like Blender's first frame


def read_shots(path: Path, output_name: str, cameras: CameraChoice, frames: list[int] | None) -> list[Shot]:
    """Every (camera, frame) shot of a .blend or .json input; raises LayoutError with the reason."""
    if path.suffix.lower() == ".json":
        layout = load_layout(path)
        if cameras.mode == "names" and layout.camera.name not in cameras.names:
            raise LayoutError(
                "camera", f"the layout's camera is {layout.camera.name!r}, not one of {list(cameras.names)}"
            )
        return [Shot(path, output_name, layout.camera.name, JSON_FRAME, layout)]

    scene = open_blend(path)
    chosen = _cameras(scene, cameras)
    shots = []
    for frame in frames if frames is not None else [scene.frame_current]:
        scene.frame_set(frame)  # evaluates animation: boxes and cameras as they are at this frame
        for camera in chosen:
            layout = scene_to_layout(scene, camera)
            shots.append(Shot(path, output_name, camera.name, frame, layout))
    return shots


def _cameras(scene: bpy.types.Scene, choice: CameraChoice) -> list[bpy.types.Object]:
    all_cameras = sorted((o for o in scene.objects if o.type == "CAMERA"), key=lambda o: o.name)
    if choice.mode == "active":
        if scene.camera is None:
            raise LayoutError("camera", f"scene {scene.name!r} has no active camera")
        return [scene.camera]
    if choice.mode == "all":
        if not all_cameras:
            raise LayoutError("camera", f"scene {scene.name!r} has no cameras")
        return all_cameras
    by_name = {o.name: o for o in all_cameras}
    missing = [n for n in choice.names if n not in by_name]
    if missing:
        raise LayoutError(
            "camera", f"no camera named {', '.join(map(repr, missing))}; the scene has {sorted(by_name)}"
        )
    return [by_name[n] for n in choice.names]
