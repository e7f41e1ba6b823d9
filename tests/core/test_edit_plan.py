"""The plan of an edit of a saved picture, shared by `seethrough edit` and the add-on."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import replace

import numpy as np
import pytest

from seethrough_core.edit_plan import (
    EditPlanError,
    PreviousPicture,
    PreviousPictureError,
    base_picture_of,
    plan_edit,
    plan_variation,
)
from seethrough_core.edit_region import box_region
from seethrough_core.generate_and_save import base_path_for
from seethrough_core.generation_settings import SettingError
from seethrough_core.layout import Layout
from seethrough_core.limits import DEFAULT_REPROJECT_LIMIT
from seethrough_core.png import write_png
from seethrough_core.record import GenerationRecord
from seethrough_core.reprojection import reproject

DOG = {
    "description": "a small brown dog",
    "center": [-5.0, 1.2, 0.3],
    "size": [0.4, 0.8, 0.6],
    "rotation_euler_deg": [0.0, 0.0, 0.0],
}


@pytest.fixture
def previous(layout_dict) -> PreviousPicture:
    """A 256 x 256 picture made with seed 7, 12 steps, guidance 2.5 from the car-and-dog layout."""
    data = copy.deepcopy(layout_dict)
    data["boxes"].append(copy.deepcopy(DOG))
    layout = Layout.from_dict(data)
    record = GenerationRecord(
        prompt="p", scene_prompt=layout.scene_prompt, descriptions=layout.descriptions, seed=7, steps=12,
        guidance=2.5, width=256, height=256, model={"id": "tiny"}, lora=None, is_noise=True, call_ids=[],
        timings={}, layout=layout.to_dict(),
    )  # fmt: skip
    pixels = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    return PreviousPicture("before.png", {"file": "out/before.png"}, b"png bytes", pixels, record, layout)


def changed(previous: PreviousPicture, edit) -> Layout:
    data = previous.layout.to_dict()
    edit(data)
    return Layout.from_dict(data)


def test_a_moved_box_plans_an_edit_with_the_previous_settings(previous):
    layout = changed(previous, lambda d: d["boxes"][1].update(center=[-5.0, 0.6, 0.3]))
    plan = plan_edit(previous, layout, margin_px=8, strength=0.5, preview_interval=2)
    s = plan.settings
    assert (s.seed, s.steps, s.guidance, s.preview_interval) == (7, 12, 2.5, 2)
    assert plan.edit is not None and plan.edit.strength == 0.5
    assert np.array_equal(plan.edit.image, previous.image)
    assert np.array_equal(plan.region_mask > 0, plan.change.region) and plan.change.region.any()
    assert not plan.change.region.all()
    parent = plan.parent
    assert parent["sha256"] == hashlib.sha256(b"png bytes").hexdigest()
    assert (parent["kind"], parent["file"], parent["margin_px"], parent["strength"]) == (
        "edit", "out/before.png", 8, 0.5,
    )  # fmt: skip
    assert parent["record"]["seed"] == 7 and "moved" in parent["changes"][0]
    assert plan_edit(previous, layout, seed=99).settings.seed == 99


def test_an_unchanged_layout_is_refused_and_a_camera_move_keeps_the_picture_reprojected(previous):
    with pytest.raises(EditPlanError, match="unchanged from before.png"):
        plan_edit(previous, previous.layout)
    zoom = changed(previous, lambda d: d["camera"].update(lens_mm=d["camera"]["lens_mm"] * 0.9))
    plan = plan_edit(previous, zoom, margin_px=8, strength=0.75, reproject_limit=0.9)
    move = reproject(previous.image, previous.layout, zoom, 8)  # the car fills a third of the picture
    assert plan.parent["kind"] == "reprojected" and plan.settings.seed == 7
    assert np.array_equal(plan.edit.image, move.image) and np.array_equal(plan.reprojected, move.image)
    assert np.array_equal(plan.region_mask > 0, move.region) and plan.edit.strength == 0.75
    assert plan.parent["kept"] == round(1 - move.share, 4) and 0 < move.share < 0.9
    assert plan.parent["margin_px"] == 8 and plan.parent["changes"] == []
    assert "reprojected" in plan.summary()

    # past the limit (the default's: the car is untrusted), or with reprojection off: a full regeneration
    assert move.share > DEFAULT_REPROJECT_LIMIT
    for limit in (DEFAULT_REPROJECT_LIMIT, 0.0):
        full = plan_edit(previous, zoom, margin_px=8, reproject_limit=limit)
        assert full.edit is None and full.region_mask is None and full.reprojected is None
        assert full.parent["kind"] == "regeneration" and "camera" in full.parent["reason"]
    assert "too far" in plan_edit(previous, zoom, margin_px=8).summary()
    with pytest.raises(SettingError) as limit:
        plan_edit(previous, zoom, reproject_limit=-0.1)
    assert limit.value.field == "reproject-limit"


def test_bad_settings_name_their_field(previous):
    layout = changed(previous, lambda d: d["boxes"][1].update(description="a cat"))
    with pytest.raises(SettingError) as strength:
        plan_edit(previous, layout, strength=1.5)
    with pytest.raises(SettingError) as seed:
        plan_edit(previous, layout, seed=-1)
    assert (strength.value.field, seed.value.field) == ("strength", "seed")


def test_a_variation_regenerates_that_box_and_whatever_changed_since(previous):
    plan = plan_variation(previous, previous.layout, 1, seed=1234, margin_px=4)
    dog = box_region(previous.layout, 1, 4)
    assert np.array_equal(plan.change.region, dog) and plan.settings.seed == 1234
    assert plan.parent["kind"] == "variation" and plan.parent["box"] == "a small brown dog"

    layout = changed(previous, lambda d: d["boxes"][0].update(center=[-6.0, -0.5, 0.75]))
    both = plan_variation(previous, layout, 1, seed=1234, margin_px=4)
    assert (both.change.region & dog).sum() == dog.sum() and (both.change.region & ~dog).any()


def test_a_variation_needs_the_same_picture_and_a_visible_box(previous):
    moved = changed(previous, lambda d: d["camera"].update(lens_mm=35.0))
    with pytest.raises(EditPlanError, match="cannot vary one box"):
        plan_variation(previous, moved, 1, seed=1)
    behind = changed(previous, lambda d: d["boxes"].append({**DOG, "center": [10.0, 0.0, 0.3]}))
    with pytest.raises(EditPlanError, match="outside the camera's view"):
        plan_variation(previous, behind, 2, seed=1)


def test_a_frames_base_is_the_picture_its_record_names_and_never_another_one(previous, tmp_path):
    """The base of a frame made in two stages: where its record says (it may lie elsewhere), else
    NAME_base.png beside it; a file there that is not the picture the upscale started from is passed over."""
    base_record = previous.record
    stage = {"base": {"size": [base_record.width, base_record.height], "seed": base_record.seed}}
    elsewhere = tmp_path / "kept" / "first_base.png"
    frame = replace(base_record, width=512, height=512, upscale=stage, source={"base": str(elsewhere)})
    frame_path = tmp_path / "shot.png"
    write_png(frame_path, np.zeros((4, 4, 3), np.uint8), text=frame.png_text())
    missing = r"shot.png is a frame .*first_base.png, .*shot_base.png\)"
    with pytest.raises(PreviousPictureError, match=missing):
        base_picture_of(frame_path, remedy="generate it again")

    other = replace(base_record, seed=8)  # NAME_base.png beside, but of another seed: not this frame's base
    write_png(base_path_for(frame_path), previous.image, text=other.png_text())
    with pytest.raises(PreviousPictureError, match=r"shot_base.png \(another picture\)"):
        base_picture_of(frame_path, remedy="generate it again")
    write_png(base_path_for(frame_path), previous.image, text=base_record.png_text())
    assert base_picture_of(frame_path, remedy="") == base_path_for(frame_path)

    elsewhere.parent.mkdir()
    write_png(elsewhere, previous.image, text=base_record.png_text())
    assert base_picture_of(frame_path, remedy="") == elsewhere  # the record's own base first
    assert base_picture_of(None, frame, remedy="") == elsewhere  # a frame known by its record alone
