"""Generate at a render size the model takes in two stages, in the add-on: the job's wall time with the
upscale rendering its tile views once the base is made, and with the views rendered ahead while the
server generates the base, side by side in one run.

The add-on runs in this process (the bpy module, its pump driven as Blender's timer would), against one
tiny server process; the example street layout at --size (16:9). Each run writes into a folder of its
own (no render is reused across runs); --repeat runs both again, the order alternating.

    python benchmarks/tile_views_bench.py --split-cores --json benchmarks/results/tile_views_bench.json

The renders and the generations share this machine's cores (--split-cores pins the server to one and
Blender, with its background renders, to the other: a stand-in for a server on its own GPU). The
figures show what overlapping the views' renders with the base's generation saves, not a GPU's speed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bpy  # noqa: E402  (first: it puts addon_utils on the path)
import side_by_side  # noqa: E402
from frames_bench import pressed  # noqa: E402

from blender_addon.generation_jobs import RUNNER, GenerationJob  # noqa: E402
from seethrough_core.upscale_plan import plan_upscale  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "assets" / "examples" / "street.json"
OFF, ON = "upscale renders them", "rendered ahead"


def set_up_scene(size: tuple[int, int], steps: int, base_megapixels: float) -> None:
    import addon_utils

    bpy.ops.wm.read_factory_settings(use_empty=True)
    assert addon_utils.enable("blender_addon", default_set=True) is not None
    assert bpy.ops.seethrough.import_layout(filepath=str(EXAMPLE)) == {"FINISHED"}
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    props = scene.seethrough
    props.random_seed, props.seed, props.steps, props.show_previews = False, 7, steps, False
    props.upscale_to_render, props.base_megapixels = True, base_megapixels


def generate(address: str, out_dir: Path, ahead: bool) -> dict[str, float]:
    GenerationJob.views_ahead = ahead
    wall = pressed(bpy.ops.seethrough.generate, address, out_dir)
    if RUNNER.status.state != "done":
        raise SystemExit(f"the job did not complete: {RUNNER.status.message}")
    return {"wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=768, help="frame width (16:9; sides multiples of 16)")
    parser.add_argument("--base-megapixels", type=float, default=0.0625, help="the base's size (256 px)")
    parser.add_argument("--steps", type=int, default=100, help="tiny-model steps (about a render's time)")
    side_by_side.add_arguments(
        parser, "the server on CPU 1, Blender and its renders on CPU 0 (a stand-in for a server on a GPU)"
    )
    args = parser.parse_args()
    size = (args.size, args.size * 9 // 16 // 16 * 16)
    plan = plan_upscale(*size, seed=7, base_megapixels=args.base_megapixels)
    if not plan.two_stages:
        raise SystemExit(f"{size[0]}x{size[1]} is one pass at --base-megapixels {args.base_megapixels}")

    set_up_scene(size, args.steps, args.base_megapixels)
    runs = side_by_side.both_ways_on_one_server(
        (OFF, ON), args, lambda way, endpoint, folder: generate(endpoint, folder, way == ON)
    )
    GenerationJob.views_ahead = True

    where = "split cores" if args.split_cores else "shared cores"
    base = f"{plan.base.width}x{plan.base.height}"
    print(
        f"\nGenerate at {size[0]}x{size[1]}: a {base} base, then {len(plan.tiles)} tiles; tiny model, "
        f"{args.steps} steps, {where}, {os.cpu_count()} cores, {args.repeat} run(s) each\n"
    )
    side_by_side.print_table("Generate in two stages", (OFF, ON), runs, {"wall_s": "whole job, s"})
    if args.json:
        config = f"{where}, {size[0]}x{size[1]}, base {base}, {args.steps} steps"
        side_by_side.save_runs(args.json, config, runs, args.repeat)


if __name__ == "__main__":
    main()
