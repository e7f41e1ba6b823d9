"""Fixtures of the model-side tests (inference_server pipeline): the tiny random pipeline, a valid request."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from inference_server.pipeline import SeeThroughPipeline

# The tiny model's ops are microseconds; on our shared 2-core machines a second intra-op thread only
# spins against the other engineers' jobs (measured: 4 s instead of 0.4 s per tiny generation).
torch.set_num_threads(1)


def overlapping_masks(count: int) -> np.ndarray:
    """``count`` 32 x 32 box masks, neighbours overlapping."""
    masks = np.zeros((count, 32, 32), dtype=bool)
    for box in range(count):
        top, left = 2 + 3 * box, 1 + 5 * box
        masks[box, top : top + 14, left : left + 12] = True
    return masks


def random_oscr(seed: int = 0, height: int = 300, width: int = 400) -> np.ndarray:
    """A stand-in OSCR render: random uint8 RGB of any size."""
    return (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_pipeline() -> SeeThroughPipeline:
    """Shared and never modified by tests (tests that change LoRAs or settings build their own)."""
    return SeeThroughPipeline.tiny(seed=0)


@pytest.fixture
def box_masks() -> Callable[[int], np.ndarray]:
    return overlapping_masks


@pytest.fixture
def make_request() -> Callable[..., dict]:
    """Keyword arguments of a small valid request; pass overrides as keywords."""

    def build(**overrides) -> dict:
        request = {
            "scene_prompt": "on mars, sci-fi background, scary.",
            "descriptions": ["mars rover", "spaceship"],
            "oscr_image": random_oscr(),
            "box_token_masks": overlapping_masks(2),
            "width": 256,
            "height": 256,
            "seed": 42,
            "num_inference_steps": 3,
        }
        request.update(overrides)
        return request

    return build
