"""`seethrough batch INPUTS... --out DIR`: every shot of many layouts, resumable and pipelined."""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path

from seethrough_core.edit_region import check_margin
from seethrough_core.endpoint import DEFAULT_ENDPOINT, EndpointError, parse_endpoint
from seethrough_core.generation_settings import SettingError, check_guidance, check_steps
from seethrough_core.keys import ClientKeys, KeyFileError
from seethrough_core.limits import DEFAULT_EDIT_MARGIN_PX, DEFAULT_GUIDANCE, DEFAULT_STEPS
from seethrough_core.server_process import LocalServerError, ServerProcess
from seethrough_core.vocabulary import DEFAULT_SEED

from .batch.inputs import CameraChoice, InputError, expand_inputs, parse_frames, parse_seeds
from .batch.plan import output_names
from .options import add_engine_argument


def add_batch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "inputs", nargs="+", metavar="INPUT", help=".blend or layout .json files, folders or globs"
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--server",
        action="append",
        metavar="ENDPOINT",
        help=f"a server to send jobs to; repeat it to use several GPUs (default {DEFAULT_ENDPOINT})",
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help="start an embedded server with the tiny random-weight model (images are noise; for testing)",
    )
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", help=f"comma-separated seeds, e.g. 1,2,3 (default {DEFAULT_SEED})")
    seeds.add_argument(
        "--num-seeds", type=int, metavar="N", help=f"N seeds: {DEFAULT_SEED}, {DEFAULT_SEED + 1}, ..."
    )
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
    add_engine_argument(p)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"denoising steps ({DEFAULT_STEPS})")
    p.add_argument(
        "--guidance", type=float, default=DEFAULT_GUIDANCE, help=f"FLUX guidance ({DEFAULT_GUIDANCE})"
    )
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds of silence before a server counts as gone"
    )
    p.add_argument("--overwrite", action="store_true", help="regenerate images that already exist")
    p.add_argument(
        "--server-public-key",
        metavar="FILE",
        help="CURVE: the server's public key file (NAME.key), for servers started with --server-key",
    )
    p.add_argument(
        "--client-key",
        metavar="FILE_SECRET",
        help="CURVE: this machine's secret key file (NAME.key_secret); its NAME.key must be in the "
        "server's --client-keys folder",
    )


def run_batch(args: argparse.Namespace) -> int:
    # Blender is loaded only now: `seethrough --help` and argument errors stay instant.
    from .batch.report import contact_sheets, summary_table
    from .batch.runner import BatchOptions, BatchRunner

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
            keys=_client_keys(args.server_public_key, args.client_key),
            consistent=args.consistent,
            margin_px=args.margin,
        )
        if args.consistent and args.frames is None:
            raise InputError("--consistent needs --frames: it makes each frame an edit of the one before")
        check_margin(args.margin)
        # A typo in an address or a setting out of range fails here, before Blender renders anything.
        options.servers = [parse_endpoint(server).url for server in options.servers]
        check_steps(options.steps)
        check_guidance(options.guidance)
    except SettingError as exc:
        print(f"error: --{exc.field}: {exc.message}", file=sys.stderr)
        return 2
    except (InputError, EndpointError, KeyFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.tiny and options.servers:
        print("error: give --tiny or --server, not both", file=sys.stderr)
        return 2
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
    sheets = contact_sheets(summary, output_names(inputs), args.out)
    print(summary_table(summary, inputs))
    for sheet in sheets:
        print(f"contact sheet: {sheet}")
    if summary.interrupted:
        return 130
    return 0 if summary.ok else 1


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
