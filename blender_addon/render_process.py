"""Renders one layout file to a folder and reports it: the add-on's background render process
(background_render.py runs child_main) and `seethrough render` share this code."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from seethrough_core.errors import LayoutError
from seethrough_core.in_view import boxes_in_view
from seethrough_core.layout import Layout, load_layout
from seethrough_core.oscr_spec import DEFAULT_PROFILE
from seethrough_core.output_size import OutputSize
from seethrough_core.record import load_layout_or_result
from seethrough_core.upscale_plan import ViewCrop
from seethrough_core.vocabulary import RENDER_ENGINES

from .render import render_layout, render_views


def read_layout(path: Path, *, frame: int | None = None, camera: str | None = None) -> Layout:
    """A layout from a .json file, a result PNG (the layout in its record) or a .blend authored with the
    add-on (its active camera at its current frame unless ``camera`` and ``frame`` say otherwise).

    A layout file or a result is a still with one camera: ``frame`` does not apply to it (the caller
    says so) and ``camera`` must be its camera's name."""
    if path.suffix.lower() == ".blend":
        from .blend_shots import read_blend_shots

        mode, names = ("names", [camera]) if camera is not None else ("active", [])
        return read_blend_shots(path, mode, names, [frame] if frame is not None else None)[0].layout
    layout = load_layout_or_result(path)
    if camera is not None and layout.camera.name != camera:
        raise LayoutError("camera", f"{path.name} has one camera, {layout.camera.name!r}, not {camera!r}")
    return layout


def render_file(
    layout_path: str | Path,
    out: str | Path,
    engine: str,
    profile: str = DEFAULT_PROFILE,
    *,
    size: OutputSize | None = None,
    frame: int | None = None,
    camera: str | None = None,
) -> int:
    """Render, print one line per box, and return the exit code (2: the layout or engine is wrong)."""
    path = Path(layout_path)
    if frame is not None and path.suffix.lower() != ".blend":
        print(f"note: --frame is ignored for {path.name}: a layout file is a still", file=sys.stderr)
        frame = None
    try:
        layout = (size or OutputSize()).apply(read_layout(path, frame=frame, camera=camera))
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
    note = boxes_in_view(result.masks.amodal).note(layout.descriptions, path.name)
    if note is not None:
        print(note)
    print(f"Wrote {result.out_dir}/oscr.png, masks/ and masks.json in {time.perf_counter() - start:.1f} s")
    return 0


def child_main(argv: list[str] | None = None) -> int:
    """The add-on's background render: LAYOUT_JSON OUT_DIR ENGINE [CROPS_JSON] after "--" (with
    CROPS_JSON, upscale tiles' views cut from the render: render.render_views)."""
    argv = sys.argv if argv is None else argv
    arguments = argv[argv.index("--") + 1 :] if "--" in argv else []
    if len(arguments) not in (3, 4):
        print('usage: ... -- LAYOUT_JSON OUT_DIR ENGINE [CROPS_JSON] (after a "--")', file=sys.stderr)
        return 2
    layout, out, engine = arguments[:3]
    if len(arguments) == 3:
        return render_file(layout, out, engine)
    crops = [ViewCrop.from_dict(item) for item in json.loads(Path(arguments[3]).read_text(encoding="utf-8"))]
    print(f"Rendering the views of {len(crops)} tiles in one render ...", flush=True)
    render_views(load_layout(layout), Path(out), crops, engine=engine, quiet=True)
    return 0
