"""What Blender's main thread waits for when Regenerate Changed follows a camera move:
`python benchmarks/edit_thread_bench.py [--size 1024] [--edits 0 4 8]`.

The add-on checks the request on the main thread (the shown result's PNG decoded, what changed, the
settings) and plans it on the job's thread (edit_jobs.EditRequest): the reprojection into the new camera
and, for a result that is itself an edit of edits, the walk back through the pictures before it. Until
now the main thread made the whole plan, so it waited for both. Printed side by side in one run, for a
shown result with --edits camera moves behind it (a pan with a dolly over a street with a car, saved as
real PNG files with their records and regions): the main thread's part now, the plan moved to the job's
thread, and their sum (what the main thread waited for before). --json also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import numpy as np  # noqa: E402
from shot_support import record_of, shot_layout, texture  # noqa: E402

from blender_addon.edit_jobs import EditRequest  # noqa: E402  (no bpy in it)
from seethrough_core.edit_plan import plan_edit, read_previous_file, read_previous_picture  # noqa: E402
from seethrough_core.generate_and_save import Destination, save_image  # noqa: E402
from seethrough_core.limits import DEFAULT_EDIT_STRENGTH  # noqa: E402

DOLLY = 0.15  # m a frame
LIMIT = 0.9  # a reprojection limit that keeps every move of this shot an edit


def saved_chain(folder: Path, size: tuple[int, int], edits: int, margin: int) -> Path:
    """A first picture and ``edits`` camera-move edits of it, each saved as the add-on saves it; the last."""
    path = folder / "picture_0.png"
    save_image(texture(0, size), record_of(shot_layout(0, DOLLY, size)), Destination(path, {}))
    for k in range(1, edits + 1):
        previous = read_previous_file(path, "")
        layout = shot_layout(k, DOLLY, size)
        plan = plan_edit(previous, layout, margin_px=margin, reproject_limit=LIMIT, chain=previous.chain())
        path = folder / f"picture_{k}.png"
        plan = plan.saved_as(str(path))
        image = np.where(plan.change.region[..., None], texture(k, size), plan.edit.image)
        record = replace(record_of(layout), parent=plan.parent)
        save_image(image, record, Destination(path, {}, parent=plan.parent, region=plan.region_mask))
    return path


def measure(shown: Path, size: tuple[int, int], edits: int, margin: int) -> dict[str, float]:
    png = shown.read_bytes()
    start = time.perf_counter()
    previous = read_previous_picture(shown.name, {"file": str(shown)}, png, "")  # the packed PNG, decoded
    request = EditRequest(
        previous, shown.name, shot_layout(edits + 1, DOLLY, size), margin, DEFAULT_EDIT_STRENGTH, 0, LIMIT
    )
    request.check()
    main = time.perf_counter() - start
    start = time.perf_counter()
    plan = request.plan()
    job = time.perf_counter() - start
    assert plan.parent["kind"] == "reprojected", plan.parent
    return {"main_thread_s": main, "job_thread_s": job, "before_main_thread_s": main + job}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--edits", type=int, nargs="+", default=[0, 4, 8])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    size = (args.size, args.size)
    margin = max(4, args.size // 40)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for edits in args.edits:
            folder = Path(tmp) / f"chain_{edits}"
            folder.mkdir()
            shown = saved_chain(folder, size, edits, margin)
            rows.append({"size": args.size, "edits_behind": edits, **measure(shown, size, edits, margin)})
    print(f"Regenerate Changed after a camera move, {args.size} px: seconds\n")
    print("| edits behind the shown result | main thread now | the job's thread | main thread before |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['edits_behind']} | {row['main_thread_s']:.2f} | {row['job_thread_s']:.2f} "
            f"| {row['before_main_thread_s']:.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
