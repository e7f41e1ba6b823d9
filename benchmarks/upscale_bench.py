"""What a frame at any size costs: `python benchmarks/upscale_bench.py [--scale 4] [--steps 2]`.

For each frame (1920x1080, 3840x2160, 7680x4320) prints the upscale's geometry (base size, tiles per
image, tile size) and, for the frames given with --run (default 1080p), runs the whole thing for real: a
tiny server, Blender renders of the tiles' OSCR views, the tile jobs, the blend, twice side by side: one
render per tile, and the views cut from one render (the first tile's alone). Its figures: seconds per
final megapixel of the two stages against one plain generation of the base, the seconds spent rendering
views either way, and the share of the wall time spent outside the model (rendering tile views,
transfers, resampling, blending).

--frames N also runs a batch's upscale stage of N such frames both ways, side by side: one frame after
another (each frame's views render while the server waits), and the way `seethrough batch` runs them,
one pool of server threads shared by the frames (the next frame's views render while the last tiles of
the frame before still generate).

On a CPU only tiny sizes are practical: --scale N divides every frame side by N and the base size by
N^2, which keeps the geometry (tiles per image, overlaps) of the full-size frame. 8K is reported through
its geometry only. With a CUDA GPU, start a server with the FLUX.1-dev-sized random-weight transformer
(`seethrough serve` with real weights, or benchmarks/gpu_harness.py) and pass --server ENDPOINT --scale 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from blender_addon.render import TileViews, render_layout  # noqa: E402
from seethrough_core.client import SeeThroughClient  # noqa: E402
from seethrough_core.generate_and_save import Destination, generate_and_save  # noqa: E402
from seethrough_core.generation_settings import GenerationSettings  # noqa: E402
from seethrough_core.layout import load_layout  # noqa: E402
from seethrough_core.limits import MEGAPIXEL  # noqa: E402
from seethrough_core.protocol import GenerateRequest  # noqa: E402
from seethrough_core.server_process import ServerProcess  # noqa: E402
from seethrough_core.upscale_plan import base_layout, frame_layout_at, plan_upscale  # noqa: E402
from seethrough_core.upscale_run import TilePool, Upscale, UpscaleRunner  # noqa: E402

FRAMES = {"1080p": (1920, 1080), "4K": (3840, 2160), "8K": (7680, 4320)}


def geometry(name: str, size: tuple[int, int], scale: int) -> dict:
    width, height = size[0] // scale, size[1] // scale
    start = time.perf_counter()
    plan = plan_upscale(width, height, seed=1, base_megapixels=1.0 / scale**2)
    plan_s = time.perf_counter() - start
    return {
        "frame": name,
        "size": [width, height],
        "base": [plan.base.width, plan.base.height],
        "tiles": len(plan.tiles),
        "tile": [plan.tile_width, plan.tile_height],
        "plan_s": round(plan_s, 5),
    }


class TimedViews(TileViews):
    """The command line's tile views, with the seconds spent rendering them (cut folders are free)."""

    def __init__(self, engine: str) -> None:
        super().__init__(engine)
        self.seconds = 0.0

    def view(self, layout, folder):
        start = time.perf_counter()
        try:
            return super().view(layout, folder)
        finally:
            self.seconds += time.perf_counter() - start

    def shared(self, whole, folder, crops):
        start = time.perf_counter()
        try:
            return super().shared(whole, folder, crops)
        finally:
            self.seconds += time.perf_counter() - start


def run(name: str, size: tuple[int, int], args: argparse.Namespace, endpoint: str, out: Path) -> dict:
    width, height = size[0] // args.scale, size[1] // args.scale
    base_mp = 1.0 / args.scale**2
    frame = frame_layout_at(load_layout(REPO / "assets/examples/street.json"), (width, height))
    plan = plan_upscale(width, height, seed=1, base_megapixels=base_mp)
    with SeeThroughClient(endpoint, 120.0) as client:
        start = time.perf_counter()
        base = base_layout(frame, plan)
        rendered = render_layout(base, out / name / "base", engine=args.engine, quiet=True)
        settings = GenerationSettings.for_layout(base, seed=1, steps=args.steps)
        request = GenerateRequest.for_settings(
            settings, rendered.oscr_path.read_bytes(), rendered.masks.token_grids()
        )
        saved = generate_and_save(client, request, base, Destination(out / name / "base.png", {}))
        base_s = time.perf_counter() - start
        upscales = {}
        for mode in ("one render per tile", "views cut from one render"):
            views = TimedViews(args.engine)
            upscale = Upscale(
                plan, frame, saved.result.image, saved.record, out / name / mode / "frame.png", args.steps,
                3.5, {},
            )  # fmt: skip
            shared = views.shared if mode.startswith("views cut") else None
            runner = UpscaleRunner(upscale, [client], views.view, render_views=shared)
            start = time.perf_counter()
            final = runner.run()
            upscales[mode] = (time.perf_counter() - start, views)
    batch = frames_side_by_side(args, endpoint, plan, frame, saved, out / name) if args.frames else None
    upscale_s, views = upscales["views cut from one render"]
    per_tile_s, per_tile_views = upscales["one render per tile"]
    model_s = sum(t["timings"]["generation_s"] for t in final.record.upscale["tiles"])
    megapixels = width * height / MEGAPIXEL
    return {
        "frame": name,
        "size": [width, height],
        "tiles": len(plan.tiles),
        "base_generation_s": round(base_s, 2),
        "upscale_s": round(upscale_s, 2),
        "upscale_one_render_per_tile_s": round(per_tile_s, 2),
        "views_render_s": round(views.seconds, 2),
        "views_render_one_per_tile_s": round(per_tile_views.seconds, 2),
        "s_per_final_megapixel": round((base_s + upscale_s) / megapixels, 2),
        "plain_base_s_per_megapixel": round(base_s / (plan.base.width * plan.base.height / MEGAPIXEL), 2),
        "tile_render_s_mean": round(per_tile_views.seconds / len(plan.tiles), 2),
        "tile_model_s_mean": round(model_s / len(plan.tiles), 2),
        "overhead_share": round(1 - model_s / upscale_s, 3),
        **({"batch": batch} if batch else {}),
    }


def frames_side_by_side(args, endpoint: str, plan, frame, saved, out: Path) -> dict:
    """A batch's upscale stage of ``args.frames`` frames: one after another, then sharing one pool."""
    seconds = {}
    with SeeThroughClient(endpoint, 120.0) as client:
        for mode in ("one after another", "one pool, frames overlapped"):
            views = TileViews(args.engine)
            runners = [
                UpscaleRunner(
                    Upscale(
                        plan,
                        frame,
                        saved.result.image,
                        saved.record,
                        out / mode / f"{k:04d}.png",
                        args.steps,
                        3.5,
                        {},
                    ),
                    [client],
                    views.view,
                    render_views=views.shared,
                )  # fmt: skip
                for k in range(args.frames)
            ]
            start = time.perf_counter()
            if mode == "one after another":
                made = [runner.run() for runner in runners]
            else:
                pool = TilePool([client])
                try:
                    made, running = [], None
                    for runner in runners:
                        runner.queue_tiles(pool)
                        if running is not None:
                            made.append(running.complete())
                        running = runner
                    made.append(running.complete())
                finally:
                    pool.close()
            seconds[mode] = time.perf_counter() - start
            assert all(image is not None for image in made)
    before, after = seconds["one after another"], seconds["one pool, frames overlapped"]
    return {
        "frames": args.frames,
        "one_after_another_s": round(before, 2),
        "frames_overlapped_s": round(after, 2),
        "speedup": round(before / after, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=int, default=4, help="divide every frame side by this (4)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--engine", default="cycles", choices=["cycles", "eevee"])
    parser.add_argument("--run", default="1080p", help="frames to run for real, e.g. 1080p,4K (1080p)")
    parser.add_argument("--server", help="a running server (default: a tiny one started here)")
    parser.add_argument("--frames", type=int, default=0, help="also run a batch of N frames both ways")
    parser.add_argument(
        "--split-cores",
        action="store_true",
        help="the tiny server on CPU 1 (one thread), Blender on CPU 0: stands in for a server on its own GPU",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    report = {"scale": args.scale, "steps": args.steps, "split_cores": args.split_cores}
    report.update(geometry=[], runs=[])
    for name, size in FRAMES.items():
        for scale in sorted({1, args.scale}):
            report["geometry"].append(geometry(name, size, scale))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        server = None if args.server else ServerProcess.tiny(out / "server.log")
        if server is not None:
            if args.split_cores:  # the server inherits CPU 1 and one thread; this process keeps CPU 0
                os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
                os.sched_setaffinity(0, {1})
            server.__enter__()
            if args.split_cores:
                os.sched_setaffinity(0, {0})
        try:
            endpoint = args.server or server.endpoint
            for name in args.run.split(","):
                report["runs"].append(run(name, FRAMES[name], args, endpoint, out))
        finally:
            if server is not None:
                server.__exit__(None, None, None)
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
