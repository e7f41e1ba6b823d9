"""Generate Frames in the add-on: a shot's wall time with each frame's job rendering its own OSCR image
first, and with the next frames' OSCR images rendered ahead while the frames before them generate,
side by side in one run.

The add-on runs in this process (the bpy module, its pump driven as Blender's timer would), against one
tiny server process; the example street layout with its car driving a little further each frame, so
every frame after the first is an edit of the frame before, with an OSCR render of its own. Each run
writes into a folder of its own (no render is reused across runs); --repeat runs both again, the
order alternating.

    python benchmarks/frames_bench.py --split-cores --json benchmarks/results/frames_bench.json

The renders and the generations share this machine's cores (--split-cores pins the server to one and
Blender, with its background renders, to the other: a stand-in for a server on its own GPU). The
figures show what overlapping the renders with the generations saves, not a GPU's speed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bpy  # noqa: E402  (first: it puts addon_utils on the path)
import side_by_side  # noqa: E402

from blender_addon import generation  # noqa: E402
from blender_addon.box_props import box_objects  # noqa: E402
from blender_addon.frame_sequence import SHOT, FrameSequence  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "assets" / "examples" / "street.json"
OFF, ON = "each job renders", "rendered ahead"


def set_up_scene(frames: int, size: int, steps: int) -> None:
    import addon_utils

    bpy.ops.wm.read_factory_settings(use_empty=True)
    assert addon_utils.enable("blender_addon", default_set=True) is not None
    assert bpy.ops.seethrough.import_layout(filepath=str(EXAMPLE)) == {"FINISHED"}
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = size, size * 3 // 4
    props = scene.seethrough
    props.random_seed, props.seed, props.steps, props.show_previews = False, 7, steps, False
    scene.frame_start, scene.frame_end = 1, frames
    car = next(box for box in box_objects(scene) if "car" in box.seethrough.description)
    for frame in range(1, frames + 1):  # the car drives 0.15 m further each frame
        car.location.y = -1.1 + 0.15 * (frame - 1)
        car.keyframe_insert("location", frame=frame)


def pressed(operator, address: str, out_dir: Path) -> float:
    """Seconds from pressing the add-on's ``operator`` (against ``address``, writing into ``out_dir``) to
    the end of what it started, the pump driven as Blender's timer would."""
    prefs = bpy.context.preferences.addons["blender_addon"].preferences
    prefs.server_address, prefs.timeout_s, prefs.output_dir = address, 60.0, str(out_dir)
    started = time.perf_counter()
    assert operator() == {"FINISHED"}
    while generation.pump():
        time.sleep(0.02)
    return time.perf_counter() - started


def shot(address: str, out_dir: Path, ahead: bool) -> dict[str, float]:
    FrameSequence.render_ahead = ahead
    wall = pressed(bpy.ops.seethrough.generate_frames, address, out_dir)
    if SHOT.state != "done" or SHOT.made != len(SHOT.frames):
        raise SystemExit(f"the shot did not complete: {SHOT.message}")
    return {"wall_s": wall, "per_frame_s": wall / len(SHOT.frames)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--size", type=int, default=384, help="frame width (4:3; sides multiples of 16)")
    parser.add_argument("--steps", type=int, default=100, help="tiny-model steps (about a render's time)")
    side_by_side.add_arguments(
        parser, "the server on CPU 1, Blender and its renders on CPU 0 (a stand-in for a server on a GPU)"
    )
    args = parser.parse_args()

    set_up_scene(args.frames, args.size, args.steps)
    runs = side_by_side.both_ways_on_one_server(
        (OFF, ON), args, lambda way, endpoint, folder: shot(endpoint, folder, way == ON)
    )
    FrameSequence.render_ahead = True

    where = "split cores" if args.split_cores else "shared cores"
    width = args.size
    print(
        f"\n{args.frames} frames of {width}x{width * 3 // 4} (a car moving: every frame after the first an "
        f"edit), tiny model, {args.steps} steps, {where}, {os.cpu_count()} cores, {args.repeat} run(s) each\n"
    )
    rows = {"wall_s": "whole shot, s", "per_frame_s": "per frame, s"}
    side_by_side.print_table("Generate Frames", (OFF, ON), runs, rows)
    if args.json:
        config = f"{where}, {args.frames} frames, {width} px, {args.steps} steps"
        side_by_side.save_runs(args.json, config, runs, args.repeat)


if __name__ == "__main__":
    main()
