"""Boxes with no pixel in the frame stay out of the prompt and the token grids (seethrough_core.in_view)."""

from __future__ import annotations

import numpy as np
import pytest

from seethrough_core.generation_settings import GenerationSettings
from seethrough_core.in_view import NothingInViewError, boxes_in_view
from seethrough_core.layout import Layout, load_layout
from seethrough_core.masks import compute_masks
from seethrough_core.prompt import compose_prompt
from seethrough_core.protocol import GenerateRequest
from seethrough_core.record import GenerationRecord


def street(resolution=(320, 256)) -> Layout:
    data = load_layout("assets/examples/street.json").to_dict()
    data["resolution"] = list(resolution)
    return Layout.from_dict(data)


def with_box_behind_the_camera(layout: Layout) -> Layout:
    data = layout.to_dict()
    behind = dict(data["boxes"][1], description="a brown dog", name="dog")
    cam = np.array(layout.camera.location)
    behind["center"] = [float(cam[0]) + 6.0, float(cam[1]), 0.4]  # the camera looks along -X
    data["boxes"].insert(1, behind)
    return Layout.from_dict(data)


def test_every_box_in_view_keeps_prompt_and_grids_exactly():
    layout = street()
    masks = compute_masks(layout)
    view = boxes_in_view(masks.amodal)
    assert view.left_out == () and view.shown == tuple(range(len(layout.boxes)))
    settings = GenerationSettings.for_layout(layout, seed=1)
    assert view.settings(settings) == settings
    grids = masks.token_grids()
    assert np.array_equal(view.token_grids(grids), grids)
    assert view.note(layout.descriptions, "frame 1") is None
    # the same answer from the token grids as from the full-size masks
    assert boxes_in_view(grids) == view


def test_a_box_out_of_the_frame_leaves_the_prompt_and_the_grids():
    base = street()
    layout = with_box_behind_the_camera(base)
    masks = compute_masks(layout)
    assert not masks.amodal[1].any()
    view = boxes_in_view(masks.amodal)
    assert view.left_out == (1,)
    settings = view.settings(GenerationSettings.for_layout(layout, seed=1))
    assert "a brown dog" not in settings.descriptions
    request = GenerateRequest.for_settings(settings, b"png", view.token_grids(masks.token_grids()))
    request.validate()
    # exactly what the layout without that box would send
    reference = compute_masks(base)
    assert list(request.settings.descriptions) == base.descriptions
    assert np.array_equal(request.masks, reference.token_grids())
    prompt = compose_prompt(request.settings.scene_prompt, request.settings.descriptions).text
    assert prompt == compose_prompt(base.scene_prompt, base.descriptions).text
    note = view.note(layout.descriptions, "frame 4")
    assert note == "frame 4: not in view, left out of the prompt: 'a brown dog'"


def test_a_region_of_the_frame_counts_only_its_pixels():
    masks = np.zeros((3, 64, 64), dtype=np.uint8)
    masks[0, :10, :10] = 255
    masks[1, 50:, 50:] = 255
    masks[2, 20:30, 20:30] = 100  # below the binarising threshold: not inside
    assert boxes_in_view(masks).shown == (0, 1)
    tile = boxes_in_view(masks, (slice(32, 64), slice(32, 64)))
    assert tile.shown == (1,) and tile.left_out == (0, 2)


def test_nothing_in_view_is_a_clear_error():
    view = boxes_in_view(np.zeros((2, 32, 32), dtype=bool))
    with pytest.raises(NothingInViewError, match="no box is in view"):
        view.settings(GenerationSettings.for_layout(street(), seed=1))


def test_the_record_lists_the_boxes_left_out():
    layout = with_box_behind_the_camera(street())

    class Result:  # the fields of a protocol Result the record reads
        image = np.zeros((256, 320, 3), np.uint8)
        prompt, seed, steps, guidance = "a photo of ...", 1, 2, 3.5
        model, lora, is_noise, call_ids = {}, None, True, [[1], [2]]
        timings, model_timings, oscr_jpeg_quality = {}, {}, 90
        steps_computed, condition_cache, step_cache = 2, False, None

    record = GenerationRecord.from_result(Result(), layout, out_of_view=(1,))
    assert record.boxes_out_of_view == [1]
    assert record.descriptions == [d for i, d in enumerate(layout.descriptions) if i != 1]
    assert len(record.layout["boxes"]) == len(layout.boxes)  # the whole layout, to restore the scene
    assert GenerationRecord.from_dict(record.to_dict()).boxes_out_of_view == [1]
