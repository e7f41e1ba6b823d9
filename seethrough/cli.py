"""The `seethrough` command: one module per sub-command, each loading bpy or torch only when run."""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass

from . import __version__

# Which install extra each side needs, for the message when it is missing.
_EXTRA_OF_MODULE = {"bpy": "blender", "torch": "server", "diffusers": "server", "transformers": "server"}


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    module: str  # seethrough.<module> defines add_<name>_arguments(parser) and run_<name>(args)
    function: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        # Argument definitions import no bpy or torch: `seethrough --help` stays instant everywhere.
        module = importlib.import_module(f"{__package__}.{self.module}")
        getattr(module, f"add_{self.function}_arguments")(parser)


COMMANDS = (
    Command("render", "render a layout's OSCR image and box masks with Blender", "render_command", "render"),
    Command("batch", "generate every shot of many .blend/.json layouts, resumably", "batch_command", "batch"),
    Command(
        "edit", "regenerate only what changed since a previous picture (docs/edit.md)", "edit_command", "edit"
    ),
    Command("serve", "run the inference server (FLUX.1-dev + SeeThrough3D LoRA)", "serve_command", "serve"),
    Command("train", "train or fine-tune the SeeThrough3D LoRA on a dataset", "train_command", "train"),
    Command(
        "build-addon",
        "pack the Blender extension zip (add-on, wheels, size templates)",
        "build_addon",
        "build_addon",
    ),
    Command(
        "dataset", "make a synthetic occlusion dataset from assets; its stats", "dataset_command", "dataset"
    ),
    Command("keys", "CURVE key pairs for serving to other machines (docs/server.md)", "keys_command", "keys"),
    Command("lora", "show or change a running server's LoRAs without restarting it", "lora_command", "lora"),
)


def _handler(module: str, function: str):
    """A sub-command's handler, explaining which extra to install when its side is missing."""
    try:
        return getattr(importlib.import_module(f"{__package__}.{module}"), f"run_{function}")
    except ModuleNotFoundError as exc:
        extra = _EXTRA_OF_MODULE.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        sys.exit(f"error: this command needs the '{exc.name}' module: pip install 'seethrough[{extra}]'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seethrough", description="SeeThrough Studio: 3D layout control for FLUX"
    )
    parser.add_argument("--version", action="version", version=f"seethrough {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help)
        command.add_arguments(p)
        p.set_defaults(handler=(command.module, command.function))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module, function = args.handler
    result = _handler(module, function)(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
