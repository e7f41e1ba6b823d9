"""The condition (OSCR) stream's inputs: 1024 VAE tokens of the OSCR image and their position ids.

As in training, the OSCR render goes through a JPEG round trip at the profile's quality (the training
renders were saved as JPEG; a request may opt out), is resized to 512 x 512 (bilinear, as the training
transform did), scaled to [-1, 1], VAE-encoded with FLUX's shift and scale, and packed into 2x2
patches: a 32 x 32 token grid whatever the output size. Its position ids stretch that grid over the
image's token grid, so at 512 x 512 they equal the image ids and at 1024 x 1024 they are (0, 2i, 2j).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image

from seethrough_core.oscr_spec import jpeg_round_trip
from seethrough_core.token_grid import GRID_SIZE

from .latents import PIXELS_PER_TOKEN, grid_position_ids, pack_latents

CONDITION_GRID = GRID_SIZE  # 32 tokens per side, one per box-mask cell
CONDITION_SIZE = CONDITION_GRID * PIXELS_PER_TOKEN  # 512 px
CONDITION_TOKENS = CONDITION_GRID * CONDITION_GRID  # 1024


def condition_position_ids(image_height: int, image_width: int) -> torch.Tensor:
    """[1024, 3] ids (0, i*s_h, j*s_w) with s = image token grid / 32 on each axis."""
    row_step = (image_height / PIXELS_PER_TOKEN) / CONDITION_GRID
    col_step = (image_width / PIXELS_PER_TOKEN) / CONDITION_GRID
    return grid_position_ids(CONDITION_GRID, CONDITION_GRID, row_step, col_step)


def oscr_to_pixels(oscr_image: np.ndarray, jpeg_quality: int | None = None) -> torch.Tensor:
    """uint8 H x W x 3 OSCR render -> [1, 3, 512, 512] float32 in [-1, 1], after a JPEG round trip at
    ``jpeg_quality`` (None: the pixels as sent)."""
    if jpeg_quality is not None:
        oscr_image = jpeg_round_trip(oscr_image, jpeg_quality)
    image = Image.fromarray(np.ascontiguousarray(oscr_image))
    if image.size != (CONDITION_SIZE, CONDITION_SIZE):
        image = image.resize((CONDITION_SIZE, CONDITION_SIZE), resample=Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0)
    return pixels.permute(2, 0, 1).unsqueeze(0).contiguous()


@torch.inference_mode()
def encode_condition(vae: AutoencoderKL, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """VAE-encode the OSCR pixels into packed condition latents [1, 1024, 4 * latent_channels].

    The latent is *sampled* from the VAE's posterior with the request's generator, as training and the
    reference pipeline did, so a seed reproduces the same condition.
    """
    parameter = next(vae.parameters())
    posterior = vae.encode(pixels.to(device=parameter.device, dtype=parameter.dtype)).latent_dist
    latents = posterior.sample(generator)
    shift = vae.config.shift_factor or 0.0
    latents = (latents - shift) * vae.config.scaling_factor
    return pack_latents(latents)
