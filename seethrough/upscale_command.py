"""`seethrough upscale RESULT.png --to WxH --out DIR`: a saved picture made into a frame of any size.

Reads the picture and its record (layout, seed, steps), plans the tiles over the frame
(seethrough_core.upscale_plan), renders each tile's own OSCR view with Blender, and refines the enlarged
picture tile by tile on the servers (seethrough_core.upscale_run). Interrupted, it resumes from the
tiles kept in DIR/NAME_WxH.tiles/. Writes DIR/NAME_WxH.png with its record and NAME_WxH.json.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
from contextlib import ExitStack
from pathlib import Path

from seethrough_core.client import SeeThroughClient
from seethrough_core.edit_plan import PreviousPictureError
from seethrough_core.endpoint import EndpointError
from seethrough_core.errors import SeeThroughError
from seethrough_core.generate_and_save import upscaled_path_for
from seethrough_core.generation_settings import SettingError, check_guidance, check_steps
from seethrough_core.keys import KeyFileError
from seethrough_core.limits import DEFAULT_BASE_MEGAPIXELS, DEFAULT_UPSCALE_STRENGTH, MAX_FRAME_SIDE
from seethrough_core.server_away import ServerWait
from seethrough_core.server_process import LocalServerError
from seethrough_core.stop_signals import install_stop_handlers
from seethrough_core.upscale_plan import frame_layout_at, plan_upscale
from seethrough_core.upscale_run import TileProgress, Upscale, UpscaleRunner

from .options import (
    ClientOptionError,
    add_client_arguments,
    add_engine_argument,
    add_retry_argument,
    client_options,
    server_endpoints,
)
from .previous_picture import read_previous

_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_size(text: str) -> tuple[int, int]:
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: give the frame as WIDTHxHEIGHT, e.g. 3840x2160")
    return int(match.group(1)), int(match.group(2))


def add_upscale_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("result", type=Path, metavar="RESULT.png", help="a picture saved by SeeThrough")
    p.add_argument(
        "--to",
        required=True,
        type=parse_size,
        metavar="WxH",
        help=f"the frame's size, any up to {MAX_FRAME_SIDE} px a side, with the picture's aspect",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    add_client_arguments(p, several_servers=True)
    add_retry_argument(p, "the tiles left for it fail (the finished ones are kept for a rerun)")
    p.add_argument("--steps", type=int, help="denoising steps of each tile (default: the picture's)")
    p.add_argument("--guidance", type=float, help="FLUX guidance (default: the picture's)")
    p.add_argument(
        "--strength",
        type=float,
        default=DEFAULT_UPSCALE_STRENGTH,
        help=f"in (0, 1]: how much each tile may change the enlarged picture ({DEFAULT_UPSCALE_STRENGTH})",
    )
    p.add_argument(
        "--base-megapixels",
        type=float,
        default=DEFAULT_BASE_MEGAPIXELS,
        metavar="MP",
        help=f"the model's working size: tiles are this many megapixels ({DEFAULT_BASE_MEGAPIXELS:g} = "
        "1024 x 1024)",
    )
    add_engine_argument(p)


class _Printer:
    """One line per finished tile; the running tile's step on a line rewritten in place."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, event: TileProgress) -> None:
        with self._lock:
            where = f"tile {event.tile.index + 1}/{event.total} {event.tile.name}"
            if event.step is not None:
                print(f"\r{where}: step {event.step}/{event.steps}", end="", file=sys.stderr, flush=True)
            else:
                how = "generated" if event.generated else "kept from an earlier run"
                print(f"\r{where}: {how} ({event.done}/{event.total} done)", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        """A line of its own (a tile sent again)."""
        with self._lock:
            print(f"\r{text}", file=sys.stderr, flush=True)


def run_upscale(args: argparse.Namespace) -> int:
    try:
        previous = read_previous(args.result)
        record = previous.record
        steps = args.steps if args.steps is not None else record.steps
        guidance = args.guidance if args.guidance is not None else record.guidance
        check_steps(steps)
        check_guidance(guidance)
        width, height = args.to
        plan = plan_upscale(
            width,
            height,
            seed=record.seed,
            base_megapixels=args.base_megapixels,
            strength=args.strength,
            base_size=(record.width, record.height),
        )
        client_choice = client_options(args)
    except SettingError as exc:
        option = "to" if exc.field in ("width", "height") else exc.field.replace("_", "-")
        detail = f"{exc.field} {exc.message}" if option == "to" and exc.field != "to" else exc.message
        print(f"error: --{option}: {detail}", file=sys.stderr)
        return 2
    except (PreviousPictureError, EndpointError, KeyFileError, ClientOptionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Blender is loaded only now: `seethrough --help` and argument errors stay instant.
    from blender_addon.render import TileViews

    upscale = Upscale(
        plan=plan,
        frame_layout=frame_layout_at(previous.layout, (width, height)),
        base_image=previous.image,
        base_record=record,
        out_path=args.out / upscaled_path_for(args.result, (width, height)).name,
        steps=steps,
        guidance=guidance,
        source={"upscale_of": str(args.result)},
    )
    tiles = len(plan.tiles)
    print(
        f"{args.result.name} {record.width}x{record.height} -> {width}x{height}: "
        + (
            f"{tiles} tiles of {plan.tile_width}x{plan.tile_height}, strength {plan.strength:g}"
            if tiles
            else "no tiles needed (resampled)"
        ),
        file=sys.stderr,
        flush=True,
    )

    views = TileViews(args.engine)
    stop = threading.Event()
    with ExitStack() as stack:
        try:
            endpoints = stack.enter_context(server_endpoints(client_choice, args.out / "logs"))
            clients = [
                stack.enter_context(
                    SeeThroughClient(endpoint, client_choice.timeout_s, keys=client_choice.keys)
                )
                for endpoint in endpoints
            ]
            stack.callback(install_stop_handlers(stop.set))
            printer = _Printer()
            # a server that went away mid-tile: its tile goes to the other servers while it is asked again
            server_back = ServerWait(
                args.retry_for, client_choice.timeout_s, printer.note, "sending it tiles again"
            )
            runner = UpscaleRunner(
                upscale, clients, views.view, on_progress=printer, stop=stop, render_views=views.shared,
                on_note=printer.note, server_back=server_back,
            )  # fmt: skip
            saved = runner.run()
        except (LocalServerError, SeeThroughError) as exc:
            print(f"\nerror: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            saved = None
    if saved is None:
        print(
            f"\nstopped: the finished tiles are kept in {upscale.tiles_dir}; run the same command to resume",
            file=sys.stderr,
        )
        return 130
    print(saved.image_path)
    return 0
