"""`seethrough batch INPUTS... --out DIR`: every shot of many layouts, resumable and pipelined."""

from __future__ import annotations

import argparse
import signal
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from seethrough_core.edit_region import check_margin
from seethrough_core.endpoint import DEFAULT_ENDPOINT, EndpointError, parse_endpoint
from seethrough_core.generation_settings import SettingError, check_guidance, check_steps
from seethrough_core.keys import ClientKeys, KeyFileError
from seethrough_core.limits import (
    DEFAULT_BATCH_TIMEOUT_S,
    DEFAULT_EDIT_MARGIN_PX,
    DEFAULT_GUIDANCE,
    DEFAULT_REPROJECT_LIMIT,
    DEFAULT_SERVER_RETRY_S,
    DEFAULT_STEPS,
)
from seethrough_core.reprojection import check_reproject_limit
from seethrough_core.server_process import LocalServerError, ServerProcess

from .batch.inputs import (
    CameraChoice,
    InputError,
    check_output_folder,
    expand_inputs,
    parse_frames,
    parse_seeds,
    stills,
)
from .batch.plan import output_names
from .frame_options import add_frame_arguments, check_frame_arguments
from .render_options import add_engine_argument, add_size_arguments, size_from_args

if TYPE_CHECKING:  # the runner loads Blender
    from .batch.runner import BatchOptions


def add_batch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help=".blend or layout .json files, folders (searched for both) or globs; a result .png saved by "
        "SeeThrough, named or globbed, gives the layout in its record",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    add_servers_arguments(p, "jobs")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", help="comma-separated seeds, e.g. 1,2,3 (default 42)")
    seeds.add_argument("--num-seeds", type=int, metavar="N", help="N seeds: 42, 43, ... (default: --seeds)")
    p.add_argument(
        "--cameras", default="active", help="active (default), all, or camera names separated by commas"
    )
    p.add_argument("--frames", help="frames of a .blend, e.g. 1-24 or 1,5,9 (default: its current frame)")
    p.add_argument(
        "--consistent",
        action="store_true",
        help="with --frames: each frame after the first is an edit of the previous frame's picture, "
        "regenerating only what moved (docs/batch.md)",
    )
    p.add_argument(
        "--margin",
        type=int,
        default=DEFAULT_EDIT_MARGIN_PX,
        metavar="PX",
        help=f"with --consistent: grow each frame's region of change by PX pixels ({DEFAULT_EDIT_MARGIN_PX})",
    )
    p.add_argument(
        "--reproject-limit",
        type=float,
        default=DEFAULT_REPROJECT_LIMIT,
        metavar="SHARE",
        help="with --consistent: a camera move is the previous picture reprojected, regenerating only what "
        "it reveals and the boxes, unless that is more than SHARE of the picture (0..1; 0: off; "
        f"default {DEFAULT_REPROJECT_LIMIT})",
    )
    add_engine_argument(p)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"denoising steps ({DEFAULT_STEPS})")
    p.add_argument(
        "--guidance", type=float, default=DEFAULT_GUIDANCE, help=f"FLUX guidance ({DEFAULT_GUIDANCE})"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_BATCH_TIMEOUT_S,
        help=f"seconds of silence before a server counts as gone (default {DEFAULT_BATCH_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--retry-for",
        type=float,
        default=DEFAULT_SERVER_RETRY_S,
        metavar="S",
        help="how long a server that went away is tried again (with growing pauses) before the images "
        f"left for it fail (default {DEFAULT_SERVER_RETRY_S:g})",
    )
    p.add_argument("--overwrite", action="store_true", help="regenerate images that already exist")
    add_size_arguments(p)
    add_frame_arguments(p)


def add_servers_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """--server (repeatable), --tiny and the CURVE key files: `batch` and `upscale` use servers alike."""
    p.add_argument(
        "--server",
        action="append",
        metavar="ENDPOINT",
        help=f"a server to send {what} to; repeat it to use several GPUs (default {DEFAULT_ENDPOINT})",
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help="start an embedded server with the tiny random-weight model (images are noise; for testing)",
    )
    p.add_argument(
        "--server-public-key",
        metavar="FILE",
        help="CURVE: the server's public key file (NAME.key), for servers started with --server-key "
        "(default: no CURVE)",
    )
    p.add_argument(
        "--client-key",
        metavar="FILE_SECRET",
        help="CURVE: this machine's secret key file (NAME.key_secret); its NAME.key must be in the "
        "server's --client-keys folder (default: no CURVE)",
    )


def run_batch(args: argparse.Namespace) -> int:
    # Blender is loaded only now: `seethrough --help` and argument errors stay instant.
    from .batch.runner import BatchOptions

    try:
        inputs = expand_inputs(args.inputs)
        options = BatchOptions(
            out_dir=args.out,
            servers=list(args.server or []),
            seeds=parse_seeds(args.seeds, args.num_seeds),
            cameras=CameraChoice.parse(args.cameras),
            frames=parse_frames(args.frames),
            engine=args.engine,
            steps=args.steps,
            guidance=args.guidance,
            overwrite=args.overwrite,
            timeout_s=args.timeout,
            retry_s=args.retry_for,
            keys=_client_keys(args.server_public_key, args.client_key),
            consistent=args.consistent,
            margin_px=args.margin,
            reproject_limit=args.reproject_limit,
            size=size_from_args(args),
            base_megapixels=args.base_megapixels,
            upscale_strength=args.upscale_strength,
        )
        if args.consistent and args.frames is None:
            raise InputError("--consistent needs --frames: it makes each frame an edit of the one before")
        check_margin(args.margin)
        check_reproject_limit(args.reproject_limit)
        if not args.timeout > 0 or not args.retry_for >= 0:
            raise InputError("--timeout must be more than 0 seconds and --retry-for at least 0")
        # A typo in an address or a setting out of range fails here, before Blender renders anything.
        options.servers = [parse_endpoint(server).url for server in options.servers]
        check_steps(options.steps)
        check_guidance(options.guidance)
        check_frame_arguments(args)
    except SettingError as exc:
        print(f"error: --{exc.field}: {exc.message}", file=sys.stderr)
        return 2
    except (InputError, EndpointError, KeyFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.tiny and options.servers:
        print("error: give --tiny or --server, not both", file=sys.stderr)
        return 2
    if options.frames is not None:
        for path in stills(inputs):
            print(
                f"note: --frames is ignored for {path}: a layout file is a still (frame 1)", file=sys.stderr
            )
    try:
        check_output_folder(args.out)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # SIGTERM (a job scheduler, `kill`) stops the batch as Ctrl-C does: jobs cancelled, summary printed.
    previous_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return _run(args, options, inputs)
    except KeyboardInterrupt:  # before the runner started (the embedded server was coming up)
        print("interrupted before any image was generated", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)


def _run(args: argparse.Namespace, options: BatchOptions, inputs: list[Path]) -> int:
    from .batch.report import contact_sheets, summary_table
    from .batch.runner import BatchRunner

    with ExitStack() as stack:
        if args.tiny:
            print(
                "Starting an embedded server with the tiny random-weight model (images will be noise) ...",
                file=sys.stderr,
                flush=True,
            )
            server = ServerProcess.tiny(args.out / "logs" / "tiny_server.log")
            try:
                stack.enter_context(server)
            except LocalServerError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            options.servers = [server.endpoint]
        elif not options.servers:
            options.servers = [DEFAULT_ENDPOINT]
        print(
            f"{len(inputs)} input(s), seeds {options.seeds}, servers {', '.join(options.servers)}",
            file=sys.stderr,
            flush=True,
        )
        summary = BatchRunner(options).run(inputs)
    sheets, sheet_problems = contact_sheets(summary, output_names(inputs), args.out)
    print(summary_table(summary, inputs))
    for sheet in sheets:
        print(f"contact sheet: {sheet}")
    for problem in sheet_problems:
        print(f"contact sheet NOT written: {problem}")
    if summary.interrupted:
        return 130
    return 0 if summary.ok and not sheet_problems else 1


def _client_keys(server_public_key: str | None, client_key: str | None) -> ClientKeys | None:
    """CURVE keys from the two options, which go together."""
    if server_public_key is None and client_key is None:
        return None
    if server_public_key is None or client_key is None:
        raise KeyFileError(
            "CURVE needs both --server-public-key (the server's NAME.key) and --client-key "
            "(this machine's NAME.key_secret)"
        )
    return ClientKeys.from_files(server_public_key, client_key)
