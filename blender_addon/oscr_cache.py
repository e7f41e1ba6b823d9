"""OSCR renders kept by layout: Generate after Render OSCR, or five seeds in a row, render once.

An OSCR render is a pure function of the layout, the engine and the profile (the lights are
seeded from the layout), so a folder named by their hash is an exact cache. A render is complete
once masks.json exists: render_layout writes it last, atomically. No bpy here: the renders
themselves run in a separate Blender process (background_render.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seethrough_core.layout import Layout
from seethrough_core.oscr_spec import DEFAULT_PROFILE, RENDER_REVISION
from seethrough_core.token_grid import grid_from_strings
from seethrough_core.vocabulary import DEFAULT_RENDER_ENGINE


@dataclass(frozen=True)
class OscrInputs:
    """What the server needs from a render, and where the files are."""

    out_dir: Path
    oscr_path: Path
    token_grids: np.ndarray  # bool, N x 32 x 32: the amodal masks pooled onto the condition grid
    report: dict  # masks.json
    seconds: float  # render time; 0 when it came from the cache
    cached: bool


def cache_key(layout: Layout, engine: str, profile: str = DEFAULT_PROFILE) -> str:
    key = f"{engine}\n{profile}\nrevision {RENDER_REVISION}\n{layout.to_json()}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def cache_dir(layout: Layout, root: Path, engine: str = DEFAULT_RENDER_ENGINE) -> Path:
    """Where the layout's render lives (or will): root/oscr/<key>/."""
    return root / "oscr" / cache_key(layout, engine)


def is_complete(out_dir: Path) -> bool:
    return (out_dir / "masks.json").is_file() and (out_dir / "oscr.png").is_file()


def read_render(out_dir: Path, seconds: float = 0.0, cached: bool = True) -> OscrInputs:
    """A finished render's files as the request needs them (token grids from masks.json)."""
    report = json.loads((out_dir / "masks.json").read_text(encoding="utf-8"))
    grids = np.stack([grid_from_strings(box["token_grid"]) for box in report["boxes"]])
    return OscrInputs(out_dir, out_dir / "oscr.png", grids, report, seconds, cached)
