"""An edit of a frame made in two stages refines only the tiles its change reaches (frame_reuse.py).

The geometry is exact and needs no model: which frame pixels a changed base pixel reaches through the
enlargement, which tiles cover them, and that every other pixel is the previous frame's, byte for byte.
What a real model's refined tiles look like beside the kept ones only the released checkpoint can show.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from shot_support import record_of, shot_layout, texture

from seethrough_core.edit_plan import PreviousPicture, read_previous_file
from seethrough_core.frame_reuse import (
    frame_reuse,
    parent_frame_path,
    reuse_of_parent,
    tiles_a_base_edit_reaches,
    tiles_an_edit_reaches,
)
from seethrough_core.generate_and_save import Destination, region_path_for, save_image
from seethrough_core.layout import Camera
from seethrough_core.png import encode_png
from seethrough_core.record import GenerationRecord, parent_entry
from seethrough_core.resample import sample_view
from seethrough_core.upscale_plan import frame_layout_at, plan_upscale
from seethrough_core.upscale_run import Upscale, upscale_record

BASE = (448, 256)
FRAME = (640, 360)  # 3 x 2 tiles of 256 px
STEPS, GUIDANCE = 2, 3.5


def _plan(strength: float = 0.35, seed: int = 1):
    return plan_upscale(*FRAME, seed=seed, base_megapixels=0.0625, strength=strength, base_size=BASE)


def _frame_layout(camera: Camera | None = None):
    layout = frame_layout_at(shot_layout(0, 0.0, FRAME), FRAME)
    return layout if camera is None else replace(layout, camera=camera)


def _previous_frame(plan=None, steps: int = STEPS) -> tuple[bytes, np.ndarray, GenerationRecord]:
    """A frame as an upscale saves it: its PNG, pixels and record (each tile listed with its seed)."""
    plan = plan or _plan()
    layout = _frame_layout()
    base_record = replace(record_of(shot_layout(0, 0.0, BASE)), width=BASE[0], height=BASE[1])
    upscale = Upscale(plan, layout, texture(1, BASE), base_record, Path("frame.png"), steps, GUIDANCE, {})
    tiles = [{**t.to_dict(), "boxes": [0], "prompt": "p", "kept": False} for t in plan.tiles]
    record = upscale_record(upscale, tiles)
    image = texture(2, FRAME)
    return encode_png(image), image, record


def _reuse(old_base, new_base, *, plan=None, steps=STEPS, camera=None, previous=None, region=None):
    png, image, record = previous or _previous_frame()
    picture = PreviousPicture("frame.png", {"file": "frame.png"}, png, image, record, _frame_layout())
    return frame_reuse(
        picture, old_base, new_base,
        plan=plan or _plan(), frame_layout=_frame_layout(camera), steps=steps, guidance=GUIDANCE,
        region=region,
    )  # fmt: skip


def _edited(old_base: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    new_base = old_base.copy()
    new_base[rows, cols] = 255 - new_base[rows, cols]
    return new_base


def test_a_change_in_one_corner_refines_only_the_tile_it_reaches():
    old_base = texture(1, BASE)
    new_base = _edited(old_base, slice(10, 30), slice(10, 40))
    plan = _plan()
    reuse = _reuse(old_base, new_base)
    assert reuse is not None
    assert [t.name for t in reuse.refined(plan)] == ["tile_r00_c00"] and len(plan.tiles) == 6

    # every frame pixel whose enlargement changed is in `changed`, and `changed` is not much more
    base = plan.base
    before, after = (sample_view(b, base.rect, base.scale, 0, 0, *FRAME) for b in (old_base, new_base))
    moved = (before != after).any(axis=2)
    assert moved.any() and not (moved & ~reuse.changed).any()
    assert reuse.changed.sum() < 2.5 * moved.sum()
    # the tiles it keeps are listed as the previous frame's
    kept = reuse.record(plan)
    assert [t["name"] for t in kept] == [t.name for t in plan.tiles[1:]]
    assert all(t["reused"] and t["seed"] == s.seed for t, s in zip(kept, plan.tiles[1:], strict=True))


def test_the_new_frame_is_the_previous_one_outside_the_reach_and_the_refined_tiles_on_the_change():
    old_base = texture(1, BASE)
    reuse = _reuse(old_base, _edited(old_base, slice(100, 150), slice(200, 260)))
    refined = np.random.default_rng(7).uniform(0, 255, (FRAME[1], FRAME[0], 3)).astype(np.float32)
    frame = reuse.composite(refined)
    assert np.array_equal(frame[~reuse.reach], reuse.image[~reuse.reach])
    assert np.array_equal(frame[reuse.changed], np.rint(refined[reuse.changed]).astype(np.uint8))
    between = reuse.reach & ~reuse.changed  # the feather: a mix of the two
    low = np.minimum(reuse.image, np.rint(refined)).astype(np.int16)
    high = np.maximum(reuse.image, np.rint(refined)).astype(np.int16)
    assert (
        between.any() and ((frame[between] >= low[between] - 1) & (frame[between] <= high[between] + 1)).all()
    )


def test_the_edits_region_counts_even_where_the_model_left_pixels_equal():
    old_base = texture(1, BASE)
    region = np.zeros(BASE[::-1], dtype=bool)
    region[230:250, 400:440] = True
    reuse = _reuse(old_base, old_base.copy(), region=region)
    assert [t.name for t in reuse.refined(_plan())] == ["tile_r01_c02"]


@pytest.mark.parametrize(
    ("rows", "cols"),
    [(slice(10, 30), slice(10, 40)), (slice(100, 150), slice(200, 260)), (slice(0, 1), slice(0, 1))],
)
def test_the_tiles_an_edit_reaches_are_known_from_its_region_before_the_base_is_made(rows, cols):
    """An edit keeps every base pixel outside its region: the region alone names the tiles the frame
    reuse will refine, so their views can render while the base is generated."""
    old_base = texture(1, BASE)
    region = np.zeros(BASE[::-1], dtype=np.uint8)
    region[rows, cols] = 255
    reuse = _reuse(old_base, _edited(old_base, rows, cols), region=region)
    plan = _plan()
    assert tiles_an_edit_reaches(region, plan) == reuse.refined(plan)
    assert 0 < len(reuse.refined(plan)) < len(plan.tiles)


def test_the_tiles_a_saved_base_edit_reaches_come_from_the_region_beside_it(tmp_path):
    """A batch knows them from the files: the region saved beside the base; without one (a copy), or
    with one that cannot be read, it does not know them (None)."""
    base_path = tmp_path / "0002_1_base.png"
    region = np.zeros(BASE[::-1], dtype=np.uint8)
    region[230:250, 400:440] = 255
    plan = _plan()
    assert tiles_a_base_edit_reaches(base_path, plan) is None
    region_path_for(base_path).write_bytes(encode_png(np.dstack([region] * 3)))
    assert tiles_a_base_edit_reaches(base_path, plan) == tiles_an_edit_reaches(region, plan)
    assert [t.name for t in tiles_a_base_edit_reaches(base_path, plan)] == ["tile_r01_c02"]
    region_path_for(base_path).write_bytes(b"not a png")
    assert tiles_a_base_edit_reaches(base_path, plan) is None


def test_a_base_changed_everywhere_keeps_nothing_of_the_previous_frame():
    old_base = texture(1, BASE)
    assert _reuse(old_base, texture(3, BASE)) is None  # a regeneration: every tile, as without reuse
    edge = _edited(old_base, slice(0, 256), slice(130, 140))  # a band across two tile columns
    reuse = _reuse(old_base, edge)
    assert reuse.refined(_plan()) == _plan().tiles[:2] + _plan().tiles[3:5] and not reuse.reach.all()


@pytest.mark.parametrize(
    "mismatch",
    ["steps", "strength", "camera", "no upscale", "a tile missing", "base size", "another base"],
)
def test_a_frame_of_another_plan_steps_or_camera_lends_nothing(mismatch):
    old_base = texture(1, BASE)
    new_base = _edited(old_base, slice(10, 30), slice(10, 40))
    png, image, record = _previous_frame()
    kwargs = {}
    if mismatch == "steps":
        kwargs["steps"] = STEPS + 1
    elif mismatch == "strength":
        kwargs["plan"] = _plan(strength=0.5)
    elif mismatch == "camera":
        camera = _frame_layout().camera
        kwargs["camera"] = replace(camera, lens_mm=camera.lens_mm + 1)
    elif mismatch == "no upscale":
        record = replace(record, upscale=None)
    elif mismatch == "a tile missing":
        record = replace(record, upscale={**record.upscale, "tiles": record.upscale["tiles"][1:]})
    elif mismatch == "base size":
        old_base, new_base = old_base[:, :-16], new_base[:, :-16]
    else:  # the frame was upscaled from other base pixels (that base was made again since)
        old_base = texture(5, BASE)
        new_base = _edited(old_base, slice(10, 30), slice(10, 40))
    assert _reuse(old_base, new_base, previous=(png, image, record), **kwargs) is None


def test_a_variation_with_another_seed_still_reuses_the_untouched_tiles():
    old_base = texture(1, BASE)
    reuse = _reuse(old_base, _edited(old_base, slice(10, 30), slice(10, 40)), plan=_plan(seed=99))
    assert reuse is not None and len(reuse.refined(_plan(seed=99))) == 1


def test_a_batch_finds_the_frame_before_through_the_bases_parent_link(tmp_path):
    """`batch --consistent`: frame k's base is an edit of frame k-1's base (its record's parent, with the
    region beside it); frame k-1 is NAME.png beside that base. Changed since, it lends nothing."""
    plan = _plan()
    old_base = texture(1, BASE)
    base_record = replace(record_of(shot_layout(0, 0.0, BASE)), width=BASE[0], height=BASE[1])
    old_path = tmp_path / "0001_1_base.png"
    save_image(old_base, base_record, Destination(old_path, {}))
    _, frame_image, frame_record = _previous_frame()
    save_image(frame_image, frame_record, Destination(tmp_path / "0001_1.png", {}))
    region = np.zeros(BASE[::-1], dtype=np.uint8)
    region[230:250, 400:440] = 255
    parent = parent_entry(old_path.read_bytes(), base_record, file=str(old_path), kind="edit", strength=1.0)
    new_path = tmp_path / "0002_1_base.png"
    new_record = replace(base_record, parent=parent)
    save_image(old_base, new_record, Destination(new_path, {}, parent=parent, region=region))

    def reuse():
        base = read_previous_file(new_path, "")
        assert parent_frame_path(base.record) == tmp_path / "0001_1.png"
        return reuse_of_parent(base, plan=plan, frame_layout=_frame_layout(), steps=STEPS, guidance=GUIDANCE)

    found = reuse()
    assert found is not None and [t.name for t in found.refined(plan)] == ["tile_r01_c02"]  # the region
    assert np.array_equal(found.image, frame_image)
    save_image(texture(9, BASE), base_record, Destination(old_path, {}))  # that base made again since
    assert reuse() is None
