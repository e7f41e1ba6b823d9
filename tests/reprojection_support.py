"""The tests' own reference for reprojection: a picture resampled through a homography.

Tolerance for comparing with SeeThrough's reprojection: both sample the previous picture bilinearly at
the same points (up to ~1e-12 px) and round to 8 bits, so they may differ by one level where a value
sits at a rounding boundary: at most RESAMPLE_TOLERANCE.
"""

from __future__ import annotations

import numpy as np

RESAMPLE_TOLERANCE = 1  # 8-bit levels


def resample_through(picture: np.ndarray, homography: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``picture`` bilinearly resampled at every pixel centre of a picture of the same size mapped by
    ``homography`` (new pixel -> previous pixel, column and row from the top-left corner), as floats,
    and whether the mapped centre lies inside ``picture`` (all four neighbours exist)."""
    h, w = picture.shape[:2]
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    mapped = np.stack([cols, rows, np.ones_like(cols)], axis=-1) @ np.asarray(homography).T
    x, y = mapped[..., 0] / mapped[..., 2] - 0.5, mapped[..., 1] / mapped[..., 2] - 0.5
    inside = (mapped[..., 2] > 0) & (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    x, y = np.nan_to_num(x, posinf=-1.0, neginf=-1.0), np.nan_to_num(y, posinf=-1.0, neginf=-1.0)
    # on the last row or column the neighbour index is clipped and its weight is ~1 (values outside
    # ``inside`` are garbage: compare only inside)
    x0, y0 = np.clip(np.floor(x).astype(int), 0, w - 2), np.clip(np.floor(y).astype(int), 0, h - 2)
    ax, ay = (x - x0)[..., None], (y - y0)[..., None]
    image = picture.astype(np.float64)
    top = image[y0, x0] * (1 - ax) + image[y0, x0 + 1] * ax
    bottom = image[y0 + 1, x0] * (1 - ax) + image[y0 + 1, x0 + 1] * ax
    return top * (1 - ay) + bottom * ay, inside


def max_resample_error(image: np.ndarray, expected: np.ndarray, where: np.ndarray) -> float:
    """The largest difference, in 8-bit levels, between ``image`` and the rounded reference at ``where``."""
    assert where.any(), "no pixel to compare"
    return float(np.abs(image[where].astype(np.float64) - np.rint(expected[where])).max())
