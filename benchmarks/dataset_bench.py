"""What a kept dataset sample costs: `seethrough dataset make --primitives` with 1 and with 2 workers.

Prints, per worker count, the wall seconds per kept sample and the share of the workers' time spent
on the target render, the OSCR render (with its JPEG) and the masks, from the timings each sample
records. The scene drawing and filtering runs in the main process meanwhile.

    python benchmarks/dataset_bench.py                               # 4 scenes at 256 px
    python benchmarks/dataset_bench.py --scenes 8 --resolution 512 --samples 32
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seethrough_core.dataset_format import read_samples  # noqa: E402


def run_once(workers: int, args: argparse.Namespace, out: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    command = [
        sys.executable, "-m", "seethrough", "dataset", "make", "--primitives", "--out", str(out),
        "--scenes", str(args.scenes), "--resolution", str(args.resolution), "--samples", str(args.samples),
        "--workers", str(workers), "--seed", "0",
    ]  # fmt: skip
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(f"dataset make failed:\n{run.stderr}")
    samples = read_samples(out)
    parts: Counter = Counter()
    for sample in samples:
        parts.update(sample.scene["timings"])
    busy = sum(parts.values())
    return {
        "workers": workers,
        "kept": len(samples),
        "wall_s": wall,
        "s_per_sample": wall / len(samples),
        "shares": {k: v / busy for k, v in parts.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--samples", type=int, default=8, help="Cycles samples of the target")
    args = parser.parse_args()
    print(f"{args.scenes} scenes, {args.resolution} px, {args.samples} target samples, {os.cpu_count()} CPUs")
    print(f"{'workers':>7} {'kept':>5} {'wall s':>8} {'s/sample':>9} {'target':>7} {'oscr':>6} {'masks':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            r = run_once(workers, args, Path(tmp) / f"w{workers}")
            shares = r["shares"]
            print(
                f"{r['workers']:>7} {r['kept']:>5} {r['wall_s']:>8.1f} {r['s_per_sample']:>9.1f} "
                f"{shares['target_s']:>7.0%} {shares['oscr_s']:>6.0%} {shares['masks_s']:>6.0%}"
            )


if __name__ == "__main__":
    main()
