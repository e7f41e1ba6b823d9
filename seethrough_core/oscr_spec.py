"""The OSCR image profile the released SeeThrough3D checkpoint was trained on.

Every number here comes from ../shared/docs/seethrough3d-reference.md (profile "seethrough3d-v1").
The renderer reads them from this one place; nothing about the look of an OSCR image is written
anywhere else.

The reference renders its training scenes in a fixed world frame: the camera sits on a circle of
radius 6 m around the scene centre (-6, 0, 0), looking along -X. Position colours and lights are
defined in that frame. A user's camera can be anywhere, so we build the same frame around it: its
distance axis is the camera's horizontal viewing direction, its lateral axis points to the
camera's right, heights stay world Z. For a camera placed exactly like the reference's, the frame
is the reference's world frame.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import json
import math
import random
from dataclasses import dataclass

import numpy as np

from .geometry import CameraModel, box_corners
from .layout import Box, Layout


@dataclass(frozen=True)
class OscrProfile:
    name: str
    samples: int  # Cycles samples
    view_transform: str
    look: str
    # Face colours (linear RGB) in the polygon order of Blender's cube: -X, +Y, +X, -Y, -Z, +Z.
    face_colors: tuple[tuple[float, float, float], ...]
    face_alpha: float
    face_emission_strength: float
    # The box mesh is a cube of this edge length scaled up to the box size, as in training; the
    # wireframe thickness is in mesh units, so edges grow with the box exactly as they did there.
    mesh_cube_size: float
    edge_thickness: float
    edge_brightness: float  # HSV value factor applied to the position colour
    # The amodal masks the checkpoint saw: each box rendered alone by Workbench with 8x anti-aliasing
    # through a pixel filter this wide (Blender's default), every pixel of alpha > 0 kept.
    mask_filter_width_px: float
    # The training OSCR images were saved by Blender as JPEG at this quality (4:2:0 chroma, as Blender
    # writes JPEG); the condition goes through the same round trip (None: the pixels as rendered).
    condition_jpeg_quality: int | None
    ground_size_m: float
    ground_color: tuple[float, float, float]
    light_count: int
    light_power_w: float
    light_radius_m: float
    light_cos_polar_range: tuple[float, float]
    light_azimuth_range_deg: tuple[float, float]
    # The reference frame (see the module docstring).
    reference_camera_radius_m: float
    reference_scene_center_x: float
    distance_range: tuple[float, float]  # x range mapped to red 0..1
    lateral_half_width_far: float  # |y| mapped across green at the far end of the distance range
    lateral_half_width_near: float  # ... and at the near end
    height_range: tuple[float, float]  # z range mapped to blue 0..1


_BLUE = (0.0, 0.0, 0.5)
_RED = (0.5, 0.0, 0.0)
_GREEN = (0.0, 0.5, 0.0)

SEETHROUGH3D_V1 = OscrProfile(
    name="seethrough3d-v1",
    samples=32,
    view_transform="AgX",
    look="None",
    face_colors=(_BLUE, _RED, _GREEN, _GREEN, _GREEN, _GREEN),
    face_alpha=0.025,
    face_emission_strength=1.0,
    mesh_cube_size=0.5,
    edge_thickness=0.01,
    edge_brightness=0.10,
    mask_filter_width_px=1.5,
    condition_jpeg_quality=90,
    ground_size_m=50.0,
    ground_color=(0.05, 0.05, 0.05),
    light_count=5,
    light_power_w=700.0,
    light_radius_m=16.0,
    light_cos_polar_range=(0.5, 1.0),
    light_azimuth_range_deg=(-90.0, 90.0),
    reference_camera_radius_m=6.0,
    reference_scene_center_x=-6.0,
    distance_range=(-12.0, -1.0),
    lateral_half_width_far=4.5,
    lateral_half_width_near=0.5,
    height_range=(0.0, 2.5),
)

PROFILES = {SEETHROUGH3D_V1.name: SEETHROUGH3D_V1}
DEFAULT_PROFILE = SEETHROUGH3D_V1.name
# Raised whenever what a render of a layout gives (image or masks) changes for the same profile, so that
# renders kept on disk are not reused. 2: amodal masks grown by the wire, edges bluer above 2.5 m.
RENDER_REVISION = 2


def encode_condition_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of uint8 RGB pixels at ``quality`` with 4:2:0 chroma, as Blender writes JPEG (the
    checkpoint's training OSCR images were saved that way)."""
    from PIL import Image  # the server and the dataset maker need it; the add-on inside Blender never does

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, "JPEG", quality=quality, subsampling=2)
    return buffer.getvalue()


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """uint8 RGB pixels after saving them as JPEG (encode_condition_jpeg) and reading them back."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(encode_condition_jpeg(image, quality))).convert("RGB"))


def get_profile(name: str) -> OscrProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown OSCR profile {name!r}; known: {', '.join(sorted(PROFILES))}") from None


@dataclass(frozen=True)
class ReferenceFrame:
    """The reference's world frame rebuilt around a camera (see the module docstring)."""

    origin: np.ndarray  # world position of the reference frame's origin, on the ground
    distance_axis: np.ndarray  # world direction of reference +X: horizontal, pointing back at the camera
    lateral_axis: np.ndarray  # world direction of reference +Y: the camera's right

    def to_reference(self, point: np.ndarray) -> np.ndarray:
        offset = np.asarray(point, dtype=np.float64) - self.origin
        return np.array([offset @ self.distance_axis, offset @ self.lateral_axis, point[2]])

    def to_world(self, point_ref: np.ndarray) -> np.ndarray:
        x, y, z = point_ref
        horizontal = self.origin + x * self.distance_axis + y * self.lateral_axis
        return np.array([horizontal[0], horizontal[1], z])


def reference_frame(layout: Layout, profile: OscrProfile = SEETHROUGH3D_V1) -> ReferenceFrame:
    cam = CameraModel(layout.camera, layout.width, layout.height)
    forward = cam.forward
    horizontal = np.array([forward[0], forward[1], 0.0])
    if np.linalg.norm(horizontal) < 1e-6:
        # Looking straight down or up: the camera's up vector gives the viewing direction.
        up = cam.rotation[:, 1] * (1.0 if forward[2] < 0 else -1.0)
        horizontal = np.array([up[0], up[1], 0.0])
    horizontal /= np.linalg.norm(horizontal)
    lateral = np.cross(horizontal, [0.0, 0.0, 1.0])
    # The reference camera stands at x = R cos(e) + centre, e = its elevation (pitch below horizontal).
    elevation = math.asin(float(np.clip(-forward[2], -1.0, 1.0)))
    camera_x = profile.reference_camera_radius_m * math.cos(elevation) + profile.reference_scene_center_x
    position = cam.position
    origin = np.array([position[0], position[1], 0.0]) + camera_x * horizontal
    return ReferenceFrame(origin=origin, distance_axis=-horizontal, lateral_axis=lateral)


def position_color(
    point_ref: np.ndarray, profile: OscrProfile = SEETHROUGH3D_V1
) -> tuple[float, float, float]:
    """The reference's position colour of a point given in the reference frame."""
    x, y, z = (float(v) for v in point_ref)
    x_lo, x_hi = profile.distance_range
    x_norm = min(max((x - x_lo) / (x_hi - x_lo), 0.0), 1.0)
    half = profile.lateral_half_width_far + x_norm * (
        profile.lateral_half_width_near - profile.lateral_half_width_far
    )
    y_norm = min(max((y + half) / (2.0 * half), 0.0), 1.0)
    z_lo, z_hi = profile.height_range
    z_norm = (z - z_lo) / (z_hi - z_lo)  # not clipped, as in training: edge_color scales it unclipped
    return (x_norm, y_norm, z_norm)


def box_anchor(box: Box) -> np.ndarray:
    """Where a box's colour is measured: below its centre, at its lowest point (its base)."""
    corners = box_corners(box)
    return np.array([box.center[0], box.center[1], corners[:, 2].min()])


def edge_color(position_rgb: tuple[float, float, float], profile: OscrProfile = SEETHROUGH3D_V1):
    """The edge colour: the position colour with its HSV value scaled by the profile's factor, then
    clamped. The position colour goes in unclipped, as in training: its blue (z / 2.5) exceeds 1 above
    2.5 m, so edges there keep getting bluer (blue z / 25 for a box at x, y = 0), up to 1 at 25 m."""
    h, s, v = colorsys.rgb_to_hsv(*position_rgb)
    return colorsys.hsv_to_rgb(h, s, min(max(v * profile.edge_brightness, 0.0), 1.0))


def box_edge_colors(
    layout: Layout, profile: OscrProfile = SEETHROUGH3D_V1
) -> list[tuple[float, float, float]]:
    frame = reference_frame(layout, profile)
    return [
        edge_color(position_color(frame.to_reference(box_anchor(b)), profile), profile) for b in layout.boxes
    ]


def light_seed(layout: Layout) -> int:
    """The layout's own seed if it has one, else a stable hash of its geometry: same layout, same lights."""
    if layout.light_seed is not None:
        return layout.light_seed
    data = layout.to_dict()
    data.pop("extras", None)
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def light_positions(
    layout: Layout, profile: OscrProfile = SEETHROUGH3D_V1
) -> list[tuple[float, float, float]]:
    """Point lights on the upper hemisphere around the scene centre, on the camera's side."""
    rng = random.Random(light_seed(layout))
    frame = reference_frame(layout, profile)
    center = np.array([profile.reference_scene_center_x, 0.0, 0.0])
    lo_az, hi_az = (math.radians(a) for a in profile.light_azimuth_range_deg)
    lo_cos, hi_cos = profile.light_cos_polar_range
    lights = []
    for _ in range(profile.light_count):
        azimuth = rng.uniform(lo_az, hi_az)
        cos_polar = rng.uniform(lo_cos, hi_cos)
        sin_polar = math.sqrt(max(0.0, 1.0 - cos_polar * cos_polar))
        offset = np.array([sin_polar * math.cos(azimuth), sin_polar * math.sin(azimuth), cos_polar])
        world = frame.to_world(center + profile.light_radius_m * offset)
        lights.append((float(world[0]), float(world[1]), float(world[2])))
    return lights


def ground_center(layout: Layout, profile: OscrProfile = SEETHROUGH3D_V1) -> tuple[np.ndarray, float]:
    """Centre and Z rotation (radians) of the ground plane: the reference frame's origin and axes."""
    frame = reference_frame(layout, profile)
    yaw = math.atan2(frame.distance_axis[1], frame.distance_axis[0])
    return frame.origin, yaw
