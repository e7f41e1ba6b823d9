"""Fast step previews: a linear latent -> RGB map instead of a VAE decode.

The map is fitted once per pipeline by least squares on the pipeline's own VAE: encode a fixed
synthetic colour chart, pair each latent pixel with the mean colour of the 8 x 8 pixels it covers.
That works for any VAE (FLUX's or the tiny random one) with no hand-copied constants.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image

PREVIEW_MAX_SIDE = 128
_CHART_SIZE = 256


def _colour_chart(size: int = _CHART_SIZE, seed: int = 0) -> np.ndarray:
    """Float [size, size, 3] in [0, 1]: smooth gradients with flat random-colour blocks over them."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    chart = np.stack(
        [
            np.broadcast_to(ramp[None, :], (size, size)),
            np.broadcast_to(ramp[:, None], (size, size)),
            np.broadcast_to(1.0 - ramp[None, :], (size, size)),
        ],
        axis=-1,
    ).copy()
    block = size // 8
    for row in range(0, size, block):
        for col in range(0, size, block):
            if rng.random() < 0.5:
                chart[row : row + block, col : col + block] = rng.random(3, dtype=np.float32)
    return chart


class LatentPreviewer:
    """Turns raw (un-normalised) VAE latents into a small uint8 RGB image."""

    def __init__(self, max_side: int = PREVIEW_MAX_SIDE) -> None:
        self.max_side = max_side
        self.weights: torch.Tensor | None = None  # [latent_channels + 1, 3], float32 on the CPU

    @property
    def fitted(self) -> bool:
        return self.weights is not None

    @torch.inference_mode()
    def fit(self, vae: AutoencoderKL) -> None:
        parameter = next(vae.parameters())
        chart = torch.from_numpy(_colour_chart()).permute(2, 0, 1).unsqueeze(0)
        pixels = (chart * 2 - 1).to(device=parameter.device, dtype=parameter.dtype)
        latents = vae.encode(pixels).latent_dist.mode().float().cpu()[0]  # [c, h, w]
        factor = chart.shape[-1] // latents.shape[-1]  # 8 for FLUX's VAE
        target = torch.nn.functional.avg_pool2d(chart, factor)[0]  # [3, h, w]
        features = torch.cat([latents.flatten(1), torch.ones(1, latents[0].numel())], dim=0).T
        self.weights = torch.linalg.lstsq(features, target.flatten(1).T).solution

    @torch.inference_mode()
    def __call__(self, raw_latents: torch.Tensor) -> np.ndarray:
        """[1, c, h, w] raw latents -> uint8 [<=max_side, <=max_side, 3]."""
        if self.weights is None:
            raise RuntimeError("LatentPreviewer.fit(vae) must run before previews")
        latents = raw_latents[0].float().cpu()
        rgb = torch.einsum("chw,cr->hwr", latents, self.weights[:-1]) + self.weights[-1]
        image = Image.fromarray((rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
        scale = self.max_side / max(image.size)
        if scale < 1:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, resample=Image.Resampling.BILINEAR)
        return np.asarray(image)
