"""A batch of frames made in two stages: the first final frame's wait and the batch's wall time, with
every frame upscaled after the last base (the order before) and each frame upscaled as soon as its base
is ready (`seethrough batch` now), side by side in one run.

With --ray (the default), a local 2-node Ray cluster (ray.cluster_utils.Cluster, 2 CPUs a node: one CPU
generation actor per node, one CPU for renders). With --local, the batch without Ray: one tiny server
process, and this process's Blender rendering the shots and the tile views on its main thread. The tiny
model, 1080p frames at 1/--scale (a base and 4 tiles each, the geometry of the full-size frame), one seed
per frame. The model loads once and serves every run; each run writes into a folder of its own, and
--repeat runs both orders again, the order alternating.

    python benchmarks/farm_upscale_bench.py             # --ray: 3 frames, 1/4 scale, 4 steps
    python benchmarks/farm_upscale_bench.py --local --split-cores --steps 60 \
        --json benchmarks/results/farm_upscale_bench.json

The renders and the generations share this machine's cores (--split-cores pins the server to one and
Blender to the other, a stand-in for a server on its own GPU): the figures show the order of the work,
not a farm's or a GPU's speed.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ray  # noqa: E402
import side_by_side  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from seethrough.batch.ray_cluster import TEST_OBJECT_STORE_BYTES, plan_actors  # noqa: E402
from seethrough.batch.ray_runner import RayBatchRunner, start_actors, stop_actors  # noqa: E402
from seethrough.batch.runner import BatchOptions, BatchRunner, Outcome  # noqa: E402
from seethrough_core.layout import Layout, load_layout  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "assets" / "examples" / "street.json"
NODES = 2
CPUS_PER_NODE = 2  # one for the node's actor, one for renders
BEFORE, NOW = "after every base", "as each base is ready"
ORDERS = (BEFORE, NOW)


class Timed:
    """A batch runner noting when each frame is finished."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.started = time.perf_counter()
        self.finals: list[float] = []  # seconds from the start to each frame written

    def _finish(self, outcome: Outcome, note: str = "") -> None:
        if outcome.status == "done":
            self.finals.append(time.perf_counter() - self.started)
        super()._finish(outcome, note)


class RayNow(Timed, RayBatchRunner):
    pass


class RayAfterEveryBase(Timed, RayBatchRunner):
    upscale_after_bases = True  # every frame's upscale after the last base, as before


class LocalNow(Timed, BatchRunner):
    pass


class LocalAfterEveryBase(Timed, BatchRunner):
    upscale_after_bases = True


def run_once(runner: Timed, options: BatchOptions, inputs: list[Path]) -> dict:
    summary = runner.run(inputs)
    if not summary.ok or len(runner.finals) != len(options.seeds):
        raise SystemExit(f"the batch did not finish: {[(o.label, o.reason) for o in summary.outcomes]}")
    return {"first_final_s": runner.finals[0], "wall_s": summary.wall_s, "finals_s": runner.finals}


def run_orders(args: argparse.Namespace, folder: Path, servers: list[str], make) -> dict[str, list[dict]]:
    """Both orders, --repeat times, alternating which goes first; ``make(order, options)`` builds a runner."""

    def run(name: str, repeat: int) -> dict:
        options = BatchOptions(
            out_dir=folder / f"{name.replace(' ', '_')}_{repeat}", servers=servers,
            seeds=list(range(1, args.frames + 1)), steps=args.steps, base_megapixels=1.0 / args.scale**2,
        )  # fmt: skip
        return run_once(make(name, options), options, [folder / "shot.json"])

    return side_by_side.alternating(ORDERS, args.repeat, run)


def on_ray(args: argparse.Namespace, folder: Path) -> dict[str, list[dict]]:
    node = {"num_cpus": CPUS_PER_NODE, "num_gpus": 0, "object_store_memory": TEST_OBJECT_STORE_BYTES}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    orders = {BEFORE: RayAfterEveryBase, NOW: RayNow}
    actors: dict = {}
    try:
        for _ in range(NODES - 1):
            cluster.add_node(**node)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        plan = plan_actors(ray.cluster_resources(), NODES, cluster.address)
        actors = start_actors(plan, ["--tiny"], 30.0, stream=io.StringIO())
        renders = 2 * NODES * CPUS_PER_NODE

        def make(name: str, options: BatchOptions) -> Timed:
            return orders[name](options, actors, renders, stream=io.StringIO())

        return run_orders(args, folder, list(actors), make)
    finally:
        stop_actors(actors)
        ray.shutdown()
        cluster.shutdown()


def local(args: argparse.Namespace, folder: Path) -> dict[str, list[dict]]:
    orders = {BEFORE: LocalAfterEveryBase, NOW: LocalNow}
    with side_by_side.tiny_server(folder, args.split_cores) as server:
        return run_orders(
            args, folder, [server.endpoint], lambda name, options: orders[name](options, stream=io.StringIO())
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--scale", type=int, default=4, help="1080p divided by this")
    parser.add_argument(
        "--steps", type=int, default=4, help="tiny-model steps per base (tiles run 0.35 of them)"
    )
    parser.add_argument("--local", action="store_true", help="the batch without Ray, on one tiny server")
    side_by_side.add_arguments(
        parser, "with --local: the server on CPU 1, Blender on CPU 0 (a stand-in for a server on its own GPU)"
    )
    args = parser.parse_args()

    data = load_layout(EXAMPLE).to_dict()
    data["resolution"] = [1920 // args.scale, 1080 // args.scale]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        Layout.from_dict(data).save(folder / "shot.json")
        runs = local(args, folder) if args.local else on_ray(args, folder)

    width, height = data["resolution"]
    where = f"{NODES} nodes x {CPUS_PER_NODE} CPUs"
    if args.local:
        where = "one local server" + (", split cores" if args.split_cores else "")
    print(
        f"\n{args.frames} frames of {width}x{height} (1080p at 1/{args.scale}, 4 tiles), tiny model, "
        f"{args.steps} steps, {where}, {os.cpu_count()} cores, {args.repeat} run(s) each\n"
    )
    batch = "`seethrough batch`" if args.local else "`--ray`"
    rows = {"first_final_s": "first final frame, s", "wall_s": "whole batch, s"}
    side_by_side.print_table(f"{batch}, frames upscaled", ORDERS, runs, rows)
    if args.json:
        mode = ("local, split cores, " if args.split_cores else "local, ") if args.local else ""
        config = f"{mode}{args.frames} frames, 1/{args.scale}, {args.steps} steps"
        side_by_side.save_runs(args.json, config, runs, args.repeat)


if __name__ == "__main__":
    main()
