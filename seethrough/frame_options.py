"""The options of a frame at a size the model does not take (docs/upscale.md), shared by `batch` and
`edit`: a base picture near --base-megapixels, then tiles refined at --upscale-strength."""

from __future__ import annotations

import argparse

from seethrough_core.generation_settings import SettingError, check_base_megapixels, check_strength
from seethrough_core.limits import DEFAULT_BASE_MEGAPIXELS, DEFAULT_UPSCALE_STRENGTH


def add_frame_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("frames of any size (docs/upscale.md)")
    group.add_argument(
        "--base-megapixels",
        type=float,
        default=DEFAULT_BASE_MEGAPIXELS,
        metavar="MP",
        help="a layout whose resolution the model does not take is generated near this size, then "
        f"upscaled to it in tiles of this size ({DEFAULT_BASE_MEGAPIXELS:g} = 1024 x 1024)",
    )
    group.add_argument(
        "--upscale-strength",
        type=float,
        default=DEFAULT_UPSCALE_STRENGTH,
        metavar="S",
        help=f"in (0, 1]: how much each tile may change the enlarged base ({DEFAULT_UPSCALE_STRENGTH})",
    )


def check_frame_arguments(args: argparse.Namespace) -> None:
    """SettingError naming the option (base-megapixels, upscale-strength) out of its range."""
    try:
        check_base_megapixels(args.base_megapixels)
        check_strength(args.upscale_strength, "upscale-strength")
    except SettingError as exc:
        raise SettingError(exc.field.replace("_", "-"), exc.message) from None
