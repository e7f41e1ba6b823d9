"""Box masks on the 32 x 32 condition-token grid the SeeThrough3D checkpoint was trained with.

The OSCR image is resized to 512 x 512 and cut into 16 px patches, so whatever the output size,
the condition tokens form a 32 x 32 grid over the whole frame. A token belongs to a box when any
pixel of the box's binarised amodal mask falls inside its cell (max-pooling).
"""

from __future__ import annotations

import numpy as np

GRID_SIZE = 32
BINARY_THRESHOLD = 128  # of 255, as the checkpoint's data pipeline binarised its masks


def binarize(mask: np.ndarray) -> np.ndarray:
    """A bool mask from a bool or 8-bit mask (255 inside)."""
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        return mask
    return mask > BINARY_THRESHOLD


def cell_bounds(length: int, cells: int = GRID_SIZE) -> list[tuple[int, int]]:
    """Pixel ranges [start, end) of each cell along an axis; cells overlap when length % cells != 0."""
    return [((i * length) // cells, -((-(i + 1) * length) // cells)) for i in range(cells)]


def pool_to_token_grid(mask: np.ndarray, grid: int = GRID_SIZE) -> np.ndarray:
    """Max-pool a full-size mask (H x W, bool or uint8) to a bool grid x grid token mask."""
    inside = binarize(mask)
    if inside.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {inside.shape}")
    height, width = inside.shape
    if height < grid or width < grid:
        raise ValueError(f"mask {width}x{height} is smaller than the {grid}x{grid} token grid")
    if height % grid == 0 and width % grid == 0:
        return inside.reshape(grid, height // grid, grid, width // grid).any(axis=(1, 3))
    rows = cell_bounds(height, grid)
    cols = cell_bounds(width, grid)
    # Any pixel in the cell counts: reduce rows first, then columns.
    row_any = np.stack([inside[r0:r1].any(axis=0) for r0, r1 in rows])
    return np.stack([row_any[:, c0:c1].any(axis=1) for c0, c1 in cols], axis=1)


def grid_to_strings(grid: np.ndarray) -> list[str]:
    """A token grid as rows of '0'/'1' characters: compact and readable in JSON."""
    return ["".join("1" if v else "0" for v in row) for row in np.asarray(grid, dtype=bool)]


def grid_from_strings(rows: list[str]) -> np.ndarray:
    if not rows or any(len(r) != len(rows[0]) or set(r) - {"0", "1"} for r in rows):
        raise ValueError("a token grid must be equal-length rows of '0' and '1'")
    return np.array([[c == "1" for c in row] for row in rows], dtype=bool)
