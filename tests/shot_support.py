"""A small camera move over a street, painted with fine texture: where kept pixels come from after a chain
of camera moves (tests/core/test_pixel_sources.py, test_edit_chain.py). No model is needed: a frame's
region is "generated" as fresh texture, so bilinear resampling visibly softens what is kept."""

from __future__ import annotations

import numpy as np

from seethrough_core.layout import Box, Camera, Layout
from seethrough_core.record import GenerationRecord

WIDTH, HEIGHT = 192, 128
CAR = Box("a red car", (1.0, 9.0, 0.75), (1.8, 4.5, 1.5), (0.0, 0.0, 0.0))


def shot_layout(
    frame: int, dolly: float, size: tuple[int, int] = (WIDTH, HEIGHT), boxes: tuple[Box, ...] = (CAR,)
) -> Layout:
    """Frame ``frame`` of a pan (1 degree a frame) with an optional dolly (``dolly`` m a frame), ``size``
    (width, height) px."""
    camera = Camera(
        location=(0.0, dolly * frame, 1.6), rotation_euler_deg=(80.0, 0.0, 1.0 * frame), lens_mm=35.0
    )
    return Layout("a street", size, camera, boxes)


def texture(seed: int, size: tuple[int, int] = (WIDTH, HEIGHT)) -> np.ndarray:
    """Fine detail (pixel noise) over smooth waves: bilinear resampling visibly softens it."""
    width, height = size
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    waves = 60 * np.sin(0.07 * cols[..., None] + 0.05 * rows[..., None] + rng.uniform(0, 6, 3))
    return np.clip(128 + waves + rng.normal(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)


def record_of(layout: Layout) -> GenerationRecord:
    """A generation record of ``layout`` (seed 1, two steps), as a saved picture carries it."""
    return GenerationRecord(
        prompt="p", scene_prompt=layout.scene_prompt, descriptions=layout.descriptions, seed=1, steps=2,
        guidance=3.5, width=layout.width, height=layout.height, model={"id": "tiny"}, lora=None,
        is_noise=True, call_ids=[], timings={}, layout=layout.to_dict(),
    )  # fmt: skip


def detail(image: np.ndarray, where: np.ndarray) -> float:
    """The mean absolute Laplacian of the grey picture at ``where``: fine detail, lost by resampling."""
    grey = image.astype(np.float64).mean(axis=2)
    laplacian = np.abs(
        4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    )
    return float(laplacian[where[1:-1, 1:-1]].mean())
