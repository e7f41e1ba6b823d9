"""Regional regeneration (docs/edit.md): denoise only inside a mask, keep the previous image outside.

Latent side: the previous image is VAE-encoded once (the posterior mean: no draw from the request's
generator, so the condition latents are the same as a plain generation's with that seed). After every
denoising step the latents outside the region are replaced by the previous latents brought to the
next step's noise level with the job's seeded noise, x = (1 - sigma) x_prev + sigma noise, so the
model sees a consistent picture around the region while only the inside evolves. The region on the
latent grid is the pixel mask max-pooled to 8 px cells: it covers every pixel that may change.

Pixel side: after the decode, the new pixels are blended over the previous image with the mask
feathered inwards, so every pixel outside the mask is the previous image's, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import AutoencoderKL

from seethrough_core.edit_input import EditInput
from seethrough_core.edit_region import pool_cells

from .latents import VAE_DOWNSAMPLE, pack_latents


@dataclass
class LatentEdit:
    """One request's edit on packed latents."""

    previous: torch.Tensor  # packed clean latents of the previous image, [1, tokens, features]
    noise: torch.Tensor  # the job's seeded initial noise, same shape
    inside: torch.Tensor  # bool, same shape: where the latents may evolve
    strength: float

    @classmethod
    @torch.inference_mode()
    def prepare(cls, vae: AutoencoderKL, edit: EditInput, noise: torch.Tensor) -> LatentEdit:
        previous = encode_image(vae, edit.image).to(device=noise.device, dtype=noise.dtype)
        cells = torch.from_numpy(pool_cells(edit.region(), VAE_DOWNSAMPLE))
        inside = pack_latents(cells[None, None].expand(1, previous.shape[2] // 4, -1, -1).contiguous())
        return cls(previous, noise, inside.to(noise.device), float(edit.strength))

    def to(self, device: torch.device) -> LatentEdit:
        return LatentEdit(
            self.previous.to(device), self.noise.to(device), self.inside.to(device), self.strength
        )

    def first_step(self, steps: int) -> int:
        """The step to start at: strength s runs the last s of the schedule (at least one step)."""
        return min(int(steps - steps * self.strength), steps - 1)

    def noised_previous(self, sigma: torch.Tensor) -> torch.Tensor:
        """The previous image at noise level ``sigma``, with the job's noise (flow matching)."""
        sigma = sigma.to(self.previous.device, self.previous.dtype)
        return (1 - sigma) * self.previous + sigma * self.noise

    def start(self, sigma: torch.Tensor) -> torch.Tensor:
        """The first latents: pure noise at strength 1, the noised previous image below it."""
        return self.noised_previous(sigma)

    def pin(self, latents: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``latents`` at noise level ``sigma``, outside the region set to the previous image."""
        return torch.where(self.inside, latents, self.noised_previous(sigma))


@torch.inference_mode()
def encode_image(vae: AutoencoderKL, image: np.ndarray) -> torch.Tensor:
    """uint8 H x W x 3 -> packed, normalised FLUX latents (the posterior mean)."""
    parameter = next(vae.parameters())
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    posterior = vae.encode(pixels.to(device=parameter.device, dtype=parameter.dtype)).latent_dist
    latents = (posterior.mode() - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor
    return pack_latents(latents)


def feather(region: np.ndarray, px: int) -> np.ndarray:
    """float32 H x W weights of the new pixels: 0 outside ``region``, rising over ``px`` pixels inside its
    edge to 1 (chessboard distance; the frame's border is not an edge)."""
    inside = np.asarray(region, dtype=bool)
    depth = inside.astype(np.float32)
    eroded = inside
    for _ in range(px):
        padded = np.pad(eroded, 1, mode="edge")
        height, width = eroded.shape
        shifted = [padded[dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)]
        eroded = np.logical_and.reduce(shifted)
        depth += eroded
    return depth / (px + 1)


def composite(previous: np.ndarray, generated: np.ndarray, region: np.ndarray, feather_px: int) -> np.ndarray:
    """The generated pixels over the previous image through the feathered region; outside the region
    the result is ``previous`` exactly."""
    weight = feather(region, feather_px)[..., None]
    blended = previous.astype(np.float32) * (1 - weight) + generated.astype(np.float32) * weight
    blended = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return np.where(np.asarray(region, dtype=bool)[..., None], blended, previous)
