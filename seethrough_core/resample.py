"""Resampling a picture onto another pixel grid with one scale and offset (numpy only: runs in Blender),
and the bilinear taps of reprojection and pixel sources.

The base picture becomes the start of each tile this way: a final-frame pixel centre x maps to the base
coordinate (x - rect.x) * scale, so the framing is exact to a fraction of a pixel. Bicubic (Keys,
a = -0.5) when enlarging; when shrinking, the kernel widens with the scale, so no detail aliases.
"""

from __future__ import annotations

import numpy as np

from .geometry import FrameRect


def bilinear_taps(
    x: np.ndarray, y: np.ndarray, width: int, height: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Bilinear sampling at the points (x, y) of a ``width`` x ``height`` picture (pixel-index space,
    within [0, width - 1] x [0, height - 1]): the four neighbours' rows, columns and weights. On the
    last row or column the neighbour past it has weight 0 (its index is clipped)."""
    x0 = np.clip(np.floor(x), 0, max(width - 2, 0)).astype(np.int64)
    y0 = np.clip(np.floor(y), 0, max(height - 2, 0)).astype(np.int64)
    fx, fy = x - x0, y - y0
    return [
        (
            np.minimum(y0 + dy, height - 1),
            np.minimum(x0 + dx, width - 1),
            (fx if dx else 1.0 - fx) * (fy if dy else 1.0 - fy),
        )
        for dy in (0, 1)
        for dx in (0, 1)
    ]


def _keys(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    a = -0.5
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _axis_taps(coords: np.ndarray, size: int, stretch: float) -> tuple[np.ndarray, np.ndarray]:
    """Source indices (clamped to the edge) and normalised weights for sample positions ``coords``
    (in source pixel-index space: pixel i's centre is at i)."""
    radius = 2.0 * stretch
    first = np.floor(coords - radius).astype(np.int64) + 1
    offsets = np.arange(int(np.ceil(2 * radius)) + 1)
    index = first[:, None] + offsets[None, :]
    weights = _keys((index - coords[:, None]) / stretch)
    weights /= weights.sum(axis=1, keepdims=True)
    return np.clip(index, 0, size - 1), weights.astype(np.float32)


def sample_view(
    image: np.ndarray, image_rect: FrameRect, scale: float, x: int, y: int, width: int, height: int
) -> np.ndarray:
    """The frame pixels [x, x + width) x [y, y + height) of ``image`` (uint8 H x W x 3), whose view is
    ``image_rect`` in frame pixels at ``scale`` image pixels per frame pixel; uint8 height x width x 3."""
    src = np.asarray(image, dtype=np.float32)
    stretch = max(1.0, scale)  # shrinking: widen the kernel over the pixels one output pixel covers
    cols = (np.arange(x, x + width) + 0.5 - image_rect.x) * scale - 0.5
    rows = (np.arange(y, y + height) + 0.5 - image_rect.y) * scale - 0.5
    col_index, col_weight = _axis_taps(cols, src.shape[1], stretch)
    row_index, row_weight = _axis_taps(rows, src.shape[0], stretch)
    across = np.einsum("hwkc,wk->hwc", src[:, col_index], col_weight)
    down = np.einsum("hkwc,hk->hwc", across[row_index], row_weight)
    return np.clip(np.rint(down), 0, 255).astype(np.uint8)
