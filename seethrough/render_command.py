"""`seethrough render LAYOUT --out DIR`: a layout's OSCR image and box masks, rendered with Blender."""

from __future__ import annotations

import argparse

from seethrough_core.oscr_spec import DEFAULT_PROFILE, PROFILES

from .options import add_engine_argument, add_size_arguments, size_from_args


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "layout",
        help="a layout .json file, a .blend authored with the add-on, or a result PNG saved by SeeThrough "
        "(the layout in its record)",
    )
    parser.add_argument("--out", required=True, help="output folder (required)")
    add_engine_argument(parser)
    parser.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        choices=sorted(PROFILES),
        help="the OSCR look (colours, lights, edges) a checkpoint was trained with; keep the default "
        f"for the released SeeThrough3D LoRA (default {DEFAULT_PROFILE})",
    )
    parser.add_argument(
        "--frame",
        type=int,
        metavar="N",
        help="a .blend's frame, boxes and camera as animated there (default: the file's current frame; "
        "a .json layout is a still and ignores it)",
    )
    parser.add_argument(
        "--camera",
        metavar="NAME",
        help="a .blend's camera by object name (default: the scene's active camera)",
    )
    add_size_arguments(parser)


def run_render(args: argparse.Namespace) -> int:
    # The add-on's background render runs the same code, so both print the same report.
    from blender_addon.render_process import render_file  # loads Blender

    return render_file(
        args.layout,
        args.out,
        engine=args.engine,
        profile=args.profile,
        size=size_from_args(args),
        frame=args.frame,
        camera=args.camera,
    )
