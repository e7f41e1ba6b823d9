"""Boxes fitted to points: exact for boxes, minimal footprints, fronts, names."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seethrough_core.box_fitting import MIN_BOX_SIDE_M, clean_description, description_from_name, fit_box
from seethrough_core.geometry import euler_xyz_matrix


def corners(center, size, rotation_deg) -> np.ndarray:
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    return (signs * np.asarray(size) / 2) @ euler_xyz_matrix(rotation_deg).T + np.asarray(center)


def inside(points: np.ndarray, box, tolerance: float = 1e-9) -> bool:
    local = (points - np.asarray(box.center)) @ euler_xyz_matrix(box.rotation_euler_deg)
    return bool((np.abs(local) <= np.asarray(box.size) / 2 + tolerance).all())


@pytest.mark.parametrize("yaw", [0.0, 30.0, -75.0, 120.0])
def test_a_turned_stretched_cube_gives_exactly_its_box_front_to_front(yaw):
    points = corners([1.0, -2.0, 0.6], [2.0, 0.8, 1.2], [0, 0, yaw])
    front = euler_xyz_matrix((0, 0, yaw)) @ [0.0, -1.0, 0.0]  # the object's own front: its local -Y
    box = fit_box(points, front)
    np.testing.assert_allclose(box.center, [1.0, -2.0, 0.6], atol=1e-9)
    np.testing.assert_allclose(box.size, [2.0, 0.8, 1.2], atol=1e-9)
    # the box's +Y (red) side faces the object's front: turned half a turn from the object
    expected = math.remainder(yaw + 180.0, 360.0)
    assert abs(math.remainder(box.rotation_euler_deg[2] - expected, 360.0)) < 1e-4
    assert box.rotation_euler_deg[:2] == (0.0, 0.0)


def test_a_cylinder_gets_a_box_around_every_point_with_the_least_footprint():
    angles = np.linspace(0, 2 * math.pi, 400, endpoint=False)
    ring = np.stack([0.5 * np.cos(angles), 0.5 * np.sin(angles)], axis=1)
    points = np.concatenate([np.c_[ring, np.zeros(400)], np.c_[ring, np.full(400, 2.0)]])
    box = fit_box(points)
    assert inside(points, box)
    assert box.size[0] * box.size[1] <= 1.0 + 1e-6  # a circle's least bounding rectangle is its square
    assert box.size[2] == pytest.approx(2.0) and box.center[2] == pytest.approx(1.0)


def test_the_least_footprint_of_a_random_cloud_beats_every_other_direction():
    rng = np.random.default_rng(5)
    points = rng.normal(size=(5000, 3)) * [3.0, 1.0, 0.5] @ euler_xyz_matrix((0, 0, 25)).T
    box = fit_box(points)
    assert inside(points, box, 1e-7)
    for angle in np.linspace(0, 90, 181):
        r = euler_xyz_matrix((0, 0, angle))[:2, :2]
        flat = points[:, :2] @ r
        assert box.size[0] * box.size[1] <= np.ptp(flat[:, 0]) * np.ptp(flat[:, 1]) + 1e-9


def test_a_full_3d_fit_follows_a_tilted_box():
    points = corners([0.0, 0.0, 1.0], [3.0, 1.0, 0.5], [20, -10, 40])
    box = fit_box(points, yaw_only=False)
    np.testing.assert_allclose(box.center, [0.0, 0.0, 1.0], atol=1e-9)
    assert sorted(box.size) == pytest.approx([0.5, 1.0, 3.0])
    assert inside(points, box, 1e-9)


def test_flat_lines_and_single_points_still_make_a_valid_box():
    plane = np.array([[0, 0, 0], [1, 0, 0], [1, 2, 0], [0, 2, 0]], float)
    assert fit_box(plane).size[2] == MIN_BOX_SIDE_M
    line = fit_box(np.array([[0, 0, 0], [3, 4, 0]], float))
    assert max(line.size) == pytest.approx(5.0) and min(line.size) == MIN_BOX_SIDE_M
    assert fit_box(np.zeros((1, 3))).size == (MIN_BOX_SIDE_M,) * 3
    with pytest.raises(ValueError):
        fit_box(np.zeros((0, 3)))


@pytest.mark.parametrize(
    ("name", "description"),
    [("Red_Vintage_Car.001", "red vintage car"), ("oakTable", "oak table"), ("lamp-post 2", "lamp post 2"),
     ("  Big__Chair ", "big chair")],
)  # fmt: skip
def test_object_names_become_descriptions(name, description):
    assert clean_description(name) == description


@pytest.mark.parametrize(
    ("name", "description"),
    [("Garden_Bench", "a garden bench"), ("oldOak.002", "an old oak"), ("unicorn", "a unicorn"),
     ("Hour_Glass", "an hour glass"), ("the_moon", "the moon"), ("2 chairs", "2 chairs"),
     ("umbrella", "an umbrella")],
)  # fmt: skip
def test_descriptions_from_names_get_an_article(name, description):
    assert description_from_name(name) == description
