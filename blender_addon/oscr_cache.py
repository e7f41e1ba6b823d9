"""OSCR renders kept by layout: Generate after Render OSCR, or five seeds in a row, render once.

An OSCR render is a pure function of the layout, the engine and the profile (the lights are
seeded from the layout), so a folder named by their hash is an exact cache. A render is complete
once masks.json exists: render_layout writes it last, atomically.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seethrough_core.layout import Layout
from seethrough_core.oscr_spec import DEFAULT_PROFILE
from seethrough_core.token_grid import grid_from_strings

from .render import render_layout


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
    return hashlib.sha256(f"{engine}\n{profile}\n{layout.to_json()}".encode()).hexdigest()[:16]


def render_cached(layout: Layout, root: Path, engine: str = "cycles") -> OscrInputs:
    """The layout's OSCR image and token grids under root/oscr/<key>/, rendered only if missing."""
    out_dir = root / "oscr" / cache_key(layout, engine)
    report_path = out_dir / "masks.json"
    if report_path.is_file() and (out_dir / "oscr.png").is_file():
        report = json.loads(report_path.read_text(encoding="utf-8"))
        grids = np.stack([grid_from_strings(box["token_grid"]) for box in report["boxes"]])
        return OscrInputs(out_dir, out_dir / "oscr.png", grids, report, 0.0, True)
    rendered = render_layout(layout, out_dir, engine=engine)
    grids = rendered.masks.token_grids()
    return OscrInputs(
        out_dir, rendered.oscr_path, grids, rendered.report, sum(rendered.timings.values()), False
    )
