"""`seethrough serve`: the inference server's command line (seethrough/cli.py dispatches here).

Importing this module stays cheap (no torch): the `seethrough` command builds its parser from it
for every sub-command. The address is checked and bound before the model loads, so a typo or a
busy port fails in a second, not after minutes of loading weights.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from seethrough_core.endpoint import DEFAULT_ENDPOINT
from seethrough_core.errors import SeeThroughError
from seethrough_core.generation_settings import SettingError, check_step_cache
from seethrough_core.stop_signals import install_stop_handlers
from seethrough_core.vocabulary import (
    DEFAULT_DTYPE,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MEMORY_MODE,
    DEFAULT_QUANTIZATION,
    DTYPES,
    MEMORY_MODES,
    QUANTIZATION_CHOICES,
)

if TYPE_CHECKING:
    from inference_server.server import SeeThroughServer

log = logging.getLogger("seethrough.serve")

LORA_HINT = (
    "the SeeThrough3D LoRA: a .safetensors file, a folder holding it, or the cached Hugging Face repo "
    "va1bhavagrawa1/seethrough3d-flux.1-weights (file checkpoints/seethrough3d_release/lora.safetensors)"
)


def add_model_arguments(parser: argparse.ArgumentParser, tiny_help: str) -> None:
    """--model PATH_OR_HF_ID or --tiny, exactly one (serve and train)."""
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--model",
        metavar="PATH_OR_HF_ID",
        help="FLUX.1-dev in diffusers layout: a folder, or a Hugging Face id already in the local cache "
        "(e.g. black-forest-labs/FLUX.1-dev); nothing is downloaded (no default: give --model or --tiny)",
    )
    what.add_argument("--tiny", action="store_true", help=tiny_help)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(
        parser,
        "the same pipeline at tiny size with random weights: every image is noise; for testing the "
        "connection and the add-on without a GPU",
    )
    parser.add_argument(
        "--lora",
        metavar="PATH",
        help=f"{LORA_HINT} (required with --model, no default; with --tiny, a LoRA trained by "
        "`seethrough train --tiny`, default none)",
    )
    parser.add_argument(
        "--bind",
        default=DEFAULT_ENDPOINT,
        metavar="tcp://HOST:PORT",
        help=f"address to listen on (default {DEFAULT_ENDPOINT}: this machine only)",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow an address other machines can reach without keys: anyone there can use the server "
        "(prefer --server-key and --client-keys)",
    )
    parser.add_argument(
        "--server-key",
        metavar="FILE",
        help="CURVE: this server's secret key file (NAME.key_secret from `seethrough keys create`); "
        "with --client-keys only known clients are served, and any --bind address is allowed "
        "(default: no CURVE, loopback only)",
    )
    parser.add_argument(
        "--client-keys",
        metavar="DIR",
        help="CURVE: the folder of the public key files (NAME.key) of the clients to serve; read at every "
        "connection, so adding or removing a file needs no restart (default: none; with --server-key)",
    )
    parser.add_argument("--device", help="torch device (default: cuda; cpu with --tiny)")
    parser.add_argument(
        "--dtype",
        default=DEFAULT_DTYPE,
        choices=DTYPES,
        help="number format of the model's weights and activations: bfloat16 as FLUX.1-dev was trained; "
        f"float16 for GPUs without bfloat16; float32 doubles the memory (default {DEFAULT_DTYPE})",
    )
    parser.add_argument(
        "--memory",
        default=DEFAULT_MEMORY_MODE,
        choices=MEMORY_MODES,
        help="full: everything on the GPU (about 34 GB); offload: parts move to the GPU as needed (slower); "
        "24gb: quantized transformer and T5 streamed from CPU memory, for 24 GB cards; 16gb: NF4 "
        "transformer, streamed T5, VAE in tiles where needed, for 16 GB cards (docs/performance.md)",
    )
    parser.add_argument(
        "--quantization",
        default=DEFAULT_QUANTIZATION,
        choices=QUANTIZATION_CHOICES,
        help="with --memory 24gb: fp8 (needs seethrough[fp8], GPUs with fp8 units), nf4 (seethrough[nf4]); "
        "auto picks the faster on this GPU: fp8 with --compile where the GPU has fp8 units, else nf4",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the transformer blocks (faster steps; the first image at each size compiles for "
        "minutes, cached on disk afterwards)",
    )
    parser.add_argument(
        "--condition-cache",
        action="store_true",
        help="compute the OSCR condition stream once per image and reuse it (faster, approximate; "
        "see docs/performance.md)",
    )
    parser.add_argument(
        "--step-cache",
        type=_step_cache,
        default=None,
        metavar="THRESHOLD",
        help="let a denoising step reuse the previous step's work when the first block barely changed: "
        "0 computes every step (exact), 0.05-0.2 skips more steps, faster but approximate (off by default; "
        "a request may set its own, e.g. the add-on's Draft)",
    )
    parser.add_argument(
        "--lora-scale",
        type=float,
        default=1.0,
        help="strength of the SeeThrough3D LoRA: 1 as trained, lower loosens the layout control (default 1)",
    )
    parser.add_argument(
        "--style-lora",
        action="append",
        default=[],
        metavar="PATH:SCALE",
        type=_style_lora,
        help="an extra style LoRA and its strength, e.g. watercolor.safetensors:0.8 "
        "(repeatable; default none)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULT_MAX_QUEUE,
        metavar="N",
        help=f"jobs that may wait ({DEFAULT_MAX_QUEUE})",
    )


class ServeArgumentError(SeeThroughError):
    """Serve options that cannot work together; the message says which."""


def parse_serve_arguments(argv: list[str]) -> argparse.Namespace:
    """`seethrough serve` options from a list (the Ray generation actors load a model as serve does)."""
    parser = argparse.ArgumentParser(prog="seethrough serve")
    add_serve_arguments(parser)
    return parser.parse_args(argv)


def make_server(args: argparse.Namespace) -> SeeThroughServer:
    """The server the options describe, not yet bound; raises ServeArgumentError."""
    from inference_server.server import SeeThroughServer, ServerConfig  # the server imports zmq, not torch

    if not args.tiny and not args.lora:
        raise ServeArgumentError(f"--lora is required with --model: give the path of {LORA_HINT}")
    if args.max_queue < 1:
        raise ServeArgumentError(f"--max-queue must be at least 1, got {args.max_queue}")
    device = args.device or ("cpu" if args.tiny else "cuda")
    config = ServerConfig(
        endpoint=args.bind,
        allow_remote=args.allow_remote,
        device=device,
        model="tiny (random weights)" if args.tiny else args.model,
        max_pending=args.max_queue,
        server_key=args.server_key,
        client_keys=args.client_keys,
    )
    return SeeThroughServer(_pipeline_loader(args, device), config)


def run_serve(args: argparse.Namespace) -> int:
    """Bind, load the model on the worker thread, serve until Ctrl-C. Returns the exit status."""
    _setup_logging()
    try:
        server = make_server(args)
        server.bind()
    except SeeThroughError as exc:
        return _fail(str(exc))
    restore = _install_stop_handlers(server.stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # a second Ctrl-C: leave now
        log.warning("forced exit")
        return 130
    finally:
        restore()
    if server.load_error is not None:
        return _fail(f"the model could not be loaded: {server.load_error}", code=1)
    return 0


def _pipeline_loader(args: argparse.Namespace, device: str) -> Callable[[], object]:
    """What the worker thread runs first; the heavy imports happen there, after binding."""

    def load() -> object:
        if args.tiny:
            log.info("loading the tiny pipeline with random weights on %s: every image will be noise", device)
        else:
            styles = "".join(f", style LoRA {path} ({scale:g})" for path, scale in args.style_lora)
            log.info(
                "loading %s with LoRA %s (scale %g) on %s, %s, memory %s%s",
                args.model, args.lora, args.lora_scale, device, args.dtype, args.memory, styles,
            )  # fmt: skip
        from inference_server.pipeline import SeeThroughPipeline  # torch and diffusers: seconds to import

        speed = {
            "memory": args.memory,
            "quantization": args.quantization,
            "compile": args.compile,
            "condition_cache": args.condition_cache,
            "step_cache": args.step_cache,
        }
        if args.tiny:
            pipeline = SeeThroughPipeline.tiny(seed=0, device=device, **speed)
            if args.lora:  # e.g. a checkpoint of `seethrough train --tiny`
                pipeline.load_condition_lora(args.lora, scale=args.lora_scale)
        else:
            pipeline = SeeThroughPipeline.from_pretrained(
                args.model,
                args.lora,
                device=device,
                dtype=args.dtype,
                lora_scale=args.lora_scale,
                style_loras=tuple(args.style_lora),
                **speed,
            )
        for line in pipeline.lora_lines():  # which files, by absolute path and hash
            log.info("%s", line)
        return pipeline

    return load


def _step_cache(text: str) -> float:
    """A threshold checked with the request's own rule (seethrough_core.generation_settings)."""
    try:
        value = float(text)
        check_step_cache(value)
    except (ValueError, SettingError) as error:
        message = error.message if isinstance(error, SettingError) else f"{text!r} is not a number"
        raise argparse.ArgumentTypeError(message) from None
    return value


def _style_lora(text: str) -> tuple[str, float]:
    """PATH:SCALE, or PATH alone (scale 1). Splits at the last colon, so C:\\x.safetensors works."""
    path, sep, scale = text.rpartition(":")
    if sep and path and not scale.startswith(("\\", "/")):
        try:
            return path, float(scale)
        except ValueError:
            message = f"{text!r}: the scale after ':' must be a number, e.g. {path}:0.8"
            raise argparse.ArgumentTypeError(message) from None
    return text, 1.0


def _install_stop_handlers(stop: Callable[..., None]) -> Callable[[], None]:
    """First Ctrl-C (or SIGTERM): stop cleanly. A second Ctrl-C: KeyboardInterrupt, exit at once."""

    def request_stop() -> None:
        log.info("stopping; a running job is cancelled (Ctrl-C again to quit at once)")
        stop(wait=False)

    return install_stop_handlers(request_stop)


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )


def _fail(message: str, code: int = 2) -> int:
    print(f"seethrough serve: error: {message}", file=sys.stderr)
    return code
