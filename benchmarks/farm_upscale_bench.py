"""A `--ray` batch of frames made in two stages: the first final frame's wait and the batch's wall time,
with every frame upscaled after the last base (the order before) and each frame upscaled as soon as its
base is ready (`seethrough batch --ray` now), side by side in one run.

A local 2-node Ray cluster (ray.cluster_utils.Cluster, 2 CPUs a node: one CPU generation actor per
node, one CPU for renders), the tiny model, 1080p frames at 1/--scale (a base and 4 tiles each, the
geometry of the full-size frame), one seed per frame. The actors load once and serve every run; each
run writes into a folder of its own, and --repeat runs both orders again, the order alternating.

    python benchmarks/farm_upscale_bench.py                  # 3 frames, 1/4 scale, 4 steps
    python benchmarks/farm_upscale_bench.py --repeat 2 --json benchmarks/results/farm_upscale_bench.json

The simulated nodes share this machine's cores, the renders and the actors compete for them: the
figures show the order of the work, not a farm's speed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from seethrough.batch.ray_cluster import TEST_OBJECT_STORE_BYTES, plan_actors  # noqa: E402
from seethrough.batch.ray_runner import RayBatchRunner, start_actors, stop_actors  # noqa: E402
from seethrough.batch.runner import BatchOptions, Outcome  # noqa: E402
from seethrough_core.layout import Layout, load_layout  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "assets" / "examples" / "street.json"
NODES = 2
CPUS_PER_NODE = 2  # one for the node's actor, one for renders


class Timed(RayBatchRunner):
    """The batch on Ray, noting when each frame is finished."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.started = time.perf_counter()
        self.finals: list[float] = []  # seconds from the start to each frame written

    def _finish(self, outcome: Outcome, note: str = "") -> None:
        if outcome.status == "done":
            self.finals.append(time.perf_counter() - self.started)
        super()._finish(outcome, note)


class AfterEveryBase(Timed):
    upscale_alongside = False  # every frame's upscale after the last base, as before


def run_once(order: type[Timed], actors: dict, options: BatchOptions, inputs: list[Path]) -> dict:
    runner = order(options, actors, 2 * NODES * CPUS_PER_NODE, stream=io.StringIO())
    summary = runner.run(inputs)
    if not summary.ok or len(runner.finals) != len(options.seeds):
        raise SystemExit(f"the batch did not finish: {[(o.label, o.reason) for o in summary.outcomes]}")
    return {"first_final_s": runner.finals[0], "wall_s": summary.wall_s, "finals_s": runner.finals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--scale", type=int, default=4, help="1080p divided by this")
    parser.add_argument(
        "--steps", type=int, default=4, help="tiny-model steps per base (tiles run 0.35 of them)"
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path, help="add the figures to this file")
    args = parser.parse_args()

    data = load_layout(EXAMPLE).to_dict()
    data["resolution"] = [1920 // args.scale, 1080 // args.scale]
    node = {"num_cpus": CPUS_PER_NODE, "num_gpus": 0, "object_store_memory": TEST_OBJECT_STORE_BYTES}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    before, now = "after every base", "as each base is ready"
    orders: dict[str, type[Timed]] = {before: AfterEveryBase, now: Timed}
    runs: dict[str, list[dict]] = {name: [] for name in orders}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        Layout.from_dict(data).save(folder / "shot.json")
        actors: dict = {}
        try:
            for _ in range(NODES - 1):
                cluster.add_node(**node)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
            plan = plan_actors(ray.cluster_resources(), NODES, cluster.address)
            actors = start_actors(plan, ["--tiny"], 30.0, stream=io.StringIO())
            for repeat in range(args.repeat):
                names = list(orders) if repeat % 2 == 0 else list(reversed(orders))
                for name in names:
                    options = BatchOptions(
                        out_dir=folder / f"{name.replace(' ', '_')}_{repeat}", servers=list(actors),
                        seeds=list(range(1, args.frames + 1)), steps=args.steps,
                        base_megapixels=1.0 / args.scale**2,
                    )  # fmt: skip
                    runs[name].append(run_once(orders[name], actors, options, [folder / "shot.json"]))
                    print(f"{name}: {runs[name][-1]}", file=sys.stderr)
        finally:
            stop_actors(actors)
            ray.shutdown()
            cluster.shutdown()

    def mean(name: str, key: str) -> float:
        return sum(run[key] for run in runs[name]) / len(runs[name])

    width, height = data["resolution"]
    print(
        f"\n{args.frames} frames of {width}x{height} (1080p at 1/{args.scale}, 4 tiles), tiny model, "
        f"{args.steps} steps, {NODES} nodes x {CPUS_PER_NODE} CPUs, {os.cpu_count()} cores, "
        f"{args.repeat} run(s) each\n"
    )
    print(f"| `--ray`, frames upscaled | {before} s | {now} s | x |")
    print("|---|---|---|---|")
    for key, label in (("first_final_s", "first final frame"), ("wall_s", "whole batch")):
        was, is_now = mean(before, key), mean(now, key)
        print(f"| {label} | {was:.1f} | {is_now:.1f} | {was / is_now:.2f} |")
    if args.json:  # one entry per configuration: runs of other configurations stay in the file
        kept = json.loads(args.json.read_text()) if args.json.is_file() else {}
        config = f"{args.frames} frames, 1/{args.scale}, {args.steps} steps"
        kept[config] = {"cores": os.cpu_count(), "repeat": args.repeat, "runs": runs}
        args.json.write_text(json.dumps(kept, indent=1))


if __name__ == "__main__":
    main()
