"""An edit of a frame made in two stages: `python benchmarks/frame_edit_bench.py [--scale 4] [--frame 4K]`.

The street example as a frame (4K by default), made once: its base, then the upscale. Then the small
white dog moves 30 cm and the base is edited (the region of the change only, a real edit job); the
edited base is made into the frame again twice, side by side in one run: every tile refined again (as
before), and only the tiles the change reaches, the rest kept from the previous frame
(seethrough_core/frame_reuse.py). Printed: the tiles refined and the seconds each way (views and jobs),
and the share of frame pixels that are the previous frame's byte for byte.

On a CPU only tiny sizes are practical: --scale N divides every frame side by N and the base size by N^2,
which keeps the geometry (tiles per frame, overlaps). The tiny random-weight model cannot show how the
refined tiles blend into the kept ones; the released checkpoint can.
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
sys.path[:0] = [str(REPO)]

from blender_addon.render import TileViews, render_layout  # noqa: E402
from seethrough.previous_picture import read_previous  # noqa: E402
from seethrough_core.client import SeeThroughClient  # noqa: E402
from seethrough_core.edit_plan import plan_edit  # noqa: E402
from seethrough_core.frame_reuse import frame_reuse  # noqa: E402
from seethrough_core.generate_and_save import Destination, generate_and_save  # noqa: E402
from seethrough_core.generation_settings import GenerationSettings  # noqa: E402
from seethrough_core.layout import load_layout  # noqa: E402
from seethrough_core.protocol import GenerateRequest  # noqa: E402
from seethrough_core.server_process import ServerProcess  # noqa: E402
from seethrough_core.upscale_plan import base_layout, frame_layout_at, plan_upscale  # noqa: E402
from seethrough_core.upscale_run import Upscale, UpscaleRunner  # noqa: E402

FRAMES = {"1080p": (1920, 1080), "4K": (3840, 2160), "8K": (7680, 4320)}
DOG = 2  # the box that moves


def generate(client, layout, out: Path, steps: int, edit=None, parent=None, region=None):
    rendered = render_layout(layout, out.with_suffix(""), quiet=True)
    settings = GenerationSettings.for_layout(layout, seed=1, steps=steps)
    request = GenerateRequest.for_settings(
        settings, rendered.oscr_path.read_bytes(), rendered.masks.token_grids(), edit=edit
    )
    return generate_and_save(client, request, layout, Destination(out, {}, parent=parent, region=region))


def upscale(client, plan, frame, saved, out: Path, steps: int, reuse=None) -> tuple[float, UpscaleRunner]:
    job = Upscale(plan, frame, saved.result.image, saved.record, out, steps, 3.5, {}, reuse)
    views = TileViews()
    runner = UpscaleRunner(job, [client], views.view, render_views=views.shared)
    start = time.perf_counter()
    runner.run()
    return time.perf_counter() - start, runner


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=int, default=4, help="divide every frame side by this (4)")
    parser.add_argument("--frame", default="4K", choices=sorted(FRAMES))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    size = (FRAMES[args.frame][0] // args.scale, FRAMES[args.frame][1] // args.scale)
    frame = frame_layout_at(load_layout(REPO / "assets/examples/street.json"), size)
    plan = plan_upscale(*size, seed=1, base_megapixels=1.0 / args.scale**2)
    moved = list(frame.boxes)
    x, y, z = moved[DOG].center
    moved[DOG] = replace(moved[DOG], center=(x, y + 0.3, z))
    edited_frame = replace(frame, boxes=tuple(moved))
    with tempfile.TemporaryDirectory() as tmp, ServerProcess.tiny(Path(tmp) / "server.log") as server:
        out = Path(tmp)
        with SeeThroughClient(server.endpoint, 120.0) as client:
            base = generate(client, base_layout(frame, plan), out / "base.png", args.steps)
            upscale(client, plan, frame, base, out / "frame.png", args.steps)
            previous_base, previous_frame = read_previous(out / "base.png"), read_previous(out / "frame.png")
            edit = plan_edit(
                previous_base, base_layout(edited_frame, plan), margin_px=max(4, 24 // args.scale)
            )
            new_base = generate(
                client, base_layout(edited_frame, plan), out / "edited_base.png", args.steps,
                edit=edit.edit, parent=edit.parent, region=edit.region_mask,
            )  # fmt: skip
            every_s, every = upscale(client, plan, edited_frame, new_base, out / "every.png", args.steps)
            reuse = frame_reuse(
                previous_frame, previous_base.image, new_base.result.image, plan=plan,
                frame_layout=edited_frame, steps=args.steps, guidance=3.5, region=edit.region_mask,
            )  # fmt: skip
            reach_s, reached = upscale(
                client, plan, edited_frame, new_base, out / "reach.png", args.steps, reuse
            )
            kept = (read_previous(out / "reach.png").image == previous_frame.image).all(axis=2).mean()
    rows = [
        {"mode": "every tile refined again", "tiles": len(every.generated), "seconds": round(every_s, 2)},
        {
            "mode": "only the tiles the change reaches",
            "tiles": len(reached.generated),
            "seconds": round(reach_s, 2),
        },
    ]
    report = {
        "frame": args.frame, "size": list(size), "scale": args.scale, "steps": args.steps,
        "tiles": len(plan.tiles), "changed_base_share": round(float(edit.change.region.mean()), 4),
        "frame_pixels_kept_exactly": round(float(kept), 4), "rows": rows,
        "speedup": round(every_s / reach_s, 2),
    }  # fmt: skip
    where = f"{size[0]}x{size[1]}, {len(plan.tiles)} tiles"
    print(f"{args.frame} frame at 1/{args.scale} ({where}), the dog moved 30 cm\n")
    print("| upscale of the edited base | tiles refined | seconds |\n|---|---|---|")
    for row in rows:
        print(f"| {row['mode']} | {row['tiles']} | {row['seconds']:.1f} |")
    print(f"\n{kept:.1%} of the frame's pixels are the previous frame's exactly; {report['speedup']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
