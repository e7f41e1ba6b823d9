"""The rendered-layout folder: a layout's OSCR image beside its exact masks, and when it may be reused.

    oscr.png                 the OSCR condition image at the layout's resolution
    masks/amodal_NNN.png     each box as the OSCR draws it, hidden parts too (8-bit, 255 inside)
    masks/visible_NNN.png    what the camera really sees of it (boxes as opaque solids)
    masks.json               pixel counts, visibility ratios, depth order, 32 x 32 token grids; its
                             "render" entry names the engine, the profile and the render's key
    layout.json              the layout as rendered

`seethrough render`, the batch's conditions/ folders, `seethrough edit`, the add-on's cache and
training validation all write and read it here. masks.json is written last and atomically, so a folder
with it is complete. An OSCR render is a pure function of the layout, the engine and the profile (its
revision included; the lights are seeded from the layout): a complete folder whose key matches is
reused instead of rendered again, wherever it is. No bpy here: Blender writes only oscr.png.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LayoutError, SeeThroughError
from .layout import Layout, load_layout
from .masks import MaskSet, compute_masks
from .oscr_spec import DEFAULT_PROFILE, RENDER_REVISION, get_profile
from .png import write_bytes_atomic, write_png
from .token_grid import grid_from_strings
from .upscale_plan import ViewCondition
from .vocabulary import DEFAULT_RENDER_ENGINE

OSCR_NAME = "oscr.png"
MASKS_DIR = "masks"
REPORT_NAME = "masks.json"
LAYOUT_NAME = "layout.json"
CACHE_DIR = "oscr"  # the add-on's renders: <root>/oscr/<key>/


class RenderedLayoutError(SeeThroughError):
    """A folder that is not a complete rendered layout, or one that does not read."""


def render_key(layout: Layout, engine: str = DEFAULT_RENDER_ENGINE, profile: str = DEFAULT_PROFILE) -> str:
    """The identity of a render: equal keys, equal files."""
    key = f"{engine}\n{profile}\nrevision {RENDER_REVISION}\n{layout.to_json()}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def cache_folder(root: Path, layout: Layout, engine: str = DEFAULT_RENDER_ENGINE) -> Path:
    """Where a cache under ``root`` keeps the layout's render (or will)."""
    return Path(root) / CACHE_DIR / render_key(layout, engine)


def mask_path(folder: Path, kind: str, box: int) -> Path:
    """``kind``: "amodal" or "visible"."""
    return Path(folder) / MASKS_DIR / f"{kind}_{box:03d}.png"


def missing_files(folder: Path) -> list[str]:
    folder = Path(folder)
    return [name for name in (LAYOUT_NAME, OSCR_NAME, REPORT_NAME) if not (folder / name).is_file()]


def is_complete(folder: Path) -> bool:
    return not missing_files(folder)


@dataclass(frozen=True)
class RenderedLayout:
    """A complete folder as a generation needs it."""

    out_dir: Path
    layout: Layout
    report: dict[str, Any]  # masks.json
    token_grids: np.ndarray  # bool, N x 32 x 32: the amodal masks pooled onto the condition grid
    seconds: float = 0.0  # render time; 0 when the folder was reused
    cached: bool = True  # reused, not rendered now

    @property
    def oscr_path(self) -> Path:
        return self.out_dir / OSCR_NAME

    def view_condition(self, profile: str = DEFAULT_PROFILE) -> ViewCondition:
        """The render as an upscale tile's condition: its OSCR bytes, amodal masks and token grids (the
        masks recomputed, a pure function of the layout, rather than decoded from their PNGs)."""
        amodal = compute_masks(self.layout, get_profile(profile)).amodal
        return ViewCondition(self.oscr_path.read_bytes(), amodal, self.token_grids)


def read_rendered(folder: Path, seconds: float = 0.0, cached: bool = True) -> RenderedLayout:
    """A complete folder; RenderedLayoutError naming what is missing or unreadable otherwise."""
    folder = Path(folder)
    missing = missing_files(folder)
    if missing:
        raise RenderedLayoutError(f"{folder} is not a rendered layout: {', '.join(missing)} missing")
    try:
        layout = load_layout(folder / LAYOUT_NAME)
        report = json.loads((folder / REPORT_NAME).read_text(encoding="utf-8"))
        grids = np.stack([grid_from_strings(box["token_grid"]) for box in report["boxes"]])
    except (LayoutError, OSError, ValueError, KeyError, TypeError) as error:
        raise RenderedLayoutError(f"{folder} does not read as a rendered layout ({error})") from None
    return RenderedLayout(folder, layout, report, grids, seconds, cached)


def reusable(
    folder: Path, layout: Layout, engine: str = DEFAULT_RENDER_ENGINE, profile: str = DEFAULT_PROFILE
) -> RenderedLayout | None:
    """The folder's render when it is complete and of this layout, engine and profile revision; else
    None (render it). The one rule for every cache of OSCR renders."""
    if not is_complete(folder):
        return None
    try:
        rendered = read_rendered(folder)
    except RenderedLayoutError:
        return None
    if rendered.report.get("render", {}).get("key") != render_key(layout, engine, profile):
        return None
    return rendered


def write_masks(folder: Path, masks: MaskSet) -> None:
    for i in range(masks.count):
        mask_path(folder, "amodal", i).parent.mkdir(parents=True, exist_ok=True)
        write_png(mask_path(folder, "amodal", i), masks.amodal[i])
        write_png(mask_path(folder, "visible", i), masks.visible[i])


def finish(folder: Path, layout: Layout, report: dict[str, Any], engine: str, profile: str) -> None:
    """The last writes of a render, once oscr.png and the masks are there: layout.json, then masks.json
    (with the render's key), which makes the folder complete."""
    folder = Path(folder)
    report.setdefault("render", {}).update(
        engine=engine, profile=profile, key=render_key(layout, engine, profile)
    )
    write_bytes_atomic(folder / LAYOUT_NAME, layout.to_json().encode())
    write_bytes_atomic(folder / REPORT_NAME, (json.dumps(report, indent=1) + "\n").encode())
