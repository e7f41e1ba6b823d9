"""Renders a layout's OSCR image with Blender beside its exact per-box masks, into a rendered-layout
folder (seethrough_core.rendered_layout: its files, and when a finished one is reused).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np

from seethrough_core.layout import Layout
from seethrough_core.masks import MaskSet, compute_masks
from seethrough_core.oscr_spec import DEFAULT_PROFILE, get_profile, light_positions
from seethrough_core.png import write_png
from seethrough_core.rendered_layout import (
    OSCR_NAME,
    RenderedLayout,
    finish,
    read_rendered,
    render_key,
    reusable,
    write_masks,
)
from seethrough_core.upscale_plan import ViewCondition, ViewCrop
from seethrough_core.upscale_run import shared_view_rendered
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

    def render(path: Path) -> dict[str, object]:
        render_oscr_image(layout, path, engine=engine, profile=profile, quiet=quiet)
        return {}

    return _fill_folder(layout, Path(out_dir), engine, profile, render)


def render_views(
    whole: Layout,
    whole_dir: Path,
    crops: Sequence[ViewCrop],
    *,
    engine: str = DEFAULT_RENDER_ENGINE,
    profile: str = DEFAULT_PROFILE,
    quiet: bool = False,
) -> list[ViewCondition]:
    """Upscale tiles' views from one render (seethrough_core.upscale_plan.shared_view): ``whole`` is
    rendered (or reused) in ``whole_dir``, then each crop's folder is filled as its own render would
    be: its OSCR cut from the whole's at the crop's place (the same rays at the same pixel density),
    its masks its own layout's. One render instead of one per tile, overlaps rendered once. Returns
    each crop's condition, its masks as just made."""
    render_or_reuse(whole, whole_dir, engine=engine, profile=profile, quiet=quiet)
    pixels = read_png_pixels(Path(whole_dir) / OSCR_NAME)
    conditions = []
    for crop in crops:
        height, width = crop.layout.height, crop.layout.width

        def cut(path: Path, crop: ViewCrop = crop, width: int = width, height: int = height) -> dict:
            write_png(path, pixels[crop.y : crop.y + height, crop.x : crop.x + width])
            return {"cut_from": {"layout": render_key(whole, engine, profile), "x": crop.x, "y": crop.y}}

        conditions.append(_fill_folder(crop.layout, crop.folder, engine, profile, cut).view_condition())
    return conditions


@dataclass
class TileViews:
    """An upscale's tile views rendered in this process (the command line): UpscaleRunner's
    ``render_view`` (``view``) and ``render_views`` (``shared``). The conditions of the views ``shared``
    cut are kept until ``view`` asks for them, so their masks are made once."""

    engine: str = DEFAULT_RENDER_ENGINE
    _cut: dict[Path, tuple[str, ViewCondition]] = field(default_factory=dict, repr=False)

    def view(self, layout: Layout, folder: Path) -> ViewCondition:
        """A tile's view: as ``shared`` cut it, or as an interrupted run left it, else rendered now."""
        cut = self._cut.pop(folder, None)
        if cut is not None and cut[0] == render_key(layout, self.engine):
            return cut[1]
        found = reusable(folder, layout, self.engine)
        return found.view_condition() if found is not None else self._render(layout, folder)

    def shared(self, whole: Layout, folder: Path, crops: list[ViewCrop]) -> bool:
        """The tiles' views cut from one render, unless an interrupted run left them all complete."""
        if not shared_view_rendered(whole, folder, crops, self.engine):
            self._keep(crops, render_views(whole, folder, crops, engine=self.engine, quiet=True))
        return True

    def _render(self, layout: Layout, folder: Path) -> ViewCondition:
        """A view no folder holds yet, rendered into ``folder``."""
        return render_layout(layout, folder, engine=self.engine, quiet=True).view_condition()

    def _keep(self, crops: Sequence[ViewCrop], conditions: Sequence[ViewCondition]) -> None:
        for crop, condition in zip(crops, conditions, strict=True):
            self._cut[crop.folder] = (render_key(crop.layout, self.engine), condition)


def _fill_folder(
    layout: Layout, out_dir: Path, engine: str, profile: str, write_oscr: Callable[[Path], dict[str, object]]
) -> RenderOutput:
    """A rendered-layout folder: the masks, the OSCR image ``write_oscr`` writes (it returns what the
    report's "render" entry should add), then the report, which completes the folder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    masks = compute_masks(layout, get_profile(profile))
    write_masks(out_dir, masks)
    report = masks.report(layout)
    timings["masks_s"] = time.perf_counter() - start

    start = time.perf_counter()
    oscr_path = out_dir / OSCR_NAME
    extra = write_oscr(oscr_path)
    timings["oscr_s"] = time.perf_counter() - start

    report["render"] = {
        "blender": bpy.app.version_string,
        "lights": [list(p) for p in light_positions(layout, get_profile(profile))],
        "timings": {k: round(v, 4) for k, v in timings.items()},
        **extra,
    }
    finish(out_dir, layout, report, engine, profile)  # last: the folder is complete
    return RenderOutput(out_dir, oscr_path, masks, report, timings)


def read_png_pixels(path: Path) -> np.ndarray:
    """An 8-bit PNG's pixels as Blender reads them (top row first), uint8 H x W x channels."""
    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        width, height = image.size
        values = np.empty(width * height * image.channels, dtype=np.float32)
        image.pixels.foreach_get(values)
        pixels = values.reshape(height, width, image.channels)[::-1]
    finally:
        bpy.data.images.remove(image)
    return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)[..., :3]


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
