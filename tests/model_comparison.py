"""Comparing two pipelines that should be the same model: weights exactly, generations with a tolerance."""

from __future__ import annotations

import numpy as np
import torch

from inference_server.pipeline import SeeThroughPipeline


def generate_with_latents(pipeline: SeeThroughPipeline, request: dict) -> tuple[np.ndarray, torch.Tensor]:
    """The image and the final packed latents of one generation."""
    latents: list[torch.Tensor] = []
    image = pipeline(**request, step_callback=lambda info: latents.append(info.latents.clone())).image
    return image, latents[-1]


def assert_same_generation(first: SeeThroughPipeline, second: SeeThroughPipeline, request: dict) -> None:
    """Two pipelines holding the same weights generate the same picture. Compared with a tolerance: two
    model instances (or processes, thread counts, CPUs) may take kernels that round differently in the
    last bit, which can move a pixel by 1/255; a real difference (other weights, inputs) is far larger."""
    image_a, latents_a = generate_with_latents(first, request)
    image_b, latents_b = generate_with_latents(second, request)
    torch.testing.assert_close(latents_a, latents_b, rtol=1e-4, atol=1e-5)
    assert np.abs(image_a.astype(np.int16) - image_b.astype(np.int16)).max() <= 1


def assert_same_weights(first: torch.nn.Module, second: torch.nn.Module) -> None:
    """Every parameter and buffer equal, bit for bit (loaded values, not results of arithmetic)."""
    state_a, state_b = first.state_dict(), second.state_dict()
    assert state_a.keys() == state_b.keys()
    for name, tensor in state_a.items():
        assert tensor.dtype == state_b[name].dtype and torch.equal(tensor, state_b[name]), name
