"""The shots of a .blend file: each chosen camera at each frame, as a layout (for `seethrough batch`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import bpy

from seethrough_core.errors import LayoutError
from seethrough_core.layout import Layout

from .scene_io import open_blend, scene_to_layout


@dataclass(frozen=True)
class BlendShot:
    camera: str
    frame: int
    layout: Layout


def read_blend_shots(
    path: Path, camera_mode: str, camera_names: Sequence[str], frames: Sequence[int] | None
) -> list[BlendShot]:
    """Every (camera, frame) shot; ``camera_mode`` is "active", "all" or "names". Raises LayoutError."""
    scene = open_blend(path)
    chosen = _cameras(scene, camera_mode, camera_names)
    shots = []
    for frame in frames if frames is not None else [scene.frame_current]:
        scene.frame_set(frame)  # evaluates animation: boxes and cameras as they are at this frame
        for camera in chosen:
            shots.append(BlendShot(camera.name, frame, scene_to_layout(scene, camera)))
    return shots


def _cameras(scene: bpy.types.Scene, mode: str, names: Sequence[str]) -> list[bpy.types.Object]:
    all_cameras = sorted((o for o in scene.objects if o.type == "CAMERA"), key=lambda o: o.name)
    if mode == "active":
        if scene.camera is None:
            raise LayoutError("camera", f"scene {scene.name!r} has no active camera")
        return [scene.camera]
    if mode == "all":
        if not all_cameras:
            raise LayoutError("camera", f"scene {scene.name!r} has no cameras")
        return all_cameras
    by_name = {o.name: o for o in all_cameras}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise LayoutError(
            "camera", f"no camera named {', '.join(map(repr, missing))}; the scene has {sorted(by_name)}"
        )
    return [by_name[n] for n in names]
