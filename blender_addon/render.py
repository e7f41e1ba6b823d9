"""Renders a layout's OSCR image with Blender beside its exact per-box masks, into a rendered-layout
folder (seethrough_core.rendered_layout: its files, and when a finished one is reused).
"""

from __future__ import annotations

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
from seethrough_core.rendered_layout import (
    OSCR_NAME,
    RenderedLayout,
    finish,
    read_rendered,
    reusable,
    write_masks,
)
from seethrough_core.upscale_plan import ViewCondition
from seethrough_core.vocabulary import DEFAULT_RENDER_ENGINE

from .oscr_scene import oscr_scene


@dataclass
class RenderOutput:
    out_dir: Path
    oscr_path: Path
    masks: MaskSet
    report: dict
    timings: dict[str, float] = field(default_factory=dict)

    def view_condition(self) -> ViewCondition:
        """The render as an upscale tile's condition: OSCR bytes, amodal masks, token grids."""
        return ViewCondition(self.oscr_path.read_bytes(), self.masks.amodal, self.masks.token_grids())


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
    masks = compute_masks(layout, get_profile(profile))
    write_masks(out_dir, masks)
    report = masks.report(layout)
    timings["masks_s"] = time.perf_counter() - start

    start = time.perf_counter()
    oscr_path = out_dir / OSCR_NAME
    render_oscr_image(layout, oscr_path, engine=engine, profile=profile, quiet=quiet)
    timings["oscr_s"] = time.perf_counter() - start

    report["render"] = {
        "blender": bpy.app.version_string,
        "lights": [list(p) for p in light_positions(layout, get_profile(profile))],
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }
    finish(out_dir, layout, report, engine, profile)  # last: the folder is complete
    return RenderOutput(out_dir, oscr_path, masks, report, timings)


def render_or_reuse(
    layout: Layout,
    out_dir: str | Path,
    *,
    engine: str = DEFAULT_RENDER_ENGINE,
    profile: str = DEFAULT_PROFILE,
    quiet: bool = False,
) -> RenderedLayout:
    """The layout's render in ``out_dir``: the folder as it is when it holds this very render (a resumed
    batch, an edit of the same layout), else rendered now."""
    found = reusable(Path(out_dir), layout, engine, profile)
    if found is not None:
        return found
    start = time.perf_counter()
    render_layout(layout, out_dir, engine=engine, profile=profile, quiet=quiet)
    return read_rendered(Path(out_dir), seconds=time.perf_counter() - start, cached=False)
