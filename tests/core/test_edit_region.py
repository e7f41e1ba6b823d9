"""The region of a layout change: which pixels an edit may regenerate."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from seethrough_core.edit_region import box_region, dilate, layout_change, pool_cells
from seethrough_core.layout import Layout
from seethrough_core.masks import compute_masks

DOG = {
    "description": "a small brown dog",
    "center": [-5.0, 1.2, 0.3],
    "size": [0.4, 0.8, 0.6],
    "rotation_euler_deg": [0.0, 0.0, 0.0],
}


@pytest.fixture
def two_boxes(layout_dict) -> dict:
    data = copy.deepcopy(layout_dict)  # layout_dict stays the one-box layout
    data["boxes"].append(copy.deepcopy(DOG))
    return data


def amodal(data: dict, index: int) -> np.ndarray:
    return compute_masks(Layout.from_dict(data)).amodal[index]


def change(old: dict, new: dict, margin: int = 0):
    return layout_change(Layout.from_dict(old), Layout.from_dict(new), margin)


def test_an_unchanged_layout_has_nothing_to_regenerate(two_boxes):
    result = change(two_boxes, copy.deepcopy(two_boxes), margin=24)
    assert result.unchanged and not result.full and result.boxes == []


@pytest.mark.parametrize(
    ("edit", "kind"),
    [
        (lambda dog: dog.update(center=[-5.0, 0.6, 0.3]), "moved"),
        (lambda dog: dog.update(size=[0.6, 1.0, 0.8]), "resized"),
        (lambda dog: dog.update(rotation_euler_deg=[0.0, 0.0, 60.0]), "turned"),
        (lambda dog: dog.update(description="a small white cat"), "re-described"),
    ],
)
def test_a_changed_box_regenerates_its_old_and_new_silhouette(two_boxes, edit, kind):
    new = copy.deepcopy(two_boxes)
    edit(new["boxes"][1])
    result = change(two_boxes, new)
    assert [c.kinds for c in result.boxes] == [(kind,)]
    assert (result.boxes[0].old_index, result.boxes[0].new_index) == (1, 1)
    expected = amodal(two_boxes, 1) | amodal(new, 1)
    assert np.array_equal(result.region, expected)
    assert not (result.region & ~expected).any() and not (amodal(new, 0) & ~expected & result.region).any()


def test_an_added_box_regenerates_its_silhouette_only(layout_dict, two_boxes):
    result = change(layout_dict, two_boxes)
    assert [(c.kinds, c.old_index, c.new_index) for c in result.boxes] == [(("added",), None, 1)]
    assert np.array_equal(result.region, amodal(two_boxes, 1))


def test_a_removed_box_regenerates_where_it_was(layout_dict, two_boxes):
    result = change(two_boxes, layout_dict)
    assert [(c.kinds, c.old_index, c.new_index) for c in result.boxes] == [(("removed",), 1, None)]
    assert np.array_equal(result.region, amodal(two_boxes, 1))


def test_removing_the_first_box_leaves_the_others_alone(two_boxes):
    new = copy.deepcopy(two_boxes)
    del new["boxes"][0]
    result = change(two_boxes, new)
    assert [(c.kinds, c.old_index) for c in result.boxes] == [(("removed",), 0)]
    assert np.array_equal(result.region, amodal(two_boxes, 0))


def test_named_boxes_pair_by_name(two_boxes):
    two_boxes["boxes"][0]["name"], two_boxes["boxes"][1]["name"] = "car", "dog"
    new = copy.deepcopy(two_boxes)
    new["boxes"].reverse()  # the order changed, nothing else
    assert change(two_boxes, new).unchanged
    new["boxes"][0]["center"] = [-5.0, 0.2, 0.3]  # the dog moved
    moved = change(two_boxes, new).boxes
    assert [(c.label, c.old_index, c.new_index, c.kinds) for c in moved] == [("dog", 1, 0, ("moved",))]


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda d: d["camera"].update(location=[-0.5, 0.0, 3.0]), "camera"),
        (lambda d: d["camera"].update(lens_mm=35.0), "camera"),
        (lambda d: d.update(resolution=[256, 320]), "resolution"),
        (lambda d: d.update(scene_prompt="on a beach"), "scene prompt"),
    ],
)
def test_a_camera_resolution_or_prompt_change_is_a_full_regeneration(two_boxes, edit, words):
    new = copy.deepcopy(two_boxes)
    edit(new)
    result = change(two_boxes, new)
    assert result.full and words in result.full_reason and result.region is None
    with pytest.raises(ValueError, match="full regeneration"):
        result.mask()


def test_a_renamed_camera_is_the_same_view(two_boxes):
    new = copy.deepcopy(two_boxes)
    new["camera"]["name"] = "Shot 2"
    assert change(two_boxes, new).unchanged


def test_the_margin_grows_the_region_by_that_many_pixels(two_boxes):
    new = copy.deepcopy(two_boxes)
    new["boxes"][1]["center"] = [-5.0, 0.6, 0.3]
    tight, wide = change(two_boxes, new, 0).region, change(two_boxes, new, 10).region
    assert np.array_equal(wide, dilate(tight, 10))
    rows, cols = np.nonzero(tight)
    wide_rows, wide_cols = np.nonzero(wide)
    assert wide_rows.min() == max(rows.min() - 10, 0) and wide_cols.max() == min(cols.max() + 10, 255)
    mask = change(two_boxes, new, 10).mask()
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}


def test_a_box_moved_out_of_the_frame_leaves_nothing_to_regenerate(layout_dict):
    far_away = copy.deepcopy(layout_dict)
    far_away["boxes"].append({**copy.deepcopy(DOG), "center": [-5.0, 40.0, 0.3]})
    further = copy.deepcopy(far_away)
    further["boxes"][1]["center"] = [-5.0, 50.0, 0.3]
    result = change(far_away, further)
    assert result.boxes and result.unchanged


def test_vary_box_region_is_that_box_grown(two_boxes):
    layout = Layout.from_dict(two_boxes)
    region = box_region(layout, 1, margin_px=6)
    assert np.array_equal(region, dilate(amodal(two_boxes, 1), 6))
    with pytest.raises(IndexError):
        box_region(layout, 2)


def test_dilate_is_a_square_window():
    mask = np.zeros((9, 9), dtype=bool)
    mask[4, 4] = True
    grown = dilate(mask, 2)
    assert grown.sum() == 25 and grown[2:7, 2:7].all()
    assert np.array_equal(dilate(mask, 0), mask)


def test_pool_cells_covers_every_set_pixel():
    mask = np.zeros((32, 48), dtype=bool)
    mask[7, 8] = mask[31, 47] = True
    cells = pool_cells(mask, 8)
    assert cells.shape == (4, 6) and cells.sum() == 2 and cells[0, 1] and cells[3, 5]
    with pytest.raises(ValueError):
        pool_cells(np.zeros((30, 32), dtype=bool), 8)


def test_a_bad_margin_is_refused(two_boxes):
    layout = Layout.from_dict(two_boxes)
    for margin in (-1, 10_000, 2.5):
        with pytest.raises(ValueError, match="margin"):
            layout_change(layout, layout, margin)
