"""Renders one layout file to a folder and reports it: the add-on's background render process
(background_render.py runs child_main) and `seethrough render` share this code."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from seethrough_core.errors import LayoutError
from seethrough_core.layout import Layout, load_layout
from seethrough_core.oscr_spec import DEFAULT_PROFILE
from seethrough_core.vocabulary import RENDER_ENGINES

from .render import render_layout


def read_layout(path: Path) -> Layout:
    """A layout from a .json file or from a .blend authored with the add-on."""
    if path.suffix.lower() == ".blend":
        from .scene_io import load_blend_layout

        return load_blend_layout(path)
    return load_layout(path)


def render_file(layout_path: str | Path, out: str | Path, engine: str, profile: str = DEFAULT_PROFILE) -> int:
    """Render, print one line per box, and return the exit code (2: the layout or engine is wrong)."""
    path = Path(layout_path)
    try:
        layout = read_layout(path)
    except LayoutError as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return 2
    if engine not in RENDER_ENGINES:
        print(f"error: unknown engine {engine!r}", file=sys.stderr)
        return 2
    print(
        f"Rendering {path.name}: {len(layout.boxes)} boxes, {layout.width}x{layout.height}, "
        f"{engine}, profile {profile} ...",
        flush=True,
    )
    start = time.perf_counter()
    result = render_layout(layout, out, engine=engine, profile=profile, quiet=True)
    for box in result.report["boxes"]:
        print(f"  box {box['index']:3d}  visible {box['visibility_ratio']:6.1%}  {box['description']}")
    print(f"Wrote {result.out_dir}/oscr.png, masks/ and masks.json in {time.perf_counter() - start:.1f} s")
    return 0


def child_main(argv: list[str] | None = None) -> int:
    """The add-on's background render: LAYOUT_JSON OUT_DIR ENGINE after "--"."""
    argv = sys.argv if argv is None else argv
    try:
        layout, out, engine = argv[argv.index("--") + 1 :]
    except ValueError:
        print('usage: ... -- LAYOUT_JSON OUT_DIR ENGINE (after a "--")', file=sys.stderr)
        return 2
    return render_file(layout, out, engine)
