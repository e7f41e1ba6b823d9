"""`seethrough batch INPUTS... --out DIR`: every shot of many layouts, resumable and pipelined."""

from __future__ import annotations

import argparse
import signal
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from seethrough_core.edit_region import check_margin
from seethrough_core.endpoint import EndpointError
from seethrough_core.errors import SeeThroughError
from seethrough_core.generation_settings import SettingError, check_guidance, check_steps
from seethrough_core.keys import KeyFileError
from seethrough_core.limits import (
    DEFAULT_BASE_MEGAPIXELS,
    DEFAULT_EDIT_MARGIN_PX,
    DEFAULT_GUIDANCE,
    DEFAULT_REPROJECT_LIMIT,
    DEFAULT_STEPS,
    DEFAULT_UPSCALE_STRENGTH,
    DRAFT_SIDE,
    DRAFT_STEP_CACHE,
)
from seethrough_core.reprojection import check_reproject_limit
from seethrough_core.server_process import LocalServerError, ServerProcess
from seethrough_core.vocabulary import DEFAULT_SEED

from .batch.inputs import (
    CameraChoice,
    InputError,
    check_output_folder,
    expand_inputs,
    parse_frames,
    parse_seeds,
    stills,
)
from .batch.plan import DRAFT_FOLDER, output_names
from .batch.ray_cluster import LOCAL, FarmError
from .batch.shards import Shard
from .frame_options import add_frame_arguments, check_frame_arguments
from .options import (
    ClientOptionError,
    ClientOptions,
    add_client_arguments,
    add_engine_argument,
    add_retry_argument,
    add_size_arguments,
    client_options,
    server_endpoints,
    size_from_args,
)

if TYPE_CHECKING:  # the runner loads Blender
    from .batch.runner import BatchOptions, BatchPlan, BatchSummary


def add_batch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help=".blend or layout .json files, folders (searched for both) or globs; a result .png saved by "
        "SeeThrough, named or globbed, gives the layout in its record",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    add_client_arguments(p, several_servers=True)
    farm = p.add_argument_group("embedded server and farm", "docs/farm.md")
    farm.add_argument(
        "--serve-model",
        metavar="PATH_OR_HF_ID",
        help="start an embedded `seethrough serve --model PATH_OR_HF_ID` for this run (with --serve-lora); "
        "with --ray, the model each generation actor loads (default: none)",
    )
    farm.add_argument(
        "--serve-lora", metavar="PATH", help="with --serve-model: the SeeThrough3D LoRA (default: none)"
    )
    farm.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        metavar="ADDRESS",
        help="run on a Ray cluster (needs seethrough[farm]): auto, ray://HOST:10001 or HOST:6379; "
        "alone, a Ray started on this machine for the run. Renders are Ray tasks, generation runs on one "
        "actor per GPU loading --serve-model/--serve-lora or --tiny (default: no Ray)",
    )
    farm.add_argument(
        "--ray-cpu-actors",
        type=int,
        metavar="N",
        help="with --ray: N generation actors on CPUs instead of one per GPU (test clusters, --tiny; "
        "default: one per GPU)",
    )
    farm.add_argument(
        "--shard",
        metavar="K/N",
        help="run only the K-th of N disjoint parts of the plan (farm managers run N tasks; "
        "default: the whole plan)",
    )
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", help=f"comma-separated seeds, e.g. 1,2,3 (default {DEFAULT_SEED})")
    seeds.add_argument(
        "--num-seeds",
        type=int,
        metavar="N",
        help=f"N seeds: {DEFAULT_SEED}, {DEFAULT_SEED + 1}, ... (default: --seeds)",
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
    add_retry_argument(p, "the images left for it fail")
    p.add_argument("--overwrite", action="store_true", help="regenerate images that already exist")
    add_size_arguments(p)
    p.add_argument(
        "--draft",
        action="store_true",
        help=f"a quick look at every layout: at most {DRAFT_SIDE} px on the longer side, one pass, the "
        f"condition cached and the step cache at {DRAFT_STEP_CACHE:g}; written under OUT/{DRAFT_FOLDER}/",
    )
    add_frame_arguments(p)


def run_batch(args: argparse.Namespace) -> int:
    # Blender is loaded only now: `seethrough --help` and argument errors stay instant.
    from .batch.runner import BatchOptions

    try:
        inputs = expand_inputs(args.inputs)
        client = client_options(args)
        options = BatchOptions(
            out_dir=args.out / DRAFT_FOLDER if args.draft else args.out,
            servers=client.servers,
            seeds=parse_seeds(args.seeds, args.num_seeds),
            cameras=CameraChoice.parse(args.cameras),
            frames=parse_frames(args.frames),
            engine=args.engine,
            steps=args.steps,
            guidance=args.guidance,
            overwrite=args.overwrite,
            timeout_s=client.timeout_s,
            retry_s=args.retry_for,
            keys=client.keys,
            consistent=args.consistent,
            margin_px=args.margin,
            reproject_limit=args.reproject_limit,
            size=size_from_args(args),
            base_megapixels=args.base_megapixels,
            upscale_strength=args.upscale_strength,
            shard=Shard.parse(args.shard) if args.shard is not None else None,
            draft=args.draft,
        )
        serve_argv = _serve_arguments(args)
        if args.consistent and args.frames is None:
            raise InputError("--consistent needs --frames: it makes each frame an edit of the one before")
        check_margin(args.margin)
        check_reproject_limit(args.reproject_limit)
        # A typo in an address or a setting out of range fails here, before Blender renders anything.
        check_steps(options.steps)
        check_guidance(options.guidance)
        check_frame_arguments(args)
    except SettingError as exc:
        print(f"error: --{exc.field}: {exc.message}", file=sys.stderr)
        return 2
    except (InputError, EndpointError, KeyFileError, ClientOptionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if options.frames is not None:
        for path in stills(inputs):
            print(
                f"note: --frames is ignored for {path}: a layout file is a still (frame 1)", file=sys.stderr
            )
    if args.draft:
        for option, value, default in (
            ("--base-megapixels", args.base_megapixels, DEFAULT_BASE_MEGAPIXELS),
            ("--upscale-strength", args.upscale_strength, DEFAULT_UPSCALE_STRENGTH),
        ):
            if value != default:
                print(
                    f"note: {option} is ignored with --draft: every draft is made in one pass",
                    file=sys.stderr,
                )
    if args.serve_model is not None and client.servers:
        print("error: give --serve-model or --server, not both", file=sys.stderr)
        return 2
    try:
        check_output_folder(args.out)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # SIGTERM (a job scheduler, `kill`) stops the batch as Ctrl-C does: jobs cancelled, summary printed.
    previous_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return _run(args, options, inputs, client, serve_argv)
    except KeyboardInterrupt:  # before the runner started (the embedded server was coming up)
        print("interrupted before any image was generated", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)


def _run(
    args: argparse.Namespace,
    options: BatchOptions,
    inputs: list[Path],
    client: ClientOptions,
    serve_argv: list[str] | None,
) -> int:
    from .batch.report import contact_sheets, summary_table
    from .batch.runner import BatchRunner, read_plan

    # What is left to make decides whether a server (or a Ray cluster) is needed at all: a shard with
    # no image, or a rerun of a finished batch, skips everything without loading a model.
    plan = read_plan(inputs, options)
    if not plan.to_make:
        options.servers = []
        print(_nothing_to_make(plan, options), file=sys.stderr, flush=True)
        summary = BatchRunner(options).run_plan(plan)
    elif args.ray is not None:
        try:
            summary = _run_on_ray(args, options, plan, serve_argv)
        except FarmError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except SeeThroughError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    else:
        with ExitStack() as stack:
            try:
                if args.serve_model is not None:
                    print(
                        f"Starting an embedded server with {args.serve_model} ...",
                        file=sys.stderr,
                        flush=True,
                    )
                    server = ServerProcess.serving(args.out / "logs" / "server.log", *serve_argv)
                    stack.enter_context(server)
                    options.servers = [server.endpoint]
                else:
                    options.servers = stack.enter_context(server_endpoints(client, args.out / "logs"))
            except LocalServerError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(
                f"{len(inputs)} input(s), seeds {options.seeds}, servers {', '.join(options.servers)}"
                + (f", shard {options.shard}" if options.shard else ""),
                file=sys.stderr,
                flush=True,
            )
            summary = BatchRunner(options).run_plan(plan)
    print(summary_table(summary, inputs))
    sheet_problems: list[str] = []
    if options.shard is None:
        sheets, sheet_problems = contact_sheets(summary, output_names(inputs), options.out_dir)
        for sheet in sheets:
            print(f"contact sheet: {sheet}")
        for problem in sheet_problems:
            print(f"contact sheet NOT written: {problem}")
    else:  # a shard sees only its part; the run without --shard at the end writes the sheets
        print(f"shard {options.shard}: contact sheets are written by a run without --shard")
    if summary.interrupted:
        return 130
    return 0 if summary.ok and not sheet_problems else 1


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


def _run_on_ray(
    args: argparse.Namespace, options: BatchOptions, plan: BatchPlan, serve_argv: list[str]
) -> BatchSummary:
    """The batch on a Ray cluster (batch/ray_runner.py)."""
    from .batch.ray_cluster import import_ray

    import_ray()  # without the farm extra: a message naming it, before anything else
    from .batch.ray_runner import run_on_ray

    return run_on_ray(args.ray, args.ray_cpu_actors, serve_argv, args.timeout, options, plan)


def _nothing_to_make(plan: BatchPlan, options: BatchOptions) -> str:
    """The first line of a batch that has nothing left to make, and so starts no server."""
    shard = f", shard {options.shard}" if options.shard else ""
    if plan.tasks:
        what = f"all {len(plan.tasks)} image(s) already complete"
    elif options.shard is not None:
        what = "no image of the plan falls to this shard"
    else:
        what = "no image in the plan"
    header = f"{len(plan.inputs)} input(s), seeds {options.seeds}{shard}"
    return f"{header}: nothing to make ({what}); no server started"
