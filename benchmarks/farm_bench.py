"""`seethrough batch --ray` against today's batch with --server, measured side by side in one run.

Four batches of the same shots, tiny model, on this machine:
  - today's batch with 1 and with 2 tiny `--server`s (renders on the main thread);
  - Ray with 1 and with 2 simulated nodes (ray.cluster_utils.Cluster, one CPU actor per node,
    renders as Ray tasks).
Images per minute count the batch's run only (servers and actors already loaded). Then Ray's own
cost per image at 1024 px: the driver's wall time of each job minus the time the server inside the
actor reports for it (queue + generation), against the same difference for a `--server`; what is
left is scheduling, the object store carrying the condition and the image, and the actor's loopback
hop. Compared with a FLUX.1-dev generation on a GPU (docs/performance.md: 6.49 s at 1024 px, 28
steps, H200) it gives the share a real batch would pay.

The simulated nodes share this machine's CPU cores: with fewer cores than two nodes use, the
2-node figure measures contention, not Ray; run it where each node has cores of its own.

    python benchmarks/farm_bench.py                       # 8 shots at 256 px, 4 steps
    python benchmarks/farm_bench.py --shots 16 --steps 8
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from seethrough.batch.ray_cluster import TEST_OBJECT_STORE_BYTES, plan_actors  # noqa: E402
from seethrough.batch.ray_runner import RayBatchRunner, start_actors, stop_actors  # noqa: E402
from seethrough.batch.runner import BatchOptions, BatchRunner, BatchSummary  # noqa: E402
from seethrough_core.layout import Layout, load_layout  # noqa: E402
from seethrough_core.server_process import ServerProcess  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "assets" / "examples" / "street.json"
GPU_GENERATION_S = 6.49  # FLUX.1-dev, 1024 px, 28 steps, bf16, exact condition (docs/performance.md)
CPUS_PER_NODE = 2  # one for the node's actor, one for renders


def write_shots(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        data = load_layout(EXAMPLE).to_dict()
        data["resolution"] = [size, size]
        data["boxes"][0]["center"][1] += 0.2 * i  # distinct shots
        path = folder / f"shot_{i:02d}.json"
        Layout.from_dict(data).save(path)
        paths.append(path)
    return paths


def with_servers(count: int, inputs: list[Path], out: Path, steps: int, logs: Path) -> BatchSummary:
    with ExitStack() as stack:
        servers = [
            stack.enter_context(ServerProcess.tiny(logs / f"server_{out.name}_{i}.log")).endpoint
            for i in range(count)
        ]
        options = BatchOptions(out_dir=out, servers=servers, seeds=[1], steps=steps)
        return BatchRunner(options, stream=io.StringIO()).run(inputs)


def with_ray(nodes: int, inputs: list[Path], out: Path, steps: int) -> BatchSummary:
    node = {"num_cpus": CPUS_PER_NODE, "num_gpus": 0, "object_store_memory": TEST_OBJECT_STORE_BYTES}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(**node)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        actors = {}
        try:
            resources = ray.cluster_resources()
            plan = plan_actors(resources, nodes, cluster.address)
            actors = start_actors(plan, ["--tiny"], 30.0, stream=io.StringIO())
            options = BatchOptions(out_dir=out, servers=list(actors), seeds=[1], steps=steps)
            runner = RayBatchRunner(options, actors, 2 * int(resources["CPU"]), stream=io.StringIO())
            return runner.run(inputs)
        finally:
            stop_actors(actors)
            ray.shutdown()
    finally:
        cluster.shutdown()


def overhead_per_image(summary: BatchSummary) -> float:
    """Median seconds a job took as the driver saw it beyond what the server reports for it."""
    extra = []
    for outcome in summary.outcomes:
        if outcome.status == "done":
            record = json.loads(outcome.image_path.with_suffix(".json").read_text())
            extra.append(outcome.generate_s - record["timings"]["total_s"])
    return statistics.median(extra)


def images_per_minute(summary: BatchSummary) -> float:
    return 60.0 * summary.count("done") / summary.wall_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4, help="tiny-model steps per image")
    parser.add_argument("--overhead-images", type=int, default=4, help="1024 px images for the overhead")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        inputs = write_shots(folder / "shots", args.shots, args.size)
        large = write_shots(folder / "large", args.overhead_images, 1024)
        rows = []
        for label, run in (
            ("--server x 1", lambda out: with_servers(1, inputs, out, args.steps, folder)),
            ("--server x 2", lambda out: with_servers(2, inputs, out, args.steps, folder)),
            ("--ray, 1 node", lambda out: with_ray(1, inputs, out, args.steps)),
            ("--ray, 2 nodes", lambda out: with_ray(2, inputs, out, args.steps)),
        ):
            summary = run(folder / label.replace(" ", "_").replace(",", ""))
            rows.append((label, summary))
            print(
                f"{label}: {summary.count('done')} images in {summary.wall_s:.1f} s, "
                f"{1000 * overhead_per_image(summary):.0f} ms per image beyond the server's own time",
                file=sys.stderr,
            )
        server_1024 = with_servers(1, large, folder / "large_server", 1, folder)
        ray_1024 = with_ray(1, large, folder / "large_ray", 1)

    print(
        f"\n{args.shots} shots, {args.size} px, tiny model, {args.steps} steps, {os.cpu_count()} CPU cores\n"
    )
    print("| batch | images | wall s | images / min | x one |")
    print("|---|---|---|---|---|")
    for label, summary in rows:
        one = rows[0][1] if label.startswith("--server") else rows[2][1]
        ratio = images_per_minute(summary) / images_per_minute(one)
        print(
            f"| {label} | {summary.count('done')} | {summary.wall_s:.1f} | {images_per_minute(summary):.1f} "
            f"| {ratio:.2f} |"
        )
    server_extra, ray_extra = overhead_per_image(server_1024), overhead_per_image(ray_1024)
    added = ray_extra - server_extra
    print(f"\nPer image at 1024 px ({args.overhead_images} images, 1 step), beyond the server's own time:")
    print(f"- `--server`: {1000 * server_extra:.0f} ms (socket, PNG and sidecar writes)")
    print(
        f"- `--ray`:    {1000 * ray_extra:.0f} ms (the same, plus Ray's scheduling, object store, actor hop)"
    )
    print(
        f"- Ray adds {1000 * added:.0f} ms: {100 * added / GPU_GENERATION_S:.2f}% of a {GPU_GENERATION_S} s "
        f"FLUX.1-dev generation on a GPU; all of Ray's path, {100 * ray_extra / GPU_GENERATION_S:.2f}%"
    )
    failed = sum(s.count("failed") for _, s in rows) + server_1024.count("failed") + ray_1024.count("failed")
    if failed:
        print(f"warning: {failed} job(s) failed", file=sys.stderr)


if __name__ == "__main__":
    main()
