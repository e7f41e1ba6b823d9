"""The layout file: boxes with descriptions, a camera and a scene prompt (docs/layout.md).

Blender world frame, metres, Z up. Loading validates every field and names the offending one in
its error, so a broken file never reaches the renderer or the GPU.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LayoutError
from .limits import (
    MAX_BOX_SIDE_M,
    MAX_BOXES,
    MAX_DESCRIPTION_CHARS,
    MAX_LIGHT_SEED,
    frame_side_problem,
)

FORMAT = "seethrough.layout"
VERSION = 1

Vec3 = tuple[float, float, float]

# The keys each object of a layout may hold; any other key is refused with the closest known one, so
# a misspelled optional key ("scene_promt") never silently falls back to its default. `extras` is the
# one free-form object: whatever it holds is carried along unchecked.
LAYOUT_KEYS = ("format", "version", "scene_prompt", "resolution", "camera", "boxes", "light_seed", "extras")
CAMERA_KEYS = (
    "name",
    "location",
    "rotation_euler_deg",
    "lens_mm",
    "sensor_width_mm",
    "shift_x",
    "shift_y",
    "clip_start",
    "clip_end",
)
BOX_KEYS = ("name", "description", "center", "size", "rotation_euler_deg")


@dataclass(frozen=True)
class Camera:
    """A perspective camera with Blender's conventions.

    Euler XYZ rotation in degrees; the camera looks along its local -Z with local +Y up.
    Sensor fit is AUTO: ``sensor_width_mm`` spans the larger image side. ``shift_x`` and
    ``shift_y`` are lens shifts in units of the larger image side, as in Blender.
    """

    location: Vec3
    rotation_euler_deg: Vec3
    lens_mm: float = 50.0
    sensor_width_mm: float = 36.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    clip_start: float = 0.1
    clip_end: float = 1000.0
    name: str = "Camera"


@dataclass(frozen=True)
class Box:
    """One object of the scene as an oriented box.

    ``center`` is the geometric centre, ``size`` the extent along the box's local X, Y, Z
    (width, depth, height); the front of the object is its local +Y.
    """

    description: str
    center: Vec3
    size: Vec3
    rotation_euler_deg: Vec3 = (0.0, 0.0, 0.0)
    name: str = ""


@dataclass(frozen=True)
class Layout:
    scene_prompt: str
    resolution: tuple[int, int]
    camera: Camera
    boxes: tuple[Box, ...]
    light_seed: int | None = None
    extras: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def width(self) -> int:
        return self.resolution[0]

    @property
    def height(self) -> int:
        return self.resolution[1]

    @property
    def descriptions(self) -> list[str]:
        return [box.description for box in self.boxes]

    def to_dict(self) -> dict[str, Any]:
        cam = self.camera
        data: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "scene_prompt": self.scene_prompt,
            "resolution": list(self.resolution),
            "camera": {
                "name": cam.name,
                "location": list(cam.location),
                "rotation_euler_deg": list(cam.rotation_euler_deg),
                "lens_mm": cam.lens_mm,
                "sensor_width_mm": cam.sensor_width_mm,
                "shift_x": cam.shift_x,
                "shift_y": cam.shift_y,
                "clip_start": cam.clip_start,
                "clip_end": cam.clip_end,
            },
            "boxes": [
                {
                    "name": box.name,
                    "description": box.description,
                    "center": list(box.center),
                    "size": list(box.size),
                    "rotation_euler_deg": list(box.rotation_euler_deg),
                }
                for box in self.boxes
            ],
        }
        if self.light_seed is not None:
            data["light_seed"] = self.light_seed
        if self.extras:
            data["extras"] = self.extras
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: Any) -> Layout:
        return _parse_layout(data)


def load_layout(path: str | Path) -> Layout:
    """Read and validate a layout .json file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LayoutError("", f"layout file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LayoutError("", f"cannot read layout file {path}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LayoutError(
            "", f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    return _parse_layout(data)


# --- validation -------------------------------------------------------------------------------


def _parse_layout(data: Any) -> Layout:
    if not isinstance(data, dict):
        raise LayoutError("", "a layout must be a JSON object")
    if data.get("format") != FORMAT:
        raise LayoutError("format", f'expected "{FORMAT}", got {data.get("format")!r}')
    version = data.get("version")
    if version != VERSION:
        raise LayoutError(
            "version", f"unknown layout version {version!r}; this build reads version {VERSION}"
        )
    _check_keys(data, LAYOUT_KEYS, "", "the layout")
    scene_prompt = _string(data, "scene_prompt", "scene_prompt", allow_empty=True, default="")
    resolution = _resolution(data.get("resolution"))
    if "camera" not in data:
        raise LayoutError("camera", "missing; a layout needs a camera")
    camera = _camera(data["camera"])
    boxes_raw = data.get("boxes")
    if not isinstance(boxes_raw, list):
        raise LayoutError("boxes", "must be a list of boxes")
    if not boxes_raw:
        raise LayoutError("boxes", "the layout has no boxes; add at least one")
    if len(boxes_raw) > MAX_BOXES:
        raise LayoutError("boxes", f"{len(boxes_raw)} boxes; at most {MAX_BOXES} are supported")
    boxes = tuple(_box(raw, f"boxes[{i}]") for i, raw in enumerate(boxes_raw))
    light_seed = data.get("light_seed")
    if light_seed is not None and (
        isinstance(light_seed, bool)
        or not isinstance(light_seed, int)
        or not 0 <= light_seed <= MAX_LIGHT_SEED
    ):
        # Bounded so a .blend (32-bit integer properties) can store it.
        raise LayoutError("light_seed", f"must be an integer in 0..{MAX_LIGHT_SEED}")
    extras = data.get("extras", {})
    if not isinstance(extras, dict):
        raise LayoutError("extras", "must be an object")
    return Layout(scene_prompt, resolution, camera, boxes, light_seed, extras)


def _resolution(raw: Any) -> tuple[int, int]:
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        raise LayoutError("resolution", "must be [width, height]")
    out = []
    for axis, value in zip(("width", "height"), raw, strict=True):
        name = f"resolution ({axis})"
        if isinstance(value, bool) or not isinstance(value, int):
            raise LayoutError("resolution", f"{axis} must be an integer number of pixels, got {value!r}")
        problem = frame_side_problem(value)
        if problem:
            raise LayoutError("resolution", f"{name}: {problem}")
        out.append(value)
    return out[0], out[1]


def _camera(raw: Any) -> Camera:
    if not isinstance(raw, dict):
        raise LayoutError("camera", "must be an object")
    _check_keys(raw, CAMERA_KEYS, "camera", "the camera")
    lens = _number(raw, "lens_mm", "camera.lens_mm", default=50.0)
    if not 1.0 <= lens <= 5000.0:
        raise LayoutError("camera.lens_mm", f"{lens} mm is outside 1..5000 mm")
    sensor = _number(raw, "sensor_width_mm", "camera.sensor_width_mm", default=36.0)
    if not 1.0 <= sensor <= 500.0:
        raise LayoutError("camera.sensor_width_mm", f"{sensor} mm is outside 1..500 mm")
    clip_start = _number(raw, "clip_start", "camera.clip_start", default=0.1)
    clip_end = _number(raw, "clip_end", "camera.clip_end", default=1000.0)
    if not 0.0 < clip_start < clip_end:
        raise LayoutError("camera.clip_start", "must be positive and smaller than camera.clip_end")
    return Camera(
        location=_vec3(raw, "location", "camera.location"),
        rotation_euler_deg=_vec3(raw, "rotation_euler_deg", "camera.rotation_euler_deg"),
        lens_mm=lens,
        sensor_width_mm=sensor,
        shift_x=_number(raw, "shift_x", "camera.shift_x", default=0.0),
        shift_y=_number(raw, "shift_y", "camera.shift_y", default=0.0),
        clip_start=clip_start,
        clip_end=clip_end,
        name=_string(raw, "name", "camera.name", allow_empty=True, default="Camera"),
    )


def _box(raw: Any, where: str) -> Box:
    if not isinstance(raw, dict):
        raise LayoutError(where, "must be an object")
    _check_keys(raw, BOX_KEYS, where, where)
    description = _string(raw, "description", f"{where}.description", allow_empty=False)
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise LayoutError(
            f"{where}.description", f"{len(description)} characters; at most {MAX_DESCRIPTION_CHARS}"
        )
    size = _vec3(raw, "size", f"{where}.size")
    for i, side in enumerate(size):
        if side <= 0.0:
            raise LayoutError(f"{where}.size[{i}]", f"must be positive, got {side}")
        if side > MAX_BOX_SIDE_M:
            raise LayoutError(f"{where}.size[{i}]", f"{side} m is larger than {MAX_BOX_SIDE_M} m")
    return Box(
        description=description,
        center=_vec3(raw, "center", f"{where}.center"),
        size=size,
        rotation_euler_deg=_vec3(raw, "rotation_euler_deg", f"{where}.rotation_euler_deg", default=(0, 0, 0)),
        name=_string(raw, "name", f"{where}.name", allow_empty=True, default=""),
    )


_MISSING = object()


def _check_keys(raw: dict, known: tuple[str, ...], where: str, what: str) -> None:
    """Refuse a key the format does not have, naming the closest known one (a typo is never dropped)."""
    for key in raw:
        if key in known:
            continue
        field = f"{where}.{key}" if where else str(key)
        message = f"unknown key {key!r} in {what}"
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.5)
        if close:
            message += f"; did you mean {close[0]!r}?"
        else:
            message += f"; the keys here are {', '.join(known)}"
            if not where:
                message += " (free-form data goes under 'extras')"
        raise LayoutError(field, message)


def _number(raw: dict, key: str, where: str, default: Any = _MISSING) -> float:
    value = raw.get(key, default)
    if value is _MISSING:
        raise LayoutError(where, "missing")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LayoutError(where, f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise LayoutError(where, f"must be finite, got {value}")
    return float(value)


def _vec3(raw: dict, key: str, where: str, default: Any = _MISSING) -> Vec3:
    value = raw.get(key, default)
    if value is _MISSING:
        raise LayoutError(where, "missing")
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise LayoutError(where, f"must be a list of 3 numbers, got {value!r}")
    items = {str(i): v for i, v in enumerate(value)}
    x, y, z = (_number(items, str(i), f"{where}[{i}]") for i in range(3))
    return (x, y, z)


def _string(raw: dict, key: str, where: str, *, allow_empty: bool, default: Any = _MISSING) -> str:
    value = raw.get(key, default)
    if value is _MISSING:
        raise LayoutError(where, "missing")
    if not isinstance(value, str):
        raise LayoutError(where, f"must be a string, got {value!r}")
    value = value.strip()
    if not value and not allow_empty:
        raise LayoutError(where, 'is empty; describe the object in a few words, e.g. "a red vintage car"')
    return value
