"""Renders a layout's OSCR image with Blender and writes it beside its exact per-box masks.

Output folder:
    oscr.png                 the OSCR condition image at the layout's resolution
    masks/amodal_NNN.png     each box as the OSCR draws it, hidden parts too (8-bit, 255 inside)
    masks/visible_NNN.png    what the camera really sees of it (boxes as opaque solids)
    masks.json               pixel counts, visibility ratios, depth order, 32 x 32 token grids
    layout.json              the layout as rendered
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import bpy

from seethrough_core.layout import Layout
from seethrough_core.masks import MaskSet, compute_masks
from seethrough_core.oscr_spec import DEFAULT_PROFILE, get_profile, light_positions
from seethrough_core.png import write_bytes_atomic, write_png
from seethrough_core.vocabulary import DEFAULT_RENDER_ENGINE

from .oscr_scene import oscr_scene


@dataclass
class RenderOutput:
    out_dir: Path
    oscr_path: Path
    masks: MaskSet
    report: dict
    timings: dict[str, float] = field(default_factory=dict)


@contextmanager
def blender_stdout_silenced(enabled: bool = True) -> Iterator[None]:
    """Hide Blender's per-sample render log, which it writes straight to file descriptor 1.

    Command-line tools print their own progress; Blender's errors still reach stderr.
    """
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def render_oscr_image(
    layout: Layout,
    path: str | Path,
    *,
    engine: str = DEFAULT_RENDER_ENGINE,
    profile: str = DEFAULT_PROFILE,
    quiet: bool = False,
) -> None:
    """Render only the OSCR image to ``path`` (PNG), in a temporary scene."""
    path = Path(path)
    partial = path.with_name(f".{path.stem}.partial.png")
    with oscr_scene(layout, get_profile(profile), engine) as scene:
        scene.render.filepath = str(partial)
        with blender_stdout_silenced(quiet):
            bpy.ops.render.render(write_still=True, scene=scene.name)
    if not partial.is_file():
        raise RuntimeError(f"Blender finished rendering but wrote no image to {partial}")
    os.replace(partial, path)


def write_masks(layout: Layout, out_dir: Path, profile: str = DEFAULT_PROFILE) -> tuple[MaskSet, dict]:
    masks = compute_masks(layout, get_profile(profile))
    mask_dir = out_dir / "masks"
    mask_dir.mkdir(parents=True, exist_ok=True)
    for i in range(masks.count):
        write_png(mask_dir / f"amodal_{i:03d}.png", masks.amodal[i])
        write_png(mask_dir / f"visible_{i:03d}.png", masks.visible[i])
    report = masks.report(layout)
    return masks, report


def render_layout(
    layout: Layout,
    out_dir: str | Path,
    *,
    engine: str = DEFAULT_RENDER_ENGINE,
    profile: str = DEFAULT_PROFILE,
    quiet: bool = False,
) -> RenderOutput:
    """Render the OSCR image and all masks of a layout into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    masks, report = write_masks(layout, out_dir, profile)
    timings["masks_s"] = time.perf_counter() - start

    start = time.perf_counter()
    oscr_path = out_dir / "oscr.png"
    render_oscr_image(layout, oscr_path, engine=engine, profile=profile, quiet=quiet)
    timings["oscr_s"] = time.perf_counter() - start

    report["render"] = {
        "engine": engine,
        "profile": profile,
        "blender": bpy.app.version_string,
        "lights": [list(p) for p in light_positions(layout, get_profile(profile))],
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }
    write_bytes_atomic(out_dir / "layout.json", layout.to_json().encode())
    # last: a folder with masks.json is a finished render (oscr_cache.is_complete)
    write_bytes_atomic(out_dir / "masks.json", (json.dumps(report, indent=1) + "\n").encode())
    return RenderOutput(out_dir, oscr_path, masks, report, timings)
