"""Options of the commands that render OSCR images: the engine (render, batch, edit, dataset make) and
the output size, `--resolution WxH` and `--percentage P` (render, batch, edit)."""

from __future__ import annotations

import argparse

from seethrough_core.output_size import (
    MAX_PERCENTAGE,
    MIN_PERCENTAGE,
    OutputSize,
    parse_percentage,
    parse_resolution,
)


def _argparse_type(parse):
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__.removeprefix("parse_")  # argparse names it in its error
    return convert


# The engines an OSCR image renders with from the command line (blender_addon/compat.py maps the names
# to Blender's engine ids).
OSCR_ENGINES = ("cycles", "eevee")


def add_engine_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        default=OSCR_ENGINES[0],
        choices=OSCR_ENGINES,
        help="Blender engine of the OSCR image: cycles as the checkpoint's training data, eevee faster "
        "on a GPU (default cycles)",
    )


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output size (as Blender's render settings)")
    group.add_argument(
        "--resolution",
        type=_argparse_type(parse_resolution),
        metavar="WxH",
        help="render and generate at this size instead of the layout's, e.g. 768x512; each side "
        "256..2048 and a multiple of 16 (default: the layout's or the .blend's resolution)",
    )
    group.add_argument(
        "--percentage",
        type=_argparse_type(parse_percentage),
        default=100,
        metavar="P",
        help=f"scale the size by P percent ({MIN_PERCENTAGE}..{MAX_PERCENTAGE}), e.g. 50 for a quick "
        "preview; each side is rounded to a multiple of 16 (default 100)",
    )


def size_from_args(args: argparse.Namespace) -> OutputSize:
    return OutputSize(args.resolution, args.percentage)
