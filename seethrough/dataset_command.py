"""`seethrough dataset make|stats`: a synthetic occlusion dataset from your own assets (docs/dataset.md)."""

from __future__ import annotations

import argparse
import sys

from seethrough_core.dataset_scenes import SceneSettings
from seethrough_core.limits import DEFAULT_SIDE

from .dataset.make_settings import DEFAULT_SAMPLES, DEFAULT_SEED
from .options import add_engine_argument


def _span(values: tuple[float, float]) -> str:
    low, high = values
    return f"{low:g}-{high:g}"


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dataset_command", required=True)
    defaults = SceneSettings()
    make = sub.add_parser("make", help="render a dataset of occluding scenes from assets")
    make.add_argument(
        "--assets",
        nargs="+",
        metavar="PATH",
        default=[],
        help=".blend/.glb/.gltf/.obj/.fbx/.usd files or folders (searched recursively); default none: "
        "give --assets, --primitives or both",
    )
    make.add_argument("--primitives", action="store_true", help="add the built-in simple shapes as assets")
    make.add_argument("--out", required=True, help="the dataset folder (created; a rerun continues it)")
    make.add_argument("--scenes", type=int, required=True, metavar="N", help="samples to make in all")
    make.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"scene i uses seed S + i ({DEFAULT_SEED})"
    )
    make.add_argument(
        "--objects",
        default=_span(defaults.objects),
        metavar="LOW-HIGH",
        help=f"objects per scene ({_span(defaults.objects)})",
    )
    make.add_argument(
        "--resolution",
        type=int,
        default=DEFAULT_SIDE,
        metavar="PX",
        help=f"square image side, a multiple of 16 ({DEFAULT_SIDE})",
    )
    make.add_argument(
        "--min-visibility",
        type=float,
        default=defaults.min_visibility,
        metavar="V",
        help=f"every object shows more than this share of itself ({defaults.min_visibility})",
    )
    make.add_argument(
        "--max-min-visibility",
        type=float,
        default=defaults.max_min_visibility,
        metavar="V",
        help=f"some object shows less than this share: real occlusion ({defaults.max_min_visibility})",
    )
    for flag, values, meaning in (
        ("--box-size", defaults.box_size, "largest side of each 2D box, share of the image side"),
        ("--elevation", defaults.elevation_deg, "camera elevation, degrees"),
        ("--distance", defaults.distance_m, "camera distance from the scene centre, metres"),
        ("--lens", defaults.lens_mm, "focal length on a 36 mm sensor, mm"),
    ):
        make.add_argument(
            flag, default=_span(values), metavar="LOW-HIGH", help=f"{meaning} ({_span(values)})"
        )
    make.add_argument(
        "--scene-prompt",
        default=defaults.scene_prompt,
        help="text after the descriptions in every prompt (default: none)",
    )
    make.add_argument(
        "--max-tries",
        type=int,
        default=defaults.max_tries,
        metavar="N",
        help=f"scenes drawn per sample before the filters count as impossible ({defaults.max_tries})",
    )
    add_engine_argument(make)
    make.add_argument(
        "--samples",
        type=int,
        default=DEFAULT_SAMPLES,
        help=f"Cycles samples of the target image ({DEFAULT_SAMPLES})",
    )
    make.add_argument("--workers", type=int, default=1, metavar="K", help="background Blender processes (1)")
    stats = sub.add_parser("stats", help="plots and a table of a dataset's statistics")
    stats.add_argument("dir", help="a dataset folder (with metadata.jsonl)")


def run_dataset(args: argparse.Namespace) -> int:
    if args.dataset_command == "make":
        return _run_make(args)
    return _run_stats(args)


def _run_make(args: argparse.Namespace) -> int:
    from .dataset.make_settings import MakeSettingsError, settings_from_args
    from .dataset.maker import DatasetMakeError, make_dataset

    try:
        settings = settings_from_args(args)
    except MakeSettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        summary = make_dataset(settings)
    except DatasetMakeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    made = f"made {summary.made} sample(s), {summary.skipped} already there"
    if summary.rejections:
        made += "; rejected scenes: " + ", ".join(f"{k} {v}" for k, v in summary.rejections.most_common())
    print(made)
    if summary.made:
        total = sum(summary.timings.values())
        shares = ", ".join(f"{k[:-2]} {v / total:.0%}" for k, v in summary.timings.items())
        print(f"render time per sample {total / summary.made:.1f} s ({shares})")
    for sid, error in summary.failed.items():
        print(f"failed {sid}: {error}", file=sys.stderr)
    if summary.interrupted:
        print("interrupted: finished samples are kept; rerun the same command to continue", file=sys.stderr)
        return 130
    return 1 if summary.failed else 0


def _run_stats(args: argparse.Namespace) -> int:
    from pathlib import Path

    from seethrough_core.dataset_format import DatasetError, read_samples
    from seethrough_core.dataset_stats import dataset_stats

    from .dataset.stats_plots import write_stats

    root = Path(args.dir)
    try:
        samples = read_samples(root)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not samples:
        print(f"error: {root} has no samples yet", file=sys.stderr)
        return 2
    stats = dataset_stats(samples)
    written = write_stats(stats, root)
    print(stats.table(), end="")
    print(f"wrote {len(written)} plots to {written[0].parent}")
    return 0
