"""The VAE decode, in tiles only where a whole decode would not fit the memory mode's budget (16gb).

A tiled decode (diffusers' ``AutoencoderKL.tiled_decode``: overlapping tiles blended at the seams)
changes the pixels slightly, so it is used only above the budget, and the choice depends only on the
image size and the mode, never on the free memory at that moment: the same request gives the same
image every time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers import AutoencoderKL

# Peak working memory of FLUX's VAE decoder per output pixel in a 2-byte dtype (estimate from its
# activations: 128-256 channels at full and half resolution, several alive at once, ~3 GiB at 1024 px).
DECODE_BYTES_PER_PIXEL_2BYTE = 3 * 1024
TILE_PX = 512  # the side of one decoded tile (before the blended overlap is cut)
TILE_OVERLAP = 0.25


def decode_bytes(width: int, height: int, dtype: torch.dtype) -> int:
    """Estimated peak working memory of a whole decode at width x height in ``dtype``."""
    return width * height * DECODE_BYTES_PER_PIXEL_2BYTE * dtype.itemsize // 2


def needs_tiles(width: int, height: int, dtype: torch.dtype, budget_bytes: int | None) -> bool:
    return budget_bytes is not None and decode_bytes(width, height, dtype) > budget_bytes


def decode(vae: AutoencoderKL, raw: torch.Tensor, tiled: bool) -> torch.Tensor:
    """Decode raw (unpacked, unnormalised) latents to pixels in [-1, 1], whole or in TILE_PX tiles."""
    if not tiled:
        return vae.decode(raw, return_dict=False)[0]
    with _tile_size(vae, TILE_PX):
        return vae.tiled_decode(raw, return_dict=False)[0]


@contextmanager
def _tile_size(vae: AutoencoderKL, tile_px: int) -> Iterator[None]:
    """diffusers' tiles are the VAE's training size (1024 px for FLUX: one tile at 1024 px); use ours."""
    saved = vae.tile_sample_min_size, vae.tile_latent_min_size, vae.tile_overlap_factor
    downscale = 2 ** (len(vae.config.block_out_channels) - 1)
    vae.tile_sample_min_size, vae.tile_latent_min_size = tile_px, tile_px // downscale
    vae.tile_overlap_factor = TILE_OVERLAP
    try:
        yield
    finally:
        vae.tile_sample_min_size, vae.tile_latent_min_size, vae.tile_overlap_factor = saved
