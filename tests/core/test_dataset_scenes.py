"""Dataset scenes: seeded, placed on the floor apart, seen by a camera aimed at them, filtered by the exact
masks with the reason of every rejection."""

import math
import random
from dataclasses import replace

import numpy as np
import pytest

from seethrough_core.dataset_format import DatasetSample
from seethrough_core.dataset_scenes import (
    REJECT_FRAME,
    REJECT_HIDDEN,
    REJECT_LARGE,
    REJECT_NO_OCCLUSION,
    REJECT_SMALL,
    AssetSpec,
    SceneFilterError,
    SceneSettings,
    check_scene,
    footprints_touch,
    look_at_camera,
    make_scene,
    scene_seed,
    scene_target,
    yaw_to_camera,
)
from seethrough_core.dataset_stats import dataset_stats
from seethrough_core.geometry import CameraModel
from seethrough_core.layout import Box, Layout
from seethrough_core.prompt import compose_prompt

ASSETS = [
    AssetSpec("cube", "a red cube", (1.0, 1.0, 1.0)),
    AssetSpec("post", "a tall post", (0.4, 0.4, 1.6)),
    AssetSpec("crate", "a wide crate", (1.4, 0.8, 0.7)),
]
SETTINGS = SceneSettings(resolution=256, objects=(1, 3))


def scene_layout(boxes, azimuth=0.0, elevation=15.0, distance=6.0, lens=50.0) -> Layout:
    camera = look_at_camera(scene_target(boxes), azimuth, elevation, distance, lens)
    return Layout("", (256, 256), camera, tuple(boxes))


def cube(x, y, side=1.0, description="a red cube") -> Box:
    return Box(description, (x, y, side / 2), (side, side, side))


def test_the_same_seed_gives_the_same_scene_and_another_seed_another():
    first = make_scene(ASSETS, 11, SETTINGS)
    again = make_scene(ASSETS, 11, SETTINGS)
    other = make_scene(ASSETS, 12, SETTINGS)
    assert first.layout.to_dict() == again.layout.to_dict()
    assert first.look == again.look and first.asset_ids == again.asset_ids
    assert other.layout.to_dict() != first.layout.to_dict()
    assert scene_seed(100, 5) == 105


def test_an_occluding_scene_passes_and_records_its_visibility():
    # The camera looks along -X: the near cube hides about half of the far one.
    layout = scene_layout([cube(1.0, 0.0), cube(-1.0, 0.5)], azimuth=0.0)
    check = check_scene(layout, SETTINGS)
    assert check.kept, check.reason
    assert check.visibility[0] == 1.0
    assert SETTINGS.min_visibility < check.visibility[1] < SETTINGS.max_min_visibility


def test_a_scene_without_occlusion_is_rejected_as_such():
    # Side by side across the view: both fully visible.
    layout = scene_layout([cube(0.0, 1.0), cube(0.0, -1.0)], azimuth=0.0)
    check = check_scene(layout, SETTINGS)
    assert check.reason == REJECT_NO_OCCLUSION
    assert check.visibility == [1.0, 1.0]


def test_a_lone_object_needs_no_occlusion():
    assert check_scene(scene_layout([cube(0.0, 0.0)]), SETTINGS).kept


def test_an_object_hidden_almost_whole_is_rejected():
    big = Box("a wall", (1.0, 0.0, 1.0), (0.2, 3.0, 2.0))
    layout = scene_layout([big, cube(-0.5, 0.0, side=0.5)], azimuth=0.0, elevation=5.0)
    check = check_scene(layout, SETTINGS)
    assert check.reason == REJECT_HIDDEN
    assert check.visibility[1] <= SETTINGS.min_visibility


@pytest.mark.parametrize(
    ("distance", "lens", "reason"),
    [(60.0, 50.0, REJECT_SMALL), (3.0, 50.0, REJECT_LARGE), (2.0, 50.0, REJECT_FRAME)],
)
def test_2d_box_bounds_reject_too_small_too_large_and_cut_objects(distance, lens, reason):
    settings = replace(SETTINGS, box_size=(0.1, 0.5))
    layout = scene_layout([cube(0.0, 0.0)], distance=distance, lens=lens)
    assert check_scene(layout, settings).reason == reason


def test_an_impossible_filter_stops_naming_the_constraint_that_rejected_most():
    settings = replace(SETTINGS, box_size=(0.97, 1.0), max_tries=20)
    with pytest.raises(SceneFilterError) as caught:
        make_scene(ASSETS, 3, settings)
    assert "20 tries" in str(caught.value) and "box_too_small" in str(caught.value)
    assert caught.value.rejections["box_too_small"] >= 10


def test_objects_stand_on_the_floor_apart_and_the_camera_looks_at_them():
    for seed in range(20):
        scene = make_scene(ASSETS, seed, SETTINGS)
        boxes = scene.layout.boxes
        assert all(math.isclose(b.center[2], b.size[2] / 2) for b in boxes)
        assert not any(footprints_touch(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
        cam = CameraModel(scene.layout.camera, 256, 256)
        target = cam.project(cam.world_to_camera(np.array([scene_target(boxes)])))[0]
        assert np.allclose(target, [128.0, 128.0], atol=1e-6)
        elevation = scene.record()["camera"]["elevation_deg"]
        assert SETTINGS.elevation_deg[0] <= elevation <= SETTINGS.elevation_deg[1]
        assert scene.check.kept and scene.tries >= 1


def test_footprints_touch_only_when_closer_than_the_gap():
    assert footprints_touch(cube(0.0, 0.0), cube(1.0, 0.0))
    assert not footprints_touch(cube(0.0, 0.0), cube(1.1, 0.0))
    turned = Box("a cube", (1.2, 0.0, 0.5), (1.0, 1.0, 1.0), (0.0, 0.0, 45.0))  # a corner reaches x = 0.49
    assert footprints_touch(cube(0.0, 0.0), turned)


def test_yaw_to_camera_is_zero_when_the_front_faces_the_camera():
    # The front is local +Y; a camera at azimuth 90 deg stands on +Y.
    assert yaw_to_camera(cube(0, 0), 90.0) == pytest.approx(0.0)
    assert abs(yaw_to_camera(cube(0, 0), 270.0)) == pytest.approx(180.0)
    turned = Box("a cube", (0, 0, 0.5), (1, 1, 1), (0, 0, 90.0))
    assert yaw_to_camera(turned, 90.0) == pytest.approx(90.0)


def test_settings_refuse_a_minimum_above_the_maximum():
    with pytest.raises(ValueError, match="below --max-min-visibility"):
        SceneSettings(min_visibility=0.8, max_min_visibility=0.5)
    with pytest.raises(ValueError, match="objects"):
        SceneSettings(objects=(3, 2))


def test_stats_count_every_scene_object_and_rejection():
    samples = []
    for seed in range(6):
        scene = make_scene(ASSETS, seed, SETTINGS)
        prompt = compose_prompt("", scene.layout.descriptions)
        n = len(scene.layout.boxes)
        samples.append(
            DatasetSample(
                id=f"{seed:06d}", target="t", oscr="o", amodal_masks=["a"] * n, visible_masks=["v"] * n,
                masks_json="m", layout=scene.layout.to_dict(), prompt=prompt.text,
                descriptions=list(prompt.descriptions), spans=[list(s) for s in prompt.spans],
                visibility=scene.check.visibility, width=256, height=256, seed=seed, scene=scene.record(),
            )
        )  # fmt: skip
    stats = dataset_stats(samples)
    objects = sum(len(s.descriptions) for s in samples)
    by_name = {h.name: h for h in stats.histograms}
    assert sum(by_name["min_visibility"].counts) == 6 and sum(by_name["elevation"].counts) == 6
    assert sum(by_name["yaw"].counts) == objects and sum(by_name["box_size"].counts) == objects
    assert sum(by_name["objects"].counts) == 6
    rejected = sum(sum(s.scene["rejections"].values()) for s in samples)
    assert stats.drawn == 6 + rejected
    assert by_name["rejections"].counts[0] == 6 and sum(by_name["rejections"].counts) == stats.drawn
    assert "min_visibility" in stats.table() and "kept" in stats.table()
    elevations = stats.values["elevation_deg"]
    assert all(10.0 - 1e-6 <= e <= 50.0 + 1e-6 for e in elevations)


def test_scene_sampling_uses_no_global_random_state():
    random.seed(1)
    first = make_scene(ASSETS, 5, SETTINGS)
    random.seed(2)
    assert make_scene(ASSETS, 5, SETTINGS).layout.to_dict() == first.layout.to_dict()
