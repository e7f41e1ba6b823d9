"""A long camera move samples each kept pixel once, from the frame that generated it (pixel_sources.py).

A shot is played through the core's frame planner as `seethrough batch --consistent` plays it: each
frame an edit of the frame before, its region "generated" as fresh texture (no model is needed to test
where kept pixels come from). With pixel sources, a kept pixel of the last frame is the first frame's
picture resampled once into the last camera (the layout's exact reprojection), within one 8-bit level;
chained frame to frame, the same pixels drift from it and lose detail.
"""

from __future__ import annotations

import numpy as np
import pytest
from reprojection_support import RESAMPLE_TOLERANCE
from shot_support import HEIGHT, WIDTH, detail, record_of, shot_layout, texture

from seethrough_core.edit_plan import PreviousPicture, plan_next_frame
from seethrough_core.generation_settings import GenerationSettings
from seethrough_core.layout import Layout
from seethrough_core.pixel_sources import PixelSources, ShotFrame, replay_sources
from seethrough_core.reprojection import reproject

FRAMES = 8
MARGIN = 4


def previous_picture(label: str, image: np.ndarray, layout: Layout) -> PreviousPicture:
    return PreviousPicture(label, {"file": label}, label.encode(), image, record_of(layout), layout)


def play(dolly: float, with_sources: bool):
    """The shot's frames (label -> picture), layouts, the last plan, and what each frame generated."""
    layouts = [shot_layout(k, dolly) for k in range(FRAMES)]
    pictures = {"f0": texture(0)}
    sources = PixelSources.generated("f0", HEIGHT, WIDTH) if with_sources else None
    generated, plan = [None], None
    settings = GenerationSettings.for_layout(layouts[0], seed=1, steps=2, guidance=3.5)
    for k in range(1, FRAMES):
        before = previous_picture(f"f{k - 1}", pictures[f"f{k - 1}"], layouts[k - 1])
        plan = plan_next_frame(
            before, layouts[k], settings, margin_px=MARGIN, reproject_limit=0.9,
            sources=sources, picture_of=pictures.__getitem__, label=f"f{k}",
        )  # fmt: skip
        assert plan.parent["kind"] == "reprojected" and plan.edit is not None
        region = plan.change.region
        # the "model" generates the region afresh and keeps every other pixel as it was given
        pictures[f"f{k}"] = np.where(region[..., None], texture(k), plan.edit.image)
        generated.append(region)
        sources = plan.sources
    return pictures, layouts, plan, generated


@pytest.mark.parametrize("dolly", [0.0, 0.15], ids=["pan", "pan-and-dolly"])
def test_kept_pixels_are_the_first_frame_resampled_once(dolly):
    pictures, layouts, plan, _ = play(dolly, with_sources=True)
    last = pictures[f"f{FRAMES - 1}"]
    direct = reproject(pictures["f0"], layouts[0], layouts[-1], 0)  # one resample, first to last camera
    from_first = (plan.sources.index == plan.sources.labels.index("f0")) & direct.seen
    assert from_first.mean() > 0.3  # most of the frame is still the first frame's
    error = np.abs(last.astype(int) - direct.image.astype(int))[from_first]
    assert error.max() <= RESAMPLE_TOLERANCE
    assert set(plan.parent["sources"]) == set(plan.sources.labels)
    assert abs(sum(plan.parent["sources"].values()) - 1) < 1e-3

    chained, _, _, _ = play(dolly, with_sources=False)  # frame to frame: resampled at every frame
    drift = np.abs(chained[f"f{FRAMES - 1}"].astype(int) - direct.image.astype(int))[from_first]
    assert drift.mean() > 5 * max(error.mean(), 0.2)
    assert detail(last, from_first) > 0.95 * detail(direct.image, from_first)
    assert detail(chained[f"f{FRAMES - 1}"], from_first) < 0.8 * detail(direct.image, from_first)


def test_sources_rebuilt_from_the_saved_frames_are_the_ones_kept_while_the_shot_ran():
    _, layouts, plan, generated = play(0.15, with_sources=True)
    frames = [ShotFrame("f0", layouts[0], None, None)]
    frames += [ShotFrame(f"f{k}", layouts[k], "reprojected", generated[k]) for k in range(1, FRAMES)]
    rebuilt = replay_sources(frames)
    assert rebuilt.label == plan.sources.label and rebuilt.labels == plan.sources.labels
    assert np.array_equal(rebuilt.index, plan.sources.index)
    assert np.allclose(rebuilt.xy, plan.sources.xy, atol=1e-9)
    # a full generation on the way starts afresh: everything after it comes from it or later
    frames[3] = ShotFrame("f3", layouts[3], "regeneration", None)
    assert "f0" not in replay_sources(frames).labels and "f3" in replay_sources(frames).labels


def test_a_spot_between_two_sources_comes_from_the_previous_frame():
    sources = PixelSources.generated("a", 4, 4)
    half = np.zeros((4, 4), dtype=bool)
    half[:, 2:] = True
    sources = sources.edited(half, "b")  # columns 2-3 generated in b, 0-1 kept from a
    shift = np.stack(np.meshgrid(np.arange(4.0), np.arange(4.0)), axis=-1)
    shift[..., 0] = np.clip(shift[..., 0] + 0.5, 0, 3)  # half a pixel to the right
    moved = sources.moved(shift, np.zeros((4, 4), dtype=bool), "c")
    assert [moved.labels[i] for i in moved.index[0]] == ["a", "b", "b", "b"]  # column 1 straddles a | b
    assert np.allclose(moved.xy[0, :, 0], [0.5, 1.5, 2.5, 3.0])
    assert moved.shares() == {"b": 0.75, "a": 0.25}
