import colorsys
import copy
import math

import numpy as np
import pytest

from seethrough_core.layout import Layout
from seethrough_core.oscr_spec import (
    SEETHROUGH3D_V1,
    box_anchor,
    box_edge_colors,
    edge_color,
    get_profile,
    light_positions,
    position_color,
    reference_frame,
)


def _reference_camera_layout(layout_dict, elevation_deg: float) -> Layout:
    """The reference's own camera: radius 6 around (-6, 0, 0), looking along (-1, 0, -tan e)."""
    e = math.radians(elevation_deg)
    data = copy.deepcopy(layout_dict)
    data["camera"]["location"] = [6 * math.cos(e) - 6, 0.0, 6 * math.sin(e)]
    data["camera"]["rotation_euler_deg"] = [90.0 - elevation_deg, 0.0, 90.0]
    return Layout.from_dict(data)


@pytest.mark.parametrize("elevation", [10.0, 30.0, 55.0])
def test_frame_of_a_reference_camera_is_the_reference_world(layout_dict, elevation):
    layout = _reference_camera_layout(layout_dict, elevation)
    frame = reference_frame(layout)
    for point in ([-6.0, 0.0, 0.0], [-9.5, 2.0, 1.2], [-1.0, -0.7, 0.0]):
        np.testing.assert_allclose(frame.to_reference(np.array(point)), point, atol=1e-9)


def test_frame_follows_a_rotated_and_moved_camera(layout_dict):
    base = _reference_camera_layout(layout_dict, 30.0)
    data = base.to_dict()
    # The same shot turned 90 degrees about Z and moved: colours must not change.
    data["camera"]["location"] = [10.0, 5.0 + base.camera.location[0], base.camera.location[2]]
    data["camera"]["rotation_euler_deg"] = [60.0, 0.0, 180.0]
    data["boxes"][0]["center"] = [10.0, 5.0 - 6.0, 0.75]
    data["boxes"][0]["rotation_euler_deg"] = [0.0, 0.0, 120.0]
    moved = Layout.from_dict(data)
    np.testing.assert_allclose(box_edge_colors(moved), box_edge_colors(base), atol=1e-9)


def test_position_color_formula():
    # Scene centre: halfway along the distance range, middle of the frustum, on the ground.
    r, g, b = position_color(np.array([-6.0, 0.0, 0.0]))
    assert r == pytest.approx(6 / 11) and g == pytest.approx(0.5) and b == 0.0
    # The frustum narrows towards the camera: y = 0.5 is the right edge at x = -1.
    assert position_color(np.array([-1.0, 0.5, 2.5]))[1:] == pytest.approx((1.0, 1.0))
    assert position_color(np.array([-12.0, -4.5, 1.25])) == pytest.approx((0.0, 0.0, 0.5))
    # Out of range clips (red and green).
    assert position_color(np.array([5.0, -99.0, 0.0]))[:2] == (1.0, 0.0)


def test_edge_colour_scales_hsv_value():
    rgb = (0.6, 0.3, 0.9)
    h, s, v = colorsys.rgb_to_hsv(*rgb)
    assert edge_color(rgb) == pytest.approx(colorsys.hsv_to_rgb(h, s, v * 0.1))


def test_edges_above_2_5_m_keep_getting_bluer_as_in_training(layout_dict):
    # the reference scales the position colour's brightness without clipping its blue (z / 2.5) first
    layout_dict["boxes"][0].update(
        center=[-6.0, 0.0, 4.5], size=[1.0, 1.0, 1.0], rotation_euler_deg=[0, 0, 0]
    )
    (edge,) = box_edge_colors(Layout.from_dict(layout_dict))
    assert edge == pytest.approx((6.0 / 11.0 * 0.1, 0.05, 0.16), abs=1e-5)  # base at z = 4 m: blue 4 / 25


def test_box_anchor_is_its_base(layout_dict):
    box = Layout.from_dict(layout_dict).boxes[0]
    assert box_anchor(box) == pytest.approx([-6.0, 0.0, 0.0])


def test_lights_are_seeded_by_the_layout_and_on_the_hemisphere(layout_dict):
    layout = _reference_camera_layout(layout_dict, 30.0)
    lights = light_positions(layout)
    assert lights == light_positions(Layout.from_dict(layout.to_dict()))
    assert len(lights) == 5
    center = np.array([-6.0, 0.0, 0.0])
    for light in lights:
        offset = np.array(light) - center
        assert np.linalg.norm(offset) == pytest.approx(16.0)
        assert 0.5 - 1e-9 <= offset[2] / 16.0 <= 1.0
        assert offset[0] >= -1e-9  # towards the camera's side
    other = layout.to_dict()
    other["light_seed"] = 99
    assert light_positions(Layout.from_dict(other)) != lights


def test_unknown_profile_is_named():
    assert get_profile("seethrough3d-v1") is SEETHROUGH3D_V1
    with pytest.raises(ValueError, match="seethrough3d-v1"):
        get_profile("v0")
