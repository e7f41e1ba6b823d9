"""Reads the shots of one input: a layout file's one shot, or a .blend's cameras and frames (with Blender)."""

from __future__ import annotations

from pathlib import Path

from seethrough_core.errors import LayoutError
from seethrough_core.record import load_layout_or_result

from .inputs import CameraChoice
from .plan import Shot

JSON_FRAME = 1  # a layout file is a still: its one shot is numbered like Blender's first frame


def read_shots(path: Path, output_name: str, cameras: CameraChoice, frames: list[int] | None) -> list[Shot]:
    """Every (camera, frame) shot of a .blend, a .json layout or a result PNG (the layout in its record);
    raises LayoutError with the reason."""
    if path.suffix.lower() != ".blend":
        layout = load_layout_or_result(path)
        if cameras.mode == "names" and layout.camera.name not in cameras.names:
            raise LayoutError(
                "camera", f"the layout's camera is {layout.camera.name!r}, not one of {list(cameras.names)}"
            )
        return [Shot(path, output_name, layout.camera.name, JSON_FRAME, layout)]
    from blender_addon.blend_shots import read_blend_shots  # loads Blender

    return [
        Shot(path, output_name, s.camera, s.frame, s.layout)
        for s in read_blend_shots(path, cameras.mode, cameras.names, frames)
    ]
