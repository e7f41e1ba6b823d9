"""Boxes fitted to geometry: an artist's own objects turned into layout boxes.

The checkpoint's boxes stand on the floor and turn about Z, so the default fit is yaw-only: the
rectangle of least area around the points' XY projection (it has one side on their convex hull, so
trying each hull edge's direction finds it exactly: "rotating calipers"), and Z from the lowest to the
highest point. The box's front (+Y, the red face) is the side nearest the object's own front (Blender's
convention: the object's local -Y). A full 3D fit (``yaw_only=False``) orients the box along the
points' principal axes instead, for objects that are tilted on purpose.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .geometry import convex_hull_2d, matrix_to_euler_xyz

MIN_BOX_SIDE_M = 0.01  # a flat object (a plane, a sign) still gets a box 1 cm thick


@dataclass(frozen=True)
class FittedBox:
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    rotation_euler_deg: tuple[float, float, float]


def fit_box(points: np.ndarray, front: np.ndarray | None = None, *, yaw_only: bool = True) -> FittedBox:
    """The box around world-space ``points`` (N x 3, N >= 1); ``front`` is the object's facing direction
    in world space (default -Y), which the box's +Y side is turned towards."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if not len(points) or not np.isfinite(points).all():
        raise ValueError("fit_box needs at least one finite point")
    facing = np.array([0.0, -1.0, 0.0]) if front is None else np.asarray(front, dtype=np.float64)
    if yaw_only:
        return _fit_yaw(points, facing)
    return _fit_oriented(points, facing)


def _fit_yaw(points: np.ndarray, facing: np.ndarray) -> FittedBox:
    hull = convex_hull_2d(points[:, :2])
    if len(hull) < 3:  # all points on a line or one point: any direction of the line will do
        span = hull[-1] - hull[0]
        angles = np.array([math.atan2(span[1], span[0])])
    else:
        edges = np.roll(hull, -1, axis=0) - hull
        angles = np.unique(np.mod(np.arctan2(edges[:, 1], edges[:, 0]), math.pi / 2))
    cos, sin = np.cos(angles), np.sin(angles)
    # hull points in each candidate frame (x along the edge): K angles x M points
    u = hull[:, 0][None] * cos[:, None] + hull[:, 1][None] * sin[:, None]
    v = -hull[:, 0][None] * sin[:, None] + hull[:, 1][None] * cos[:, None]
    areas = (u.max(1) - u.min(1)) * (v.max(1) - v.min(1))
    best = int(np.argmin(areas))
    theta, c, s = float(angles[best]), float(cos[best]), float(sin[best])
    u_mid, v_mid = (u[best].max() + u[best].min()) / 2, (v[best].max() + v[best].min()) / 2
    width, depth = u[best].max() - u[best].min(), v[best].max() - v[best].min()
    center_xy = (u_mid * c - v_mid * s, u_mid * s + v_mid * c)
    # four yaws give the same rectangle; keep the one whose +Y side faces the object's front
    yaws = theta + np.arange(4) * math.pi / 2
    local_y = np.stack([-np.sin(yaws), np.cos(yaws)], axis=1)
    turn = int(np.argmax(local_y @ facing[:2])) if np.linalg.norm(facing[:2]) > 1e-9 else 0
    yaw = math.remainder(float(yaws[turn]), 2 * math.pi)
    if turn % 2:
        width, depth = depth, width
    z_lo, z_hi = float(points[:, 2].min()), float(points[:, 2].max())
    return FittedBox(
        center=(float(center_xy[0]), float(center_xy[1]), (z_lo + z_hi) / 2),
        size=(_side(width), _side(depth), _side(z_hi - z_lo)),
        rotation_euler_deg=(0.0, 0.0, math.degrees(yaw)),
    )


def _fit_oriented(points: np.ndarray, facing: np.ndarray) -> FittedBox:
    centered = points - points.mean(axis=0)
    _, _, axes = np.linalg.svd(centered, full_matrices=False) if len(points) > 1 else (None, None, np.eye(3))
    axes = np.asarray(axes)
    if len(axes) < 3:  # fewer than three points: complete the frame
        axes = np.linalg.qr(np.vstack([axes, np.eye(3)]).T)[0].T[:3]
    # box axes (rows): X, Y, Z; Y is the principal axis nearest the facing, Z points up
    order = np.argsort(-np.abs(axes @ facing))
    y_axis = axes[order[0]] * np.sign(axes[order[0]] @ facing or 1.0)
    rest = [axes[i] for i in order[1:]]
    z_axis = max(rest, key=lambda a: abs(a[2]))
    z_axis = z_axis * (1.0 if z_axis[2] >= 0 else -1.0)
    x_axis = np.cross(y_axis, z_axis)
    rotation = np.stack([x_axis, y_axis, z_axis], axis=1)  # columns: the box's axes in world space
    local = centered @ rotation
    lo, hi = local.min(axis=0), local.max(axis=0)
    center = points.mean(axis=0) + rotation @ ((lo + hi) / 2)
    size = hi - lo
    return FittedBox(
        center=tuple(float(v) for v in center),
        size=tuple(_side(float(v)) for v in size),
        rotation_euler_deg=matrix_to_euler_xyz(rotation),
    )


def _side(extent: float) -> float:
    return max(float(extent), MIN_BOX_SIDE_M)


_DETERMINERS = frozenset(
    "a an the some any this that these those my your his her its our their one two three four five six "
    "seven eight nine ten several many few".split()
)
_AN_EXCEPTIONS = ("uni", "use", "usu", "uti", "eu", "one", "once")  # vowel letters, consonant sounds
_AN_SILENT_H = ("hour", "honest", "honour", "honor", "heir")


def with_article(text: str) -> str:
    """A description read as a noun phrase: "garden bench" -> "a garden bench", "old oak" -> "an old oak".
    Text that already starts with a determiner or a number, or is empty, is kept as it is."""
    words = text.split()
    if not words or words[0].lower() in _DETERMINERS or words[0][0].isdigit():
        return text
    first = words[0].lower()
    vowel_sound = (first[0] in "aeiou" and not first.startswith(_AN_EXCEPTIONS)) or first.startswith(
        _AN_SILENT_H
    )
    return f"{'an' if vowel_sound else 'a'} {text}"


def description_from_name(name: str) -> str:
    """An object's name as a box description with its article: "Garden_Bench.001" -> "a garden bench"."""
    return with_article(clean_description(name))


def clean_description(name: str) -> str:
    """An object's name as a box description: "Red_Vintage_Car.001" -> "red vintage car"."""
    text = re.sub(r"\.\d+$", "", name)  # Blender's duplicate suffix
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)  # camelCase
    text = re.sub(r"[_\-.]+", " ", text)
    return " ".join(text.split()).lower()
