"""Reprojection of a picture into a moved camera, checked against exact homographies on synthetic pictures
(tolerance: reprojection_support.RESAMPLE_TOLERANCE, one 8-bit level of rounding)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from reprojection_support import RESAMPLE_TOLERANCE, max_resample_error, resample_through
from shot_support import shot_layout

from seethrough_core.edit_region import dilate
from seethrough_core.generation_settings import SettingError
from seethrough_core.geometry import CameraModel, euler_xyz_matrix
from seethrough_core.layout import Box, Camera, Layout
from seethrough_core.masks import compute_masks
from seethrough_core.reprojection import (
    BOX,
    FAR,
    FLOOR,
    layout_depth,
    plan_camera_move,
    plane_homography,
    reproject,
    rotation_homography,
    source_positions,
)

WIDTH, HEIGHT = 320, 256
MARGIN = 6


def box(description: str, center: tuple[float, float, float], side: float) -> Box:
    return Box(description, center, (side, side, side), (0.0, 0.0, 0.0))


CAR = Box("a red car", (1.0, 8.0, 0.75), (1.8, 4.5, 1.5), (0.0, 0.0, 0.0))
BEHIND = box("a crate", (0.0, -5.0, 0.5), 1.0)


def scene(camera: Camera, boxes: tuple[Box, ...] = (CAR,)) -> Layout:
    return Layout("a street", (WIDTH, HEIGHT), camera, boxes)


def camera(yaw: float = 0.0, pitch: float = 80.0, lens: float = 35.0, y: float = 0.0) -> Camera:
    """A camera 1.6 m above the floor looking along +Y, tilted ``90 - pitch`` degrees down."""
    return Camera(location=(0.0, y, 1.6), rotation_euler_deg=(pitch, 0.0, yaw), lens_mm=lens)


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    """A smooth random picture: wrong sample positions show as large errors, not as noise."""
    rng = np.random.default_rng(3)
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    waves = np.zeros((HEIGHT, WIDTH, 3))
    for _ in range(6):
        fx, fy = rng.uniform(-0.15, 0.15, size=2)
        waves += np.sin(fx * cols + fy * rows + rng.uniform(0, 2 * np.pi, size=(3, 1, 1))).transpose(1, 2, 0)
    return np.clip(127.5 + 21 * waves, 0, 255).astype(np.uint8)


def assert_matches(result_image: np.ndarray, expected: np.ndarray, where: np.ndarray) -> None:
    assert max_resample_error(result_image, expected, where) <= RESAMPLE_TOLERANCE


def model(layout: Layout) -> CameraModel:
    return CameraModel(layout.camera, layout.width, layout.height)


def test_the_pixel_matrix_is_the_projection():
    cam = CameraModel(replace(camera(), shift_x=0.1, shift_y=-0.05), 640, 480)
    points = np.random.default_rng(0).normal(size=(50, 3)) - [0.0, 0.0, 3.0]
    homogeneous = points @ cam.pixel_matrix().T
    assert np.allclose(homogeneous[:, :2] / homogeneous[:, 2:], cam.project(points), atol=1e-9)


def test_the_layout_depth_sees_the_box_the_floor_and_the_far_background():
    layout = scene(camera())
    depth = layout_depth(layout)
    masks = compute_masks(layout)
    assert np.array_equal(depth.surface == BOX, masks.silhouette.any(axis=0))
    # the camera is tilted 10 degrees down: the top rows see the sky, the bottom rows the floor
    assert (depth.surface[0] == FAR).all() and (depth.inverse_depth[0] == 0).all()
    assert (depth.surface[-1] == FLOOR).all()
    # floor pixels lie on z = 0
    cam = model(layout)
    floor = depth.surface == FLOOR
    points = cam.position + (cam.pixel_rays() @ cam.rotation.T)[floor] * depth.depth[floor][:, None]
    assert np.abs(points[:, 2]).max() < 1e-9


@pytest.mark.parametrize("yaw", [3.0, -4.0])
def test_a_pan_keeps_every_pixel_the_rotation_maps_into_the_picture(picture, yaw):
    before, after = scene(camera()), scene(camera(yaw=yaw))
    result = reproject(picture, before, after, MARGIN)
    homography = rotation_homography(model(before), model(after))
    expected, inside = resample_through(picture, homography)
    # a rotation reveals nothing behind the car: only the strip at the frame's edge is not seen
    assert np.array_equal(result.seen, inside)
    boxes = compute_masks(after).amodal.any(axis=0)
    assert np.array_equal(result.untrusted, boxes)
    assert np.array_equal(result.region, dilate(~inside | boxes, MARGIN))
    assert_matches(result.image, expected, ~result.region)
    # the regenerated share is the revealed strip and the car, each grown by the margin: the strip is
    # along one side, with thin ones along the top and bottom (a pan of a tilted camera rolls the view)
    strip = (~inside).mean()
    assert 0.02 < strip < 0.1
    car = (dilate(boxes, MARGIN) & inside).mean()
    assert strip + car <= result.share <= strip + car + MARGIN * (HEIGHT + 2 * WIDTH) / (WIDTH * HEIGHT)


@pytest.mark.parametrize(("lens_before", "lens_after"), [(35.0, 30.0), (35.0, 42.0)])
def test_a_zoom_follows_the_zoom_homography(picture, lens_before, lens_after):
    before, after = scene(camera(lens=lens_before)), scene(camera(lens=lens_after))
    result = reproject(picture, before, after, MARGIN)
    expected, inside = resample_through(picture, rotation_homography(model(before), model(after)))
    assert np.array_equal(result.seen, inside)
    assert_matches(result.image, expected, ~result.region)
    if lens_after > lens_before:  # zooming in reveals nothing
        assert inside.all()
    else:  # zooming out reveals a border of (1 - 30/35) of each side
        assert abs((~inside).mean() - (1 - (lens_after / lens_before) ** 2)) < 0.02


@pytest.mark.parametrize("step", [0.4, -0.4])  # forward (nothing revealed), backward (a border revealed)
def test_a_dolly_over_an_empty_floor_follows_the_floors_homography(picture, step):
    forward = euler_xyz_matrix((75.0, 0.0, 0.0)) @ [0.0, 0.0, -1.0]  # the view axis, 15 degrees down
    start = Camera(location=(0.0, 0.0, 1.6), rotation_euler_deg=(75.0, 0.0, 0.0), lens_mm=35.0)
    moved = replace(start, location=tuple(np.asarray(start.location) + step * forward))
    before, after = scene(start, (BEHIND,)), scene(moved, (BEHIND,))  # the crate is behind the camera
    result = reproject(picture, before, after, MARGIN)
    depth = layout_depth(after)
    floor, far = depth.surface == FLOOR, depth.surface == FAR
    assert floor.mean() > 0.5 and far.any() and not result.untrusted.any()
    floor_homography = plane_homography(model(before), model(after), (0.0, 0.0, 1.0), 0.0)
    on_floor, inside_floor = resample_through(picture, floor_homography)
    assert_matches(result.image, on_floor, floor & ~result.region)
    in_sky, _ = resample_through(picture, rotation_homography(model(before), model(after)))
    assert_matches(result.image, in_sky, far & ~result.region)
    # the far background stays in place, to the frame's outermost pixels
    assert result.seen[far].all()
    # what is not seen: floor points outside the previous picture; the horizon mixes floor and sky
    # only where their parallax is below half a pixel, so a thin band at most
    unseen_floor = floor & ~result.seen
    assert np.array_equal(unseen_floor & ~inside_floor, floor & ~inside_floor)
    assert (unseen_floor & inside_floor).mean() < 0.01
    if step > 0:
        assert result.share < 0.05
    else:
        assert 0.05 < (~result.seen).mean() <= result.share


def occluded_before(before: Layout, points: np.ndarray, box: Box) -> np.ndarray:
    """Whether the segment from ``before``'s camera to each point crosses the axis-aligned ``box``."""
    origin = np.asarray(before.camera.location)
    segment = points - origin
    low = np.asarray(box.center) - np.asarray(box.size) / 2
    high = np.asarray(box.center) + np.asarray(box.size) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (low - origin) / segment, (high - origin) / segment
    enter = np.nanmax(np.minimum(t1, t2), axis=-1)
    leave = np.nanmin(np.maximum(t1, t2), axis=-1)
    return (enter <= leave) & (leave > 0) & (enter < 1 - 1e-6)


def test_a_sideways_move_puts_what_the_front_box_hid_in_the_region(picture):
    front, back = box("a crate", (0.0, 5.0, 0.5), 1.0), box("a van", (0.3, 9.0, 1.0), 2.0)
    before = scene(camera(), (front, back))
    after = scene(replace(camera(), location=(1.2, 0.0, 1.6)), (front, back))
    result = reproject(picture, before, after, MARGIN)
    new = model(after)
    depth = layout_depth(after)
    floor = depth.surface == FLOOR
    points = new.position + (new.pixel_rays() @ new.rotation.T) * depth.depth[..., None]
    hidden = np.zeros_like(floor)
    hidden[floor] = occluded_before(before, points[floor], front)
    # floor that the crate hid from the first camera, away from any box's own pixels: a disocclusion
    revealed = hidden & ~dilate(result.untrusted, MARGIN)
    assert revealed.sum() > 50
    assert not (revealed & result.seen).any()
    assert (hidden <= result.region).all()


def test_a_move_past_the_limit_is_a_full_regeneration_and_zero_turns_reprojection_off(picture):
    before = scene(camera())
    small = plan_camera_move(picture, before, scene(camera(yaw=3.0)), MARGIN, limit=0.5)
    assert small is not None and small.full_reason is None and small.share < 0.5
    assert small.details(MARGIN)["kept"] == round(1 - small.share, 4)
    large = plan_camera_move(picture, before, scene(camera(yaw=40.0)), MARGIN, limit=0.5)
    assert large is not None and "too far" in large.full_reason and large.share > 0.5
    assert plan_camera_move(picture, before, scene(camera(yaw=3.0)), MARGIN, limit=0) is None
    assert plan_camera_move(picture, before, before, MARGIN) is None  # the camera did not move
    resized = Layout("a street", (WIDTH + 16, HEIGHT), camera(yaw=3.0), (CAR,))
    assert plan_camera_move(picture, before, resized, MARGIN) is None  # a new size is a new picture
    with pytest.raises(SettingError, match="reproject-limit"):
        plan_camera_move(picture, before, scene(camera(yaw=3.0)), MARGIN, limit=1.5)


def test_boxes_that_move_with_the_camera_add_their_old_place_seen_from_the_new_camera(picture):
    moved_car = replace(CAR, center=(-1.0, 8.0, 0.75))
    before, after = scene(camera()), scene(camera(yaw=3.0), (moved_car,))
    move = plan_camera_move(picture, before, after, MARGIN)
    assert [c.kinds for c in move.boxes] == [("moved",)]
    old_car_now = compute_masks(scene(camera(yaw=3.0))).amodal[0]
    assert (dilate(old_car_now, MARGIN) <= move.region).all()
    assert (move.reprojection.region <= move.region).all()
    edit = move.edit_of()
    assert edit.image is move.image and np.array_equal(edit.region(), move.region)


def test_a_push_in_keeps_the_far_background_to_the_frames_edge():
    """Along the view axis the far background maps onto itself, the outermost pixel centres too (their
    coordinates round a hair outside the picture: that must not count as a revealed strip)."""
    start = Camera(location=(0.0, 0.0, 1.6), rotation_euler_deg=(80.0, 0.0, 0.0), lens_mm=35.0)
    forward = euler_xyz_matrix(start.rotation_euler_deg) @ [0.0, 0.0, -1.0]
    moved = replace(start, location=tuple(np.asarray(start.location) + 0.1 * forward))
    before = Layout("a street", (256, 256), start, (BEHIND,))
    after = Layout("a street", (256, 256), moved, (BEHIND,))
    result = reproject(np.zeros((256, 256, 3), np.uint8), before, after, MARGIN)
    assert (layout_depth(after).surface == FAR).any()
    assert result.seen.all() and result.share == 0.0


def test_source_positions_are_the_reprojections_own():
    """A long shot replays a move with source_positions alone: the very numbers reproject samples at."""
    before = shot_layout(0, 0.15, (256, 192))
    for after in (shot_layout(1, 0.15, (256, 192)), shot_layout(3, 0.0, (256, 192))):
        blank = np.zeros((192, 256, 3), dtype=np.uint8)
        assert np.array_equal(source_positions(before, after), reproject(blank, before, after, 0).source)
