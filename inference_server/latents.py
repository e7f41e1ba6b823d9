"""FLUX latent layout: 2x2 patch packing and the position ids RoPE reads.

FLUX's VAE downsamples by 8 and the transformer sees 2x2 patches of latents as one token, so an
H x W image is an (H/16) x (W/16) token grid. Position ids are (0, row, col) per token; text ids are 0.
"""

from __future__ import annotations

import torch

VAE_DOWNSAMPLE = 8
PATCH = 2
PIXELS_PER_TOKEN = VAE_DOWNSAMPLE * PATCH  # 16


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] latents -> [B, (h/2)*(w/2), C*4] tokens in row-major patch order."""
    batch, channels, height, width = latents.shape
    patches = latents.view(batch, channels, height // PATCH, PATCH, width // PATCH, PATCH)
    patches = patches.permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(batch, (height // PATCH) * (width // PATCH), channels * PATCH * PATCH)


def unpack_latents(tokens: torch.Tensor, image_height: int, image_width: int) -> torch.Tensor:
    """Inverse of :func:`pack_latents` for an image of ``image_height`` x ``image_width`` pixels."""
    batch, _, features = tokens.shape
    rows = image_height // PIXELS_PER_TOKEN
    cols = image_width // PIXELS_PER_TOKEN
    channels = features // (PATCH * PATCH)
    patches = tokens.view(batch, rows, cols, channels, PATCH, PATCH)
    patches = patches.permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(batch, channels, rows * PATCH, cols * PATCH)


def grid_position_ids(rows: int, cols: int, row_step: float = 1.0, col_step: float = 1.0) -> torch.Tensor:
    """[rows*cols, 3] float ids (0, i*row_step, j*col_step), row-major like the packed tokens."""
    ids = torch.zeros(rows, cols, 3, dtype=torch.float32)
    ids[..., 1] = torch.arange(rows, dtype=torch.float32)[:, None] * row_step
    ids[..., 2] = torch.arange(cols, dtype=torch.float32)[None, :] * col_step
    return ids.reshape(rows * cols, 3)


def image_position_ids(image_height: int, image_width: int) -> torch.Tensor:
    """Ids of the image tokens: (0, row, col) on the (H/16) x (W/16) grid."""
    return grid_position_ids(image_height // PIXELS_PER_TOKEN, image_width // PIXELS_PER_TOKEN)


def text_position_ids(text_length: int) -> torch.Tensor:
    """Text tokens all sit at position (0, 0, 0)."""
    return torch.zeros(text_length, 3, dtype=torch.float32)
