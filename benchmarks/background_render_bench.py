"""The add-on's OSCR render in a background process against the same render inside this process.

The add-on renders in a separate Blender process so the artist's Blender never freezes; this
measures what that costs: the process start (Blender, or here Python importing the bpy module)
on top of the same render, side by side in one run, and checks that both give the same pixels.

    python benchmarks/background_render_bench.py                 # 256 and 512 px, 1 and 4 boxes
    python benchmarks/background_render_bench.py --sizes 512 --counts 4 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from render_bench import make_layout  # noqa: E402

from blender_addon.background_render import render_task, run_render  # noqa: E402
from blender_addon.render import render_layout  # noqa: E402


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def measure(size: int, count: int, repeats: int, root: Path) -> dict[str, float]:
    layout = make_layout(count, size)
    here_s, there_s = [], []
    for i in range(repeats):
        start = time.perf_counter()
        here = render_layout(layout, root / f"here-{size}-{count}-{i}", quiet=True)
        here_s.append(time.perf_counter() - start)
        task = render_task(layout, root / f"there-{size}-{count}-{i}", "cycles", blender_binary="")
        start = time.perf_counter()
        there = run_render(task, threading.Event())
        there_s.append(time.perf_counter() - start)
        assert there is not None
        if not np.array_equal(_pixels(here.oscr_path), _pixels(there.oscr_path)):
            raise SystemExit(f"{size} px, {count} boxes: the background render differs from the one here")
    here_median, there_median = statistics.median(here_s), statistics.median(there_s)
    return {"here": here_median, "there": there_median, "extra": there_median - here_median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    render_layout(make_layout(1, 256), Path(tempfile.mkdtemp()) / "warm-up", quiet=True)  # first-render costs
    print(f"Cycles OSCR render (profile seethrough3d-v1), median of {args.repeats}; same pixels checked")
    print(f"{'size':>6} {'boxes':>6} {'in this process':>16} {'background process':>19} {'extra':>8}")
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            for count in args.counts:
                row = measure(size, count, args.repeats, Path(folder))
                print(
                    f"{size:>6} {count:>6} {row['here']:>14.2f} s {row['there']:>17.2f} s "
                    f"{row['extra']:>+6.2f} s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
