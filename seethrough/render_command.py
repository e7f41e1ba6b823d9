"""`seethrough render LAYOUT --out DIR`: a layout's OSCR image and box masks, rendered with Blender."""

from __future__ import annotations

import argparse

from seethrough_core.oscr_spec import DEFAULT_PROFILE, PROFILES

from .options import add_engine_argument


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("layout", help="a layout .json file or a .blend authored with the add-on")
    parser.add_argument("--out", required=True, help="output folder")
    add_engine_argument(parser)
    parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES))


def run_render(args: argparse.Namespace) -> int:
    # The add-on's background render runs the same code, so both print the same report.
    from blender_addon.render_process import render_file  # loads Blender

    return render_file(args.layout, args.out, engine=args.engine, profile=args.profile)
