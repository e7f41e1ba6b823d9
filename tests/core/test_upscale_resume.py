"""Resuming an interrupted upscale from its kept tiles (no server: the kept folder's identity alone)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from seethrough_core.layout import Layout
from seethrough_core.png import write_bytes_atomic
from seethrough_core.record import GenerationRecord
from seethrough_core.upscale_plan import base_layout, frame_layout_at, plan_upscale
from seethrough_core.upscale_run import PLAN_FILE, VIEWS_FOLDER, Upscale, resume_or_start_over, view_folder

FRAME = (330, 256)
BASE_MP = 0.0625


@pytest.fixture
def interrupted(layout_dict, tmp_path) -> Upscale:
    """An upscale as Generate starts it (the frame's own layout and framing), with one tile kept."""
    layout_dict["resolution"] = list(FRAME)
    frame = Layout.from_dict(layout_dict)
    plan = plan_upscale(*FRAME, seed=3, base_megapixels=BASE_MP)
    base = base_layout(frame, plan)
    record = GenerationRecord(
        prompt="p", scene_prompt=base.scene_prompt, descriptions=base.descriptions, seed=3, steps=2,
        guidance=3.5, width=plan.base.width, height=plan.base.height, model={}, lora=None, is_noise=True,
        call_ids=[], timings={}, layout=base.to_dict(),
    )  # fmt: skip
    pixels = np.random.default_rng(1).integers(0, 256, (plan.base.height, plan.base.width, 3), np.uint8)
    upscale = Upscale(plan, frame, pixels, record, tmp_path / "shot.png", 2, 3.5, {})
    upscale.tiles_dir.mkdir()
    write_bytes_atomic(upscale.tiles_dir / PLAN_FILE, json.dumps(upscale.identity()).encode())
    np.save(upscale.tiles_dir / f"{plan.tiles[0].name}.npy", np.zeros((1, 1, 3), np.uint8))
    return upscale


def upscale_of_the_base(kept: Upscale, **changes) -> Upscale:
    """What the Upscale button asks for, given the base picture alone: its own camera at the frame size,
    a plan for an existing base (equal views, written differently)."""
    record = kept.base_record
    plan = plan_upscale(
        *FRAME, seed=3, base_megapixels=BASE_MP, base_size=(record.width, record.height), **changes
    )
    frame = frame_layout_at(Layout.from_dict(record.layout), FRAME)
    assert frame.to_dict() != kept.frame_layout.to_dict()
    return replace(kept, plan=plan, frame_layout=frame)


def test_the_upscale_of_a_base_resumes_the_interrupted_one(interrupted):
    asked = upscale_of_the_base(interrupted)
    resumed, started_over = resume_or_start_over(asked)
    assert not started_over and resumed.identity() == interrupted.identity()
    assert (interrupted.tiles_dir / f"{interrupted.plan.tiles[0].name}.npy").is_file()


@pytest.mark.parametrize(
    "change",
    [
        lambda u: replace(upscale_of_the_base(u), steps=3),
        lambda u: upscale_of_the_base(u, strength=0.5),
        lambda u: replace(upscale_of_the_base(u), base_image=u.base_image[::-1].copy()),  # another base
    ],
    ids=["steps", "strength", "pixels"],
)
def test_tiles_of_another_upscale_are_replaced(interrupted, change):
    asked = change(interrupted)
    run, started_over = resume_or_start_over(asked)
    assert started_over and run is asked and not interrupted.tiles_dir.exists()
    assert resume_or_start_over(asked) == (asked, False)  # nothing kept: a fresh start, nothing to say


def test_rendered_views_stay_when_the_tiles_are_replaced(interrupted):
    """A start-over removes the kept tiles and their identity, not the rendered views (each is known by
    its render key: a view rendered ahead for the new upscale is used, any other rendered again)."""
    view = view_folder(interrupted.tiles_dir, interrupted.plan.tiles[1])
    view.mkdir(parents=True)
    (view / "masks.json").write_text("{}")
    run, started_over = resume_or_start_over(replace(interrupted, steps=3))
    assert started_over
    assert [p.name for p in interrupted.tiles_dir.iterdir()] == [VIEWS_FOLDER]
    assert (view / "masks.json").is_file()
