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

from seethrough_core.edit_plan import PreviousPicture, plan_next_frame
from seethrough_core.generation_settings import GenerationSettings
from seethrough_core.layout import Box, Camera, Layout
from seethrough_core.pixel_sources import PixelSources, ShotFrame, replay_sources
from seethrough_core.record import GenerationRecord
from seethrough_core.reprojection import reproject

WIDTH, HEIGHT = 192, 128
FRAMES = 8
MARGIN = 4
CAR = Box("a red car", (1.0, 9.0, 0.75), (1.8, 4.5, 1.5), (0.0, 0.0, 0.0))


def shot_layout(frame: int, dolly: float) -> Layout:
    """Frame ``frame`` of a pan (1 degree a frame) with an optional dolly (``dolly`` m a frame)."""
    camera = Camera(
        location=(0.0, dolly * frame, 1.6), rotation_euler_deg=(80.0, 0.0, 1.0 * frame), lens_mm=35.0
    )
    return Layout("a street", (WIDTH, HEIGHT), camera, (CAR,))


def texture(seed: int) -> np.ndarray:
    """Fine detail (pixel noise) over smooth waves: bilinear resampling visibly softens it."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    waves = 60 * np.sin(0.07 * cols[..., None] + 0.05 * rows[..., None] + rng.uniform(0, 6, 3))
    return np.clip(128 + waves + rng.normal(0, 40, (HEIGHT, WIDTH, 3)), 0, 255).astype(np.uint8)


def previous_picture(label: str, image: np.ndarray, layout: Layout) -> PreviousPicture:
    record = GenerationRecord(
        prompt="p", scene_prompt=layout.scene_prompt, descriptions=layout.descriptions, seed=1, steps=2,
        guidance=3.5, width=WIDTH, height=HEIGHT, model={"id": "tiny"}, lora=None, is_noise=True,
        call_ids=[], timings={}, layout=layout.to_dict(),
    )  # fmt: skip
    return PreviousPicture(label, {"file": label}, label.encode(), image, record, layout)


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


def detail(image: np.ndarray, where: np.ndarray) -> float:
    grey = image.astype(np.float64).mean(axis=2)
    laplacian = np.abs(
        4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    )
    return float(laplacian[where[1:-1, 1:-1]].mean())


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
