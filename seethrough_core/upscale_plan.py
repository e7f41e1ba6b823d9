"""The two stages of a frame at any size (docs/upscale.md): a base picture near the model's sweet spot
with the frame's own framing, then a tiled refinement at the frame's resolution.

Pure geometry, shared by the command line and the add-on: the base size and the part of the view it
covers, the tile grid over the final frame, each tile's camera (the frame camera's view cropped: same
rays, a narrower sensor and a lens shift), each tile's seed, and the weights that blend the overlaps.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .generation_settings import (
    SettingError,
    check_base_megapixels,
    check_frame_side,
    check_seed,
    check_strength,
    draft_size,
)
from .geometry import FrameRect, view_camera
from .layout import Layout
from .limits import (
    DEFAULT_BASE_MEGAPIXELS,
    DEFAULT_UPSCALE_STRENGTH,
    MAX_LIGHT_SEED,
    MAX_SEED,
    MAX_SIDE,
    MEGAPIXEL,
    MIN_SIDE,
    SIDE_MULTIPLE,
    UPSCALE_OVERLAP_FRACTION,
    side_problem,
)
from .oscr_spec import light_seed


def _round_up(value: float, multiple: int = SIDE_MULTIPLE) -> int:
    return int(math.ceil(value / multiple - 1e-9)) * multiple


def _clamp_side(side: int) -> int:
    return min(max(side, MIN_SIDE), MAX_SIDE)


@dataclass(frozen=True)
class BasePlan:
    """The base picture: a size the model takes (sides 256..2048, multiples of 16) and the part of the
    final frame's view it shows. ``scale`` is base pixels per final pixel, the same on both axes; where
    rounding to 16 px changes the aspect, the base shows a little more than the frame (``rect`` reaches
    past it), and the final frame is cut from it, never stretched."""

    width: int
    height: int
    scale: float
    rect: FrameRect  # the base image's view, in final-frame pixels


@dataclass(frozen=True)
class Tile:
    """One tile of the refinement: a square (or the frame's short side) of final-frame pixels."""

    index: int
    row: int
    col: int
    x: int  # final-frame pixels; a tile larger than a short frame side reaches past both of its edges
    y: int
    width: int
    height: int
    seed: int

    @property
    def name(self) -> str:
        return f"tile_r{self.row:02d}_c{self.col:02d}"

    @property
    def rect(self) -> FrameRect:
        return FrameRect(self.x, self.y, self.width, self.height)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "row": self.row,
            "col": self.col,
            "rect": [self.x, self.y, self.width, self.height],
            "seed": self.seed,
        }


@dataclass(frozen=True)
class UpscalePlan:
    """Both stages of one frame: checked and computed before any render or job."""

    frame_width: int
    frame_height: int
    seed: int
    base_megapixels: float
    strength: float
    base: BasePlan
    tile_side: int
    overlap: int
    col_starts: tuple[int, ...]
    row_starts: tuple[int, ...]
    tile_width: int
    tile_height: int

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.frame_width, self.frame_height

    @property
    def two_stages(self) -> bool:
        """True when the model cannot make the frame directly: a base picture, then the upscale."""
        return (self.base.width, self.base.height) != self.frame_size

    @property
    def needs_tiles(self) -> bool:
        """False when the base is the frame itself or larger (then the frame is the base resampled)."""
        return self.base.scale < 1.0

    @property
    def tiles(self) -> tuple[Tile, ...]:
        if not self.needs_tiles:
            return ()
        tiles = []
        for row, y in enumerate(self.row_starts):
            for col, x in enumerate(self.col_starts):
                index = len(tiles)
                seed = tile_seed(self.seed, index)
                tiles.append(Tile(index, row, col, x, y, self.tile_width, self.tile_height, seed))
        return tuple(tiles)

    def to_record(self) -> dict[str, Any]:
        """The plan as the generation record keeps it (record.upscale), tiles included."""
        base = self.base
        return {
            "frame": [self.frame_width, self.frame_height],
            "base_megapixels": self.base_megapixels,
            "base": {
                "size": [base.width, base.height],
                "scale": base.scale,
                "rect": [base.rect.x, base.rect.y, base.rect.width, base.rect.height],
                "seed": self.seed,
            },
            "strength": self.strength,
            "tile_side": self.tile_side,
            "overlap": self.overlap,
            "grid": [len(self.col_starts), len(self.row_starts)] if self.needs_tiles else [0, 0],
            "tiles": [tile.to_dict() for tile in self.tiles],
        }


def pixels_sha256(image: np.ndarray) -> str:
    """The sha256 of a picture's pixels (not of a file): the base an upscale was made from."""
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def tile_seed(seed: int, index: int) -> int:
    """A tile's seed, derived from the request's: the same request gives the same tiles."""
    digest = hashlib.sha256(f"seethrough.upscale.tile:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (MAX_SEED + 1)


def plan_base(frame_width: int, frame_height: int, base_megapixels: float) -> BasePlan:
    """The base picture for a frame: the frame itself when the model takes its size and it is no larger
    than the base; otherwise the size near ``base_megapixels`` with the frame's aspect, each side rounded
    up to 16 px (a slightly larger view, cut back when the frame is made)."""
    target = base_megapixels * MEGAPIXEL
    fits = side_problem(frame_width) is None and side_problem(frame_height) is None
    if fits and frame_width * frame_height <= target * (1 + 1e-9):
        return BasePlan(frame_width, frame_height, 1.0, FrameRect(0.0, 0.0, frame_width, frame_height))
    s0 = math.sqrt(target / (frame_width * frame_height))
    width = _clamp_side(_round_up(frame_width * s0))
    height = _clamp_side(_round_up(frame_height * s0))
    scale = min(width / frame_width, height / frame_height)  # the whole frame fits in the base
    view_w, view_h = width / scale, height / scale
    rect = FrameRect((frame_width - view_w) / 2, (frame_height - view_h) / 2, view_w, view_h)
    return BasePlan(width, height, scale, rect)


def existing_base(base_width: int, base_height: int, frame_width: int, frame_height: int) -> BasePlan:
    """The plan of a base picture that already exists (a saved result) at ``base_width`` x ``base_height``
    of the same camera: the sensor spans the larger side of each (AUTO fit), both centred on the lens
    shift. It must show the whole frame (same aspect, or a wider view); SettingError("to") otherwise."""
    scale = max(base_width, base_height) / max(frame_width, frame_height)
    view_w, view_h = base_width / scale, base_height / scale
    rect = FrameRect((frame_width - view_w) / 2, (frame_height - view_h) / 2, view_w, view_h)
    if (frame_width - view_w) * scale > 1.0 or (frame_height - view_h) * scale > 1.0:
        raise SettingError(
            "to",
            f"{frame_width}x{frame_height} shows more of the scene than the {base_width}x{base_height} "
            "picture does (another aspect); ask for a frame of the picture's aspect, or generate the frame "
            "from its layout",
        )
    return BasePlan(base_width, base_height, scale, rect)


def tile_side_for(base_megapixels: float) -> int:
    """Tiles are refined at the model's native scale: the base's megapixels as one square tile."""
    return _clamp_side(_round_up(math.sqrt(base_megapixels * MEGAPIXEL)))


def axis_starts(length: int, tile: int, overlap: int) -> tuple[int, tuple[int, ...]]:
    """The tile size along one axis and where its tiles start, spread evenly with at least ``overlap``.

    A frame side shorter than the tile gets one tile of that side rounded up to 16 px (at least the
    model's smallest side), centred: it reaches past both edges by the same few pixels.
    """
    if length <= tile:
        side = _clamp_side(_round_up(length))
        return side, ((length - side) // 2,)
    count = math.ceil((length - overlap) / (tile - overlap))
    return tile, tuple(round(i * (length - tile) / (count - 1)) for i in range(count))


def plan_upscale(
    frame_width: int,
    frame_height: int,
    *,
    seed: int,
    base_megapixels: float = DEFAULT_BASE_MEGAPIXELS,
    strength: float = DEFAULT_UPSCALE_STRENGTH,
    base_size: tuple[int, int] | None = None,
) -> UpscalePlan:
    """Both stages of a frame (``base_size``: of a base picture that already exists). Raises SettingError
    naming the field before any work."""
    check_frame_side("width", frame_width)
    check_frame_side("height", frame_height)
    check_base_megapixels(base_megapixels)
    check_strength(strength)
    check_seed(seed)
    if base_size is None:
        base = plan_base(frame_width, frame_height, base_megapixels)
    else:
        base = existing_base(*base_size, frame_width, frame_height)
    side = tile_side_for(base_megapixels)
    overlap = _round_up(side * UPSCALE_OVERLAP_FRACTION, 8)
    tile_w, cols = axis_starts(frame_width, side, overlap)
    tile_h, rows = axis_starts(frame_height, side, overlap)
    return UpscalePlan(
        frame_width,
        frame_height,
        seed,
        float(base_megapixels),
        float(strength),
        base,
        side,
        overlap,
        cols,
        rows,
        tile_w,
        tile_h,
    )


# --- the layouts each stage renders -----------------------------------------------------------------


@dataclass(frozen=True)
class ViewCondition:
    """A rendered view: its OSCR image (PNG bytes), and its boxes' amodal masks and token grids."""

    oscr_png: bytes
    amodal: np.ndarray  # N x H x W bool, in box order
    token_grids: np.ndarray  # N x 32 x 32


def view_layout(
    frame_layout: Layout, frame_size: tuple[int, int], rect: FrameRect, out_size: tuple[int, int]
):
    """The layout whose render at ``out_size`` is the frame's OSCR over ``rect``: the frame camera's view
    cropped (view_camera) and the frame's own lights (its light seed, which would otherwise follow the
    changed camera)."""
    camera = view_camera(frame_layout.camera, frame_size, rect, out_size)
    return replace(
        frame_layout,
        resolution=(int(out_size[0]), int(out_size[1])),
        camera=camera,
        light_seed=frame_light_seed(frame_layout),
    )


def frame_light_seed(layout: Layout) -> int:
    """The lights of a frame and of all its views: the layout's light seed, or its geometry's hash
    folded to the range a layout (and a .blend) can store, so every view's layout carries it."""
    return light_seed(layout) % (MAX_LIGHT_SEED + 1)


def frame_layout_at(layout: Layout, frame_size: tuple[int, int]) -> Layout:
    """The layout as the frame of ``frame_size`` (same camera, boxes and lights, that resolution)."""
    return replace(
        layout, resolution=(int(frame_size[0]), int(frame_size[1])), light_seed=frame_light_seed(layout)
    )


def draft_layout(layout: Layout) -> Layout:
    """The layout as its draft (the add-on's Draft Frames, `seethrough batch --draft`): the same view and
    lights at the draft size, so its OSCR image renders at that size too."""
    return frame_layout_at(layout, draft_size(layout.width, layout.height))


def base_layout(frame_layout: Layout, plan: UpscalePlan) -> Layout:
    """What the base stage renders and generates: the frame's view at the base size."""
    base = plan.base
    if base.scale == 1.0 and (base.width, base.height) == plan.frame_size:
        return frame_layout_at(frame_layout, plan.frame_size)
    return view_layout(frame_layout, plan.frame_size, base.rect, (base.width, base.height))


def tile_layout(frame_layout: Layout, plan: UpscalePlan, tile: Tile) -> Layout:
    """What one tile renders: the frame's view over the tile, at the final frame's pixel density."""
    return view_layout(frame_layout, plan.frame_size, tile.rect, (tile.width, tile.height))


@dataclass(frozen=True)
class ViewCrop:
    """A tile's view cut from one render of a larger view of the frame: the tile's layout (what its own
    render would be), the folder its rendered layout goes to, and where it lies in the larger render."""

    layout: Layout
    folder: Path
    x: int
    y: int

    def to_dict(self) -> dict[str, Any]:
        return {"layout": self.layout.to_dict(), "folder": str(self.folder), "x": self.x, "y": self.y}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViewCrop:
        return cls(Layout.from_dict(data["layout"]), Path(data["folder"]), int(data["x"]), int(data["y"]))


def shared_view(
    frame_layout: Layout, plan: UpscalePlan, tiles: Sequence[Tile], folder_of: Callable[[Tile], Path]
) -> tuple[Layout, list[ViewCrop]]:
    """One view covering ``tiles`` at the frame's pixel density, and each tile's place in it. A tile's
    view is the frame's camera cropped (lens shift and a narrower sensor), so a render of the covering
    view, cut at integer offsets, gives every tile its own view's pixels (up to the renderer's sampling
    noise) in one render instead of one per tile, without their overlaps rendered twice."""
    left, top = min(t.x for t in tiles), min(t.y for t in tiles)
    right, bottom = max(t.x + t.width for t in tiles), max(t.y + t.height for t in tiles)
    rect = FrameRect(left, top, right - left, bottom - top)
    whole = view_layout(frame_layout, plan.frame_size, rect, (right - left, bottom - top))
    crops = [ViewCrop(tile_layout(frame_layout, plan, t), folder_of(t), t.x - left, t.y - top) for t in tiles]
    return whole, crops


# --- blending ---------------------------------------------------------------------------------------


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def axis_weights(starts: tuple[int, ...], tile: int, length: int, blend: bool = True) -> list[np.ndarray]:
    """Each tile's weight over every frame pixel of one axis (0 outside it); they sum to 1 everywhere.

    With ``blend`` a tile fades in and out across the whole overlap with each neighbour (a smoothstep);
    without it each pixel comes from the tile whose centre is nearest (hard seams: for tests).
    """
    centres = np.arange(length) + 0.5
    weights = []
    for i, start in enumerate(starts):
        end = start + tile
        if blend:
            w = ((centres >= start) & (centres < end)).astype(np.float64)
            if i > 0:
                ramp = starts[i - 1] + tile - start
                w *= _smoothstep((centres - start) / ramp)
            if i + 1 < len(starts):
                ramp = end - starts[i + 1]
                w *= _smoothstep((end - centres) / ramp)
        else:
            mid = np.array([s + tile / 2 for s in starts])
            nearest = np.argmin(np.abs(centres[:, None] - mid[None, :]), axis=1)
            w = (nearest == i).astype(np.float64)
        weights.append(w)
    total = np.sum(weights, axis=0)
    return [w / total for w in weights]


def tile_window(plan: UpscalePlan, tile: Tile) -> tuple[slice, slice, slice, slice]:
    """The part of a tile inside the frame: (frame rows, frame cols, tile rows, tile cols)."""
    y0, x0 = max(tile.y, 0), max(tile.x, 0)
    y1 = min(tile.y + tile.height, plan.frame_height)
    x1 = min(tile.x + tile.width, plan.frame_width)
    return (
        slice(y0, y1),
        slice(x0, x1),
        slice(y0 - tile.y, y1 - tile.y),
        slice(x0 - tile.x, x1 - tile.x),
    )


class TileBlend:
    """Accumulates tiles into the final frame with weights that sum to 1 at every pixel."""

    def __init__(self, plan: UpscalePlan, blend: bool = True) -> None:
        self.plan = plan
        self._col_w = axis_weights(plan.col_starts, plan.tile_width, plan.frame_width, blend)
        self._row_w = axis_weights(plan.row_starts, plan.tile_height, plan.frame_height, blend)
        self._sum = np.zeros((plan.frame_height, plan.frame_width, 3), dtype=np.float32)

    def add(self, tile: Tile, image: np.ndarray) -> None:
        rows, cols, tile_rows, tile_cols = tile_window(self.plan, tile)
        weight = np.outer(self._row_w[tile.row][rows], self._col_w[tile.col][cols]).astype(np.float32)
        self._sum[rows, cols] += image[tile_rows, tile_cols].astype(np.float32) * weight[..., None]

    @property
    def total(self) -> np.ndarray:
        """The weighted sum so far (float32): the frame where every tile covering a pixel was added."""
        return self._sum

    def result(self) -> np.ndarray:
        return np.clip(np.rint(self._sum), 0, 255).astype(np.uint8)
