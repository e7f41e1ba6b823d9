"""Camera and box geometry with Blender's conventions, in plain numpy.

Everything the renderer and the masks agree on lives here: Euler rotations (Blender's XYZ order),
the perspective camera with sensor fit AUTO and lens shift, the eight corners of a box, and the
camera ray through every pixel centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .layout import Box, Camera


def euler_xyz_matrix(degrees: tuple[float, float, float]) -> np.ndarray:
    """Rotation matrix of a Blender XYZ Euler rotation: X is applied first, then Y, then Z."""
    ax, ay, az = (math.radians(a) for a in degrees)
    cx, sx, cy, sy, cz, sz = (
        math.cos(ax),
        math.sin(ax),
        math.cos(ay),
        math.sin(ay),
        math.cos(az),
        math.sin(az),
    )
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def matrix_to_euler_xyz(rotation: np.ndarray) -> tuple[float, float, float]:
    """Inverse of :func:`euler_xyz_matrix`, in degrees (the branch Blender's to_euler picks)."""
    r = np.asarray(rotation, dtype=np.float64)
    sy = math.hypot(r[0, 0], r[1, 0])
    if sy > 1e-9:
        ax = math.atan2(r[2, 1], r[2, 2])
        ay = math.atan2(-r[2, 0], sy)
        az = math.atan2(r[1, 0], r[0, 0])
    else:  # gimbal lock: Y at +-90 degrees, fold Z into X
        ax = math.atan2(-r[1, 2], r[1, 1])
        ay = math.atan2(-r[2, 0], sy)
        az = 0.0
    return (math.degrees(ax), math.degrees(ay), math.degrees(az))


# Corner signs in a fixed order; faces below index into it.
_CORNER_SIGNS = np.array(
    [[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1], [-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]],
    dtype=np.float64,
)
# Box edges as corner index pairs.
BOX_EDGES = (
    (0, 1),
    (1, 2),
    (2, 3),
    (3, 0),
    (4, 5),
    (5, 6),
    (6, 7),
    (7, 4),
    (0, 4),
    (1, 5),
    (2, 6),
    (3, 7),
)


def box_rotation(box: Box) -> np.ndarray:
    return euler_xyz_matrix(box.rotation_euler_deg)


def box_corners(box: Box) -> np.ndarray:
    """The eight corners of a box in world space, shape (8, 3)."""
    half = np.asarray(box.size, dtype=np.float64) / 2.0
    local = _CORNER_SIGNS * half
    return local @ box_rotation(box).T + np.asarray(box.center, dtype=np.float64)


@dataclass(frozen=True)
class CameraModel:
    """A layout camera turned into matrices and image-plane extents for one resolution."""

    camera: Camera
    width: int
    height: int

    @property
    def rotation(self) -> np.ndarray:
        """Camera-to-world rotation: columns are the camera's local X (right), Y (up), Z (back)."""
        return euler_xyz_matrix(self.camera.rotation_euler_deg)

    @property
    def position(self) -> np.ndarray:
        return np.asarray(self.camera.location, dtype=np.float64)

    @property
    def forward(self) -> np.ndarray:
        return -self.rotation[:, 2]

    @property
    def plane_size_mm(self) -> tuple[float, float]:
        """Width and height of the image on the sensor; AUTO fit spans the larger side."""
        sensor = self.camera.sensor_width_mm
        if self.width >= self.height:
            return sensor, sensor * self.height / self.width
        return sensor * self.width / self.height, sensor

    def pixel_matrix(self) -> np.ndarray:
        """The 3 x 3 matrix K taking a camera-space point (X, Y, Z) to homogeneous pixel coordinates
        (column, row from the top-left corner, 1) x view depth: :meth:`project` as a matrix."""
        plane_w, plane_h = self.plane_size_mm
        sensor, lens = self.camera.sensor_width_mm, self.camera.lens_mm
        fx, fy = self.width * lens / plane_w, self.height * lens / plane_h
        cx = self.width * (0.5 - self.camera.shift_x * sensor / plane_w)
        cy = self.height * (0.5 + self.camera.shift_y * sensor / plane_h)
        # view depth is -Z: the camera looks along its local -Z
        return np.array([[fx, 0.0, -cx], [0.0, -fy, -cy], [0.0, 0.0, -1.0]])

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, dtype=np.float64) - self.position) @ self.rotation

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Pixel coordinates (column, row from the top-left corner) of camera-space points in front."""
        pts = np.asarray(points_cam, dtype=np.float64)
        plane_w, plane_h = self.plane_size_mm
        sensor = self.camera.sensor_width_mm
        lens = self.camera.lens_mm
        depth = -pts[..., 2]
        u = (pts[..., 0] * lens / depth - self.camera.shift_x * sensor) / plane_w + 0.5
        v = 0.5 - (pts[..., 1] * lens / depth - self.camera.shift_y * sensor) / plane_h
        return np.stack([u * self.width, v * self.height], axis=-1)

    def pixel_rays(self) -> np.ndarray:
        """Camera-space direction through every pixel centre, shape (H, W, 3), scaled to z = -1.

        With that scaling the ray parameter t is the view depth, the quantity Blender clips on.
        """
        plane_w, plane_h = self.plane_size_mm
        sensor = self.camera.sensor_width_mm
        lens = self.camera.lens_mm
        cols = (np.arange(self.width) + 0.5) / self.width
        rows = (np.arange(self.height) + 0.5) / self.height
        x = ((cols - 0.5) * plane_w + self.camera.shift_x * sensor) / lens
        y = ((0.5 - rows) * plane_h + self.camera.shift_y * sensor) / lens
        rays = np.empty((self.height, self.width, 3), dtype=np.float64)
        rays[..., 0] = x[None, :]
        rays[..., 1] = y[:, None]
        rays[..., 2] = -1.0
        return rays


@dataclass(frozen=True)
class FrameRect:
    """A rectangle of a frame in its pixels (x right, y down from the top-left corner); it may reach past
    the frame's edges and need not fall on whole pixels."""

    x: float
    y: float
    width: float
    height: float


def view_camera(
    camera: Camera, frame_size: tuple[int, int], rect: FrameRect, out_size: tuple[int, int]
) -> Camera:
    """The camera whose ``out_size`` image is exactly ``camera``'s ``frame_size`` image over ``rect``.

    Only the sensor and the lens shift change: a narrower (or wider) sensor scales the view, the shift
    moves its centre, so every ray of the new image is a ray of the frame's (same position, rotation,
    lens and clipping). ``rect`` and ``out_size`` must have the same aspect: one scale, no stretch.
    From ``x = sensor / lens * ((u - W / 2) / max(W, H) + shift_x)`` for the frame's pixel column u,
    and the same for the view's column, equal for every column.
    """
    frame_w, frame_h = frame_size
    out_w, out_h = out_size
    scale = out_w / rect.width  # view pixels per frame pixel
    if not math.isclose(scale, out_h / rect.height, rel_tol=1e-9):
        raise ValueError(f"{out_w} x {out_h} px does not have the aspect of {rect}: the view would stretch")
    frame_span, out_span = max(frame_w, frame_h), max(out_w, out_h)  # AUTO fit: the larger side
    k = out_span / scale / frame_span  # the view's sensor as a share of the frame's
    shift_x = ((rect.x - frame_w / 2) / frame_span + camera.shift_x) / k + out_w / (2 * out_span)
    shift_y = ((frame_h / 2 - rect.y) / frame_span + camera.shift_y) / k - out_h / (2 * out_span)
    return replace(camera, sensor_width_mm=camera.sensor_width_mm * k, shift_x=shift_x, shift_y=shift_y)


def convex_hull_2d(points: np.ndarray) -> np.ndarray:
    """Counter-clockwise convex hull of 2-D points (Andrew's monotone chain). Large point sets are first
    reduced to the points outside the polygon of their extreme points in many directions: every point
    strictly inside it is inside the hull, so it cannot be on it."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    for directions in (16, 256):  # a coarse pass over all points, a fine one over what is left
        if len(points) > 256:
            points = _outside_extreme_polygon(points, directions)
    points = np.unique(points, axis=0)
    if len(points) < 3:
        return points
    ordered = points[np.lexsort((points[:, 1], points[:, 0]))].tolist()

    def chain(sequence: list[list[float]]) -> list[list[float]]:
        out: list[list[float]] = []
        for x, y in sequence:
            while len(out) >= 2:
                (ax, ay), (bx, by) = out[-2], out[-1]
                if (bx - ax) * (y - ay) - (by - ay) * (x - ax) > 0:
                    break
                out.pop()
            out.append([x, y])
        return out[:-1]

    return np.array(chain(ordered) + chain(ordered[::-1]))


def _outside_extreme_polygon(points: np.ndarray, directions: int) -> np.ndarray:
    """The points not strictly inside the polygon of the extreme points along ``directions`` directions."""
    angles = np.linspace(0.0, 2.0 * math.pi, directions, endpoint=False)
    extreme = np.argmax(np.stack([np.cos(angles), np.sin(angles)], axis=1) @ points.T, axis=1)
    polygon = points[np.unique(extreme)]
    if len(polygon) < 3:
        return points
    # each point is tested against the one edge its direction from the centroid crosses
    centre = polygon.mean(axis=0)
    vertex_angles = np.arctan2(polygon[:, 1] - centre[1], polygon[:, 0] - centre[0])
    order = np.argsort(vertex_angles)
    polygon, vertex_angles = polygon[order], vertex_angles[order]
    point_angles = np.arctan2(points[:, 1] - centre[1], points[:, 0] - centre[0])
    start = (np.searchsorted(vertex_angles, point_angles, side="right") - 1) % len(polygon)
    edge = polygon[(start + 1) % len(polygon)] - polygon[start]
    offset = points - polygon[start]
    inside = edge[:, 0] * offset[:, 1] - edge[:, 1] * offset[:, 0] > 0
    return points[~inside]
