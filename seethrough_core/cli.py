"""The `seethrough` command. Sub-commands load their side (bpy or torch) only when run."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .oscr_spec import DEFAULT_PROFILE, PROFILES

# Which install extra each side needs, for the message when it is missing.
_EXTRA_OF_MODULE = {"bpy": "blender", "torch": "server", "diffusers": "server", "transformers": "server"}


def _load(module: str, function: str):
    """Import a sub-command's handler, explaining which extra to install when that fails."""
    try:
        return getattr(importlib.import_module(module), function)
    except ModuleNotFoundError as exc:
        extra = _EXTRA_OF_MODULE.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        sys.exit(f"error: this command needs the '{exc.name}' module: pip install 'seethrough[{extra}]'")


def _add_render(sub) -> None:
    p = sub.add_parser("render", help="render a layout's OSCR image and box masks with Blender")
    p.add_argument("layout", help="a layout .json file or a .blend authored with the add-on")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--engine", default="cycles", choices=["cycles", "eevee"])
    p.add_argument("--profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES))
    p.set_defaults(handler=("blender_addon.cli_render", "run_render"))


def _add_batch(sub) -> None:
    p = sub.add_parser("batch", help="generate every shot of many .blend/.json layouts, resumably")
    # The argument definitions need no bpy; running the command loads Blender.
    importlib.import_module("blender_addon.cli_batch").add_batch_arguments(p)
    p.set_defaults(handler=("blender_addon.cli_batch", "run_batch"))


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="run the inference server (FLUX.1-dev + SeeThrough3D LoRA)")
    try:
        add_arguments = importlib.import_module("inference_server.cli_serve").add_serve_arguments
    except ModuleNotFoundError:
        p.set_defaults(handler=("inference_server.cli_serve", "run_serve"))
        return
    add_arguments(p)
    p.set_defaults(handler=("inference_server.cli_serve", "run_serve"))


def _add_build_addon(sub) -> None:
    p = sub.add_parser("build-addon", help="pack the Blender extension zip (add-on, wheels, size templates)")
    p.add_argument("--out", default="dist", help="output folder (default: dist)")
    p.add_argument(
        "--wheel-cache",
        metavar="DIR",
        help="where downloaded PyPI wheels are kept and reused "
        "(default: $SEETHROUGH_WHEEL_CACHE or ~/.cache/seethrough/wheels)",
    )
    p.add_argument("--offline", action="store_true", help="never download: use only cached wheels")
    p.set_defaults(handler=("blender_addon.build", "run_build_addon"))


def _add_keys(sub) -> None:
    p = sub.add_parser("keys", help="CURVE key pairs for serving to other machines (docs/server.md)")
    actions = p.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser(
        "create", help="write NAME.key (public: copy it) and NAME.key_secret (secret: owner-only)"
    )
    create.add_argument("name", help="e.g. gpu-server, or one name per workstation")
    create.add_argument("--dir", default=".", help="folder to write the two files in (default: here)")
    p.set_defaults(handler=("seethrough_core.keys", "run_keys"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seethrough", description="SeeThrough Studio: 3D layout control for FLUX"
    )
    parser.add_argument("--version", action="version", version=f"seethrough {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_render(sub)
    _add_batch(sub)
    _add_serve(sub)
    _add_build_addon(sub)
    _add_keys(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module, function = args.handler
    return int(_load(module, function)(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
