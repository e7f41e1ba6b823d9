"""Camera moves with and without reprojection: `python benchmarks/reprojection_bench.py [--frames 24]`.

Two animated shots, a pan (the camera turns 1 degree a frame) and a dolly (it moves 10 cm a frame along
its view axis) over a street with a car and a woman, each run through `seethrough batch --consistent`
twice on one tiny server: with reprojection (the default limit) and without (`--reproject-limit 0`,
every camera move a full generation, as before reprojection). Printed per shot and mode:

- the share of pixels generated per frame after the first (mean, max; 100% for a full generation);
- the temporal change of the static background: the mean absolute difference (8-bit levels) between
  each frame and the previous frame warped into its camera (the layout's exact reprojection, so the
  camera motion is compensated), over the floor and sky seen in both frames away from the boxes;
- how much fine detail the last frame keeps (mean absolute Laplacian against the first frame's);
- the drift from the first frame: the mean absolute difference between the last frame and the first
  frame resampled once into the last camera, over the pixels the first frame generated and no later
  frame regenerated (their source, rebuilt from the saved frames: seethrough_core.pixel_sources).
  Resampled frame after frame, those pixels soften and drift from what was generated; sampled once
  from their source, they stay it.

`--analyse DIR` measures frames already made (a folder holding `pan/Camera`, `dolly/Camera`), e.g. by
an earlier version, so two versions can be compared side by side; with `--before DIR --figure PNG` it
also draws the pan's last frame from both beside the first frame warped once into its camera
(docs/images/pixel_sources.png).

With the tiny random-weight model the pictures are noise: the shares are the geometry's own and exact,
and a kept pixel's change is what reprojection does to it; what random weights cannot show is how a
real model's regenerated strips and boxes blend in, or how much real full generations flicker (the
tiny model draws the same noise for the same seed wherever the camera is).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

import numpy as np  # noqa: E402  (after the path fix-up above)

from seethrough_core.edit_region import dilate  # noqa: E402
from seethrough_core.generate_and_save import region_path_for  # noqa: E402
from seethrough_core.layout import Layout, load_layout  # noqa: E402
from seethrough_core.limits import DEFAULT_REPROJECT_LIMIT  # noqa: E402
from seethrough_core.pixel_sources import ShotFrame, replay_sources  # noqa: E402
from seethrough_core.record import GenerationRecord  # noqa: E402
from seethrough_core.reprojection import reproject  # noqa: E402

MARGIN = 8  # px at 256 px; the batch's default is 24 at 1024 px
SHOTS = ("pan", "dolly")


def write_shot(path: Path, shot: str, frames: int, side: int) -> None:
    """A street with a car and a woman; the camera pans 1 degree a frame or dollies 10 cm a frame."""
    import bpy

    from blender_addon.scene_io import layout_to_scene

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    data = load_layout(REPO / "assets/examples/street.json").to_dict()
    data["resolution"] = [side, side]
    data["camera"].update(location=[0.0, 0.0, 1.6], rotation_euler_deg=[80.0, 0.0, 0.0], lens_mm=35.0)
    car, woman = data["boxes"][:2]
    car.update(center=[2.5, 14.0, 0.75], rotation_euler_deg=[0.0, 0.0, 0.0])
    woman.update(center=[-1.5, 9.0, woman["size"][2] / 2])
    data["boxes"] = [car, woman]
    layout_to_scene(Layout.from_dict(data), scene)
    camera = scene.camera
    camera.keyframe_insert("rotation_euler", frame=1)
    camera.keyframe_insert("location", frame=1)
    if shot == "pan":
        camera.rotation_euler.z -= math.radians(frames - 1)
        camera.keyframe_insert("rotation_euler", frame=frames)
    else:
        from mathutils import Vector

        forward = camera.rotation_euler.to_matrix() @ Vector((0.0, 0.0, -1.0))  # the view axis
        camera.location += forward * 0.1 * (frames - 1)
        camera.keyframe_insert("location", frame=frames)
    for fcurve in camera.animation_data.action.fcurves:  # a steady move: the same step every frame
        for key in fcurve.keyframe_points:
            key.interpolation = "LINEAR"
    scene.frame_set(1)
    bpy.ops.wm.save_as_mainfile(filepath=str(path))


def frames_of(folder: Path, count: int) -> tuple[list[np.ndarray], list[GenerationRecord]]:
    from PIL import Image

    images, records = [], []
    for frame in range(1, count + 1):
        with Image.open(folder / f"{frame:04d}_1.png") as image:
            images.append(np.asarray(image.convert("RGB")))
        records.append(GenerationRecord.from_dict(json.loads((folder / f"{frame:04d}_1.json").read_text())))
    return images, records


def generated_share(record: GenerationRecord) -> float:
    parent = record.parent or {}
    return 1.0 - parent["kept"] if parent.get("kind") == "reprojected" else 1.0


def background_change(images: list[np.ndarray], layouts: list[Layout]) -> float:
    """Mean absolute change of the static background between consecutive frames, camera compensated."""
    changes = []
    for k in range(1, len(images)):
        warped = reproject(images[k - 1], layouts[k - 1], layouts[k], 0)
        background = warped.seen & ~dilate(warped.untrusted, MARGIN)
        diff = np.abs(images[k].astype(np.int16) - warped.image.astype(np.int16))
        changes.append(float(diff[background].mean()))
    return float(np.mean(changes))


def drift_from_first(folder: Path, images: list[np.ndarray], records: list[GenerationRecord]) -> float:
    """Mean |last frame - first frame resampled once into it| where the first frame is the source."""
    frames = shot_frames(folder, records)
    sources = replay_sources(frames)
    if "0001_1.png" not in sources.labels:
        return float("nan")
    once = reproject(images[0], frames[0].layout, frames[-1].layout, 0)
    from_first = (sources.index == sources.labels.index("0001_1.png")) & once.seen
    diff = np.abs(images[-1].astype(np.int16) - once.image.astype(np.int16))
    return float(diff[from_first].mean())


FIGURE_CROP, FIGURE_ZOOM = 64, 4  # px of the frame, and how much each is enlarged


def write_figure(now: Path, before: Path, frames: int, path: Path) -> None:
    """The pan's last frame, now and before, beside the first frame warped once into its camera, over
    a square the first frame generated, enlarged so single pixels show."""
    from PIL import Image, ImageDraw

    images, records = frames_of(now, frames)
    old_images, _ = frames_of(before, frames)
    first, last = (Layout.from_dict(records[k].layout) for k in (0, -1))
    once = reproject(images[0], first, last, 0)
    sources = replay_sources(shot_frames(now, records))
    from_first = (sources.index == sources.labels.index("0001_1.png")) & once.seen
    size = FIGURE_CROP
    # the square nearest the middle that the first frame generated whole
    corners = [
        (y, x)
        for y in range(0, from_first.shape[0] - size + 1, 8)
        for x in range(0, from_first.shape[1] - size + 1, 8)
        if from_first[y : y + size, x : x + size].all()
    ]
    middle = np.array(from_first.shape) / 2 - size / 2
    y, x = min(corners, key=lambda c: float(np.hypot(*(np.array(c) - middle))))
    panels = [
        ("frame 1, warped once", once.image),
        ("frame 24, resampled at each frame", old_images[-1]),
        ("frame 24, sampled from frame 1", images[-1]),
    ]
    side, gap, label = size * FIGURE_ZOOM, 12, 22
    figure = Image.new("RGB", (3 * side + 4 * gap, side + label + 2 * gap), "white")
    draw = ImageDraw.Draw(figure)
    for i, (title, image) in enumerate(panels):
        crop = Image.fromarray(image[y : y + size, x : x + size]).resize((side, side), Image.NEAREST)
        left = gap + i * (side + gap)
        figure.paste(crop, (left, gap + label))
        draw.text((left, gap), title, fill="black")
    figure.save(path)


def shot_frames(folder: Path, records: list[GenerationRecord]) -> list[ShotFrame]:
    """The saved frames of a shot as pixel_sources.replay_sources reads them."""
    from PIL import Image

    frames = []
    for k, record in enumerate(records, start=1):
        region = region_path_for(folder / f"{k:04d}_1.png")
        generated = None
        if region.is_file():
            with Image.open(region) as mask:
                generated = np.asarray(mask.convert("L")) > 0
        kind = (record.parent or {}).get("kind")
        frames.append(ShotFrame(f"{k:04d}_1.png", Layout.from_dict(record.layout), kind, generated))
    return frames


def measure(folder: Path, shot: str, mode: str, frames: int) -> dict:
    images, records = frames_of(folder, frames)
    layouts = [Layout.from_dict(r.layout) for r in records]
    shares = [generated_share(r) for r in records[1:]]
    return {
        "shot": shot,
        "mode": mode,
        "generated_mean": float(np.mean(shares)),
        "generated_max": float(np.max(shares)),
        "full_frames": sum(s == 1.0 for s in shares),
        "background_change": background_change(images, layouts),
        "detail_kept": detail(images[-1]) / detail(images[0]),
        "drift_from_first": drift_from_first(folder, images, records),
    }


def detail(image: np.ndarray) -> float:
    grey = image.astype(np.float64).mean(axis=2)
    laplacian = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    return float(np.abs(laplacian).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--engine", default="eevee", choices=["cycles", "eevee"])
    parser.add_argument("--out", type=Path, help="keep the frames here (default: a temporary folder)")
    parser.add_argument("--shots", default=",".join(SHOTS), help="which shots: pan,dolly")
    parser.add_argument("--modes", default="reprojection,full", help="with reprojection, full generations")
    parser.add_argument("--analyse", type=Path, help="only measure the frames already in this folder")
    parser.add_argument("--label", default="", help="with --analyse: the mode's name in the table")
    parser.add_argument("--before", type=Path, help="with --analyse: frames of an earlier version")
    parser.add_argument("--figure", type=Path, help="with --analyse and --before: write the pan figure")
    args = parser.parse_args()
    shots = [shot for shot in SHOTS if shot in args.shots.split(",")]
    if args.analyse is not None:
        label = args.label or str(args.analyse)
        print_table([measure(args.analyse / s / "Camera", s, label, args.frames) for s in shots], args)
        if args.figure is not None and args.before is not None:
            now, before = (folder / "pan" / "Camera" for folder in (args.analyse, args.before))
            write_figure(now, before, args.frames, args.figure)
        return 0

    from seethrough.batch.inputs import expand_inputs
    from seethrough.batch.runner import BatchOptions, BatchRunner
    from seethrough_core.server_process import ServerProcess

    work = args.out or Path(tempfile.mkdtemp(prefix="reprojection_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    for shot in shots:
        write_shot(work / f"{shot}.blend", shot, args.frames, args.size)
    modes = {"reprojection": DEFAULT_REPROJECT_LIMIT, "full generations": 0.0}
    modes = {mode: limit for mode, limit in modes.items() if mode.split()[0] in args.modes.split(",")}
    results = []
    with ServerProcess.tiny(work / "server.log") as server:
        for mode, limit in modes.items():
            options = BatchOptions(
                out_dir=work / mode.replace(" ", "_"), servers=[server.endpoint], seeds=[1],
                frames=list(range(1, args.frames + 1)), engine=args.engine, steps=args.steps,
                consistent=True, margin_px=MARGIN, reproject_limit=limit,
            )  # fmt: skip
            inputs = expand_inputs([str(work / f"{shot}.blend") for shot in shots])
            summary = BatchRunner(options, sys.stderr).run(inputs)
            if not summary.ok:
                print(f"the batch failed ({mode}): see {work}", file=sys.stderr)
                return 1
            for shot in shots:
                results.append(measure(options.out_dir / shot / "Camera", shot, mode, args.frames))
    print_table(results, args)
    (work / "reprojection_bench.json").write_text(json.dumps(results, indent=2))
    return 0


def print_table(results: list[dict], args: argparse.Namespace) -> None:
    print(
        f"{args.frames} frames at {args.size} px, tiny random-weight model, {args.steps} steps, "
        f"margin {MARGIN} px, reprojection limit {DEFAULT_REPROJECT_LIMIT}\n"
    )
    print("| shot | mode | pixels generated per frame (mean / max) | full generations | "
          "background change (levels) | detail kept at the last frame | "
          "drift from the first frame (levels) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in results:
        generated = f"{r['generated_mean']:.1%} / {r['generated_max']:.1%}"
        full = f"{r['full_frames']} of {args.frames - 1}"
        print(
            f"| {r['shot']} | {r['mode']} | {generated} | {full} | {r['background_change']:.2f} | "
            f"{r['detail_kept']:.2f} | {r['drift_from_first']:.2f} |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
