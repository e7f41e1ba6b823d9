"""Command-line options that several commands share, declared once (their choices and defaults come
from seethrough_core.vocabulary and limits, as the server and the add-on read them)."""

from __future__ import annotations

import argparse

from seethrough_core.vocabulary import DEFAULT_RENDER_ENGINE, RENDER_ENGINES


def add_engine_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--engine",
        default=DEFAULT_RENDER_ENGINE,
        choices=RENDER_ENGINES,
        help=f"OSCR render engine (default {DEFAULT_RENDER_ENGINE}, the profile's)",
    )
