"""`seethrough batch INPUTS... --out DIR`: every shot of many layouts, resumable and pipelined."""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path

from seethrough_core.edit_region import check_margin
from seethrough_core.endpoint import DEFAULT_ENDPOINT, EndpointError, parse_endpoint
from seethrough_core.errors import SeeThroughError
from seethrough_core.generation_settings import SettingError, check_guidance, check_steps
from seethrough_core.keys import ClientKeys, KeyFileError
from seethrough_core.limits import DEFAULT_EDIT_MARGIN_PX, DEFAULT_GUIDANCE, DEFAULT_STEPS
from seethrough_core.server_process import LocalServerError, ServerProcess

from .batch.inputs import CameraChoice, InputError, expand_inputs, parse_frames, parse_seeds
from .batch.plan import output_names
from .batch.ray_cluster import LOCAL, FarmError
from .batch.shards import Shard


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
    p.add_argument(
        "--serve-model",
        metavar="PATH_OR_HF_ID",
        help="start an embedded `seethrough serve --model PATH_OR_HF_ID` for this run (with --serve-lora); "
        "with --ray, the model each generation actor loads",
    )
    p.add_argument("--serve-lora", metavar="PATH", help="with --serve-model: the SeeThrough3D LoRA")
    p.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        metavar="ADDRESS",
        help="run on a Ray cluster (needs seethrough[farm]): auto, ray://HOST:10001 or HOST:6379; "
        "alone, a Ray started on this machine for the run. Renders are Ray tasks, generation runs on one "
        "actor per GPU loading --serve-model/--serve-lora or --tiny (docs/farm.md)",
    )
    p.add_argument(
        "--ray-cpu-actors",
        type=int,
        metavar="N",
        help="with --ray: N generation actors on CPUs instead of one per GPU (test clusters, --tiny)",
    )
    p.add_argument(
        "--shard",
        metavar="K/N",
        help="run only the K-th of N disjoint parts of the plan (farm managers run N tasks; docs/farm.md)",
    )
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", help="comma-separated seeds, e.g. 1,2,3 (default 42)")
    seeds.add_argument("--num-seeds", type=int, metavar="N", help="N seeds: 42, 43, ...")
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
    p.add_argument("--engine", default="cycles", choices=["cycles", "eevee"], help="OSCR render engine")
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
            shard=Shard.parse(args.shard) if args.shard is not None else None,
        )
        serve_argv = _serve_arguments(args)
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
    if serve_argv is not None and options.servers:
        print("error: give --tiny or --serve-model, or --server, not both", file=sys.stderr)
        return 2
    if args.ray is not None:
        try:
            summary = _run_on_ray(args, options, inputs, serve_argv)
        except FarmError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except SeeThroughError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if summary is None:
            return 130
    else:
        with ExitStack() as stack:
            if serve_argv is not None:
                what = (
                    "the tiny random-weight model (images will be noise)" if args.tiny else args.serve_model
                )
                print(f"Starting an embedded server with {what} ...", file=sys.stderr, flush=True)
                log_name = "tiny_server.log" if args.tiny else "server.log"
                server = ServerProcess.serving(args.out / "logs" / log_name, *serve_argv)
                try:
                    stack.enter_context(server)
                except LocalServerError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 1
                options.servers = [server.endpoint]
            elif not options.servers:
                options.servers = [DEFAULT_ENDPOINT]
            print(
                f"{len(inputs)} input(s), seeds {options.seeds}, servers {', '.join(options.servers)}"
                + (f", shard {options.shard}" if options.shard else ""),
                file=sys.stderr,
                flush=True,
            )
            summary = BatchRunner(options).run(inputs)
    print(summary_table(summary, inputs))
    if options.shard is None:
        for sheet in contact_sheets(summary, output_names(inputs), args.out):
            print(f"contact sheet: {sheet}")
    else:  # a shard sees only its part; the run without --shard at the end writes the sheets
        print(f"shard {options.shard}: contact sheets are written by a run without --shard")
    if summary.interrupted:
        return 130
    return 0 if summary.ok else 1


def _serve_arguments(args: argparse.Namespace) -> list[str] | None:
    """The `seethrough serve` options of the embedded server or the Ray actors; None: neither."""
    if args.ray is not None and args.ray != LOCAL and Path(args.ray).suffix.lower() in (".json", ".blend"):
        raise InputError(
            f"--ray took {args.ray!r} as its address: put --ray after the inputs or write --ray=ADDRESS"
        )
    if args.ray_cpu_actors is not None:
        if args.ray is None:
            raise InputError("--ray-cpu-actors goes with --ray")
        if args.ray_cpu_actors < 1:
            raise InputError(f"--ray-cpu-actors must be at least 1, got {args.ray_cpu_actors}")
    if args.ray is not None and (args.server_public_key or args.client_key):
        raise InputError("CURVE keys are for --server; a Ray cluster has its own security (docs/farm.md)")
    if args.serve_lora is not None and args.serve_model is None:
        raise InputError("--serve-lora goes with --serve-model")
    if args.tiny and args.serve_model is not None:
        raise InputError("give --tiny or --serve-model, not both")
    if args.serve_model is not None:
        if args.serve_lora is None:
            raise InputError("--serve-model needs --serve-lora: the SeeThrough3D LoRA the server loads")
        return ["--model", args.serve_model, "--lora", args.serve_lora]
    if args.tiny:
        return ["--tiny"]
    if args.ray is not None:
        raise InputError(
            "--ray needs the model its actors load: --serve-model PATH_OR_HF_ID --serve-lora PATH, or --tiny"
        )
    return None


def _run_on_ray(args: argparse.Namespace, options, inputs: list[Path], serve_argv: list[str]):
    """The batch on a Ray cluster (batch/ray_runner.py); None if Ctrl-C stopped it before the first job."""
    from .batch.ray_cluster import import_ray

    import_ray()  # without the farm extra: a message naming it, before anything else
    from .batch.ray_runner import run_on_ray

    return run_on_ray(args.ray, args.ray_cpu_actors, serve_argv, args.timeout, options, inputs)


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
