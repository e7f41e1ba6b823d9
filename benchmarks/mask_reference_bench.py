"""How close our box masks are to the ones the SeeThrough3D checkpoint was trained with.

`python benchmarks/mask_reference_bench.py [LAYOUT.json ...]` renders every box of each layout the way
the authors rendered their training masks (Workbench, the box alone with its wireframe, 8x anti-aliasing,
alpha > 0; tests/bpy_helpers.py) and compares, per box, the reference mask with

    solid   the solid box at pixel centres (the silhouette; our amodal masks before profile v1 matched)
    ours    our amodal masks (grown by the wire, conservative coverage: seethrough_core/masks.py)

as IoU and token-grid cells that differ (of 32 x 32 per box). Default layouts: the 5-box reference scene
in ../shared/data and the test's hard cases (rotated, small, partly out of frame, partly behind the camera).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from bpy_helpers import render_reference_mask  # noqa: E402

from blender_addon.render import blender_stdout_silenced  # noqa: E402
from seethrough_core.layout import Layout, load_layout  # noqa: E402
from seethrough_core.masks import compute_masks  # noqa: E402
from seethrough_core.token_grid import pool_to_token_grid  # noqa: E402

SHARED_SCENE = REPO.parent / "shared" / "data" / "reference-mars-scene.layout.json"


def test_cases() -> Layout:
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("cases", REPO / "tests" / "blender" / "test_masks_match_the_reference.py")
    cases = module_from_spec(spec)
    spec.loader.exec_module(cases)
    keys = ("description", "center", "size", "rotation_euler_deg")
    boxes = [dict(zip(keys, box, strict=True)) for box in cases.BOXES]
    return Layout.from_dict(
        {"format": "seethrough.layout", "version": 1, "scene_prompt": "", "resolution": [1024, 1024],
         "camera": cases.CAMERA, "boxes": boxes}
    )  # fmt: skip


def compare(name: str, layout: Layout, folder: Path) -> list[dict]:
    masks = compute_masks(layout)
    rows = []
    for i, box in enumerate(layout.boxes):
        with blender_stdout_silenced():
            reference = render_reference_mask(layout, box, folder / f"{name}_{i}.png")
        row = {"layout": name, "box": box.description, "coverage": float(reference.mean())}
        for label, mask in (("solid", masks.silhouette[i]), ("ours", masks.amodal[i])):
            union = (mask | reference).sum()
            row[f"{label} IoU"] = float((mask & reference).sum() / union) if union else 1.0
            row[f"{label} cells"] = int((pool_to_token_grid(mask) != pool_to_token_grid(reference)).sum())
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("layouts", nargs="*", type=Path)
    args = parser.parse_args(argv)
    layouts = [(path.stem, load_layout(path)) for path in args.layouts]
    if not layouts:
        layouts = [("test cases", test_cases())]
        if SHARED_SCENE.exists():
            layouts.insert(0, ("reference scene", load_layout(SHARED_SCENE)))
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row for name, layout in layouts for row in compare(name, layout, Path(tmp))]
    print("\n| layout | box | image covered | IoU solid | IoU ours | cells solid | cells ours |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layout']} | {r['box']} | {r['coverage']:.2%} | {r['solid IoU']:.4f} "
              f"| {r['ours IoU']:.4f} | {r['solid cells']} | {r['ours cells']} |")  # fmt: skip
    cells = 1024 * len(rows)
    for label in ("solid", "ours"):
        big = [r[f"{label} IoU"] for r in rows if r["coverage"] >= 0.01]
        differing = sum(r[f"{label} cells"] for r in rows)
        print(f"{label}: min IoU {min(big):.4f} (boxes covering >= 1%), mean {np.mean(big):.4f}; "
              f"token cells differing {differing} of {cells} ({differing / cells:.3%})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
