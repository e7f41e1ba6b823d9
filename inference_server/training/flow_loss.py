"""The rectified-flow objective as the reference trains SeeThrough3D, and each micro-batch's random draws.

For clean latents ``x0``, Gaussian noise ``n`` and a noise level ``sigma``, the model sees
``x_sigma = (1 - sigma) x0 + sigma n`` and predicts the velocity ``n - x0``; the loss is the mean squared
error of that prediction (optionally weighted per latent pixel). The reference samples ``u ~ U[0, 1)``,
takes the scheduler's training timestep ``floor(1000 u)`` and its sigma: with FLUX.1-dev's scheduler
(dynamic shifting, so no static shift) that is ``sigma`` uniform over {0.001, 0.002, ..., 1}, with loss
weight 1 (its "none" weighting scheme). The model is told ``timestep = sigma``.

Every draw of a micro-batch (sigma, caption dropout, the noise, the VAE posterior samples) comes from a
generator seeded by (run seed, step, the sample's slot in the step): a resumed run draws exactly what
an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from ..latents import VAE_DOWNSAMPLE, unpack_latents


def training_sigmas(scheduler_config) -> torch.Tensor:
    """The noise levels of the scheduler's training timesteps, highest first (FLUX.1-dev: 1.0 ... 0.001)."""
    return FlowMatchEulerDiscreteScheduler.from_config(scheduler_config).sigmas.float().cpu()


@dataclass(frozen=True)
class MicroBatchDraw:
    sigma: float
    drop_caption: bool
    seed: int  # seeds the noise and the latent samples of this micro-batch


def draw_micro_batch(
    seed: int, step: int, slot: int, sigmas: torch.Tensor, caption_dropout: float
) -> MicroBatchDraw:
    """The random choices of sample ``slot`` of optimizer step ``step`` (0-based).

    ``slot = micro * processes + process`` numbers the step's samples across processes, so one process
    with a batch of 2 draws what two processes with a batch of 1 draw.
    """
    state = int(np.random.SeedSequence([seed, step, slot]).generate_state(1, dtype=np.uint64)[0])
    generator = torch.Generator("cpu").manual_seed(state)
    u = torch.rand(2, generator=generator, dtype=torch.float64)
    index = min(int(u[0] * len(sigmas)), len(sigmas) - 1)
    return MicroBatchDraw(
        sigma=float(sigmas[index]), drop_caption=bool(u[1] < caption_dropout), seed=state >> 1
    )


def noisy_latents(clean: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    return (1.0 - sigma) * clean + sigma * noise


def flow_matching_loss(
    prediction: torch.Tensor,
    clean: torch.Tensor,
    noise: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean of ``weights * (prediction - (noise - clean))**2``, in float32.

    ``prediction`` is the transformer's packed output; ``clean`` and ``noise`` are [1, C, h, w] latents;
    ``weights`` [h, w] per latent pixel (None: 1 everywhere).
    """
    height, width = clean.shape[-2] * VAE_DOWNSAMPLE, clean.shape[-1] * VAE_DOWNSAMPLE
    predicted = unpack_latents(prediction, height, width).float()
    error = (predicted - (noise.float() - clean.float())) ** 2
    if weights is not None:
        error = error * weights.to(error.device, torch.float32)
    return error.mean()
