"""Boxes From Selection on a heavy scene: `python benchmarks/fit_bench.py [--objects 16] [--vertices N]`.

Builds ``--objects`` meshes with ``--vertices`` vertices in total (UV spheres and subdivided, twisted
grids, each turned and stretched, half of them under a modifier), selects them all and times the
operator that fits one box per object (evaluated geometry read through numpy, least-footprint fit),
after one warm-up run. Prints the time per run and the vertices per second.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import bpy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import addon_utils  # noqa: E402


def build_scene(objects: int, vertices: int) -> int:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    per_object = vertices // objects
    side = max(int(math.sqrt(per_object)), 2)
    total = 0
    for i in range(objects):
        location = (3.0 * (i % 4), 3.0 * (i // 4), 1.0)
        if i % 2:
            bpy.ops.mesh.primitive_uv_sphere_add(segments=side, ring_count=side, location=location)
        else:
            bpy.ops.mesh.primitive_grid_add(
                x_subdivisions=side, y_subdivisions=side, size=2, location=location
            )
            bend = bpy.context.active_object.modifiers.new("twist", "SIMPLE_DEFORM")
            bend.deform_method, bend.angle = "TWIST", math.radians(60)
        obj = bpy.context.active_object
        obj.rotation_euler = (0.0, 0.0, math.radians(17 * i))
        obj.scale = (1.0 + 0.1 * i, 0.6, 1.2)
        total += len(obj.data.vertices)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=16)
    parser.add_argument("--vertices", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    total = build_scene(args.objects, args.vertices)
    addon_utils.enable("blender_addon", default_set=True)
    sources = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    times = []
    for _ in range(args.repeats + 1):
        for obj in bpy.context.scene.objects:
            obj.select_set(obj in sources)
        bpy.context.view_layer.objects.active = sources[0]
        started = time.perf_counter()
        bpy.ops.seethrough.boxes_from_selection()
        times.append(time.perf_counter() - started)
        bpy.ops.object.select_all(action="DESELECT")
        for box in [o for o in bpy.context.scene.objects if o not in sources]:
            bpy.data.objects.remove(box, do_unlink=True)
    runs = times[1:]
    print(f"Blender {bpy.app.version_string}: {args.objects} objects, {total:,} vertices")
    median = statistics.median(runs)
    print(f"Boxes From Selection: median {median:.3f} s (min {min(runs):.3f}, max {max(runs):.3f}) over "
          f"{len(runs)} runs; {total / median / 1e6:.1f} M vertices/s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
