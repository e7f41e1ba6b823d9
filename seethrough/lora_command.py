"""`seethrough lora show|set`: what a running server holds, and changing its LoRAs without a restart.

The change waits its turn in the server's queue (docs/protocol.md, `set_lora`): jobs sent before it
finish with the LoRAs they were sent to. Paths are read on the server's machine; one that exists
here is sent as an absolute path, so a relative path means the same on both sides of a local server.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seethrough_core.client import SeeThroughClient, ServerError
from seethrough_core.endpoint import DEFAULT_ENDPOINT, EndpointError
from seethrough_core.errors import SeeThroughError
from seethrough_core.keys import KeyFileError
from seethrough_core.protocol import ProtocolError, SetLoraRequest, StyleLoraChoice, describe_loras

from .options import ClientOptionError, add_client_arguments, client_options
from .serve_command import LORA_HINT, _style_lora


def add_lora_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="lora_command", required=True)
    show = actions.add_parser("show", help="print the LoRAs the server has loaded")
    change = actions.add_parser(
        "set", help="load another SeeThrough3D or style LoRA into the running server (no restart)"
    )
    change.add_argument("--lora", metavar="PATH", help=f"{LORA_HINT}; default: keep the loaded one")
    change.add_argument(
        "--lora-scale", type=float, metavar="S", help="its strength (default: keep the current one)"
    )
    styles = change.add_mutually_exclusive_group()
    styles.add_argument(
        "--style-lora",
        action="append",
        metavar="PATH:SCALE",
        type=_style_lora,
        help="a style LoRA and its strength (repeatable); the list replaces the loaded style LoRAs "
        "(default: keep them)",
    )
    styles.add_argument("--no-style-loras", action="store_true", help="remove every style LoRA")
    for sub in (show, change):
        # A change queued behind running jobs is waited for as long as the server answers.
        add_client_arguments(sub, embedded=False)


def run_lora(args: argparse.Namespace) -> int:
    try:
        client_choice = client_options(args)
        endpoint = (client_choice.servers or [DEFAULT_ENDPOINT])[0]
        keys = client_choice.keys
        request = None if args.lora_command == "show" else _request(args)
    except (EndpointError, KeyFileError, ClientOptionError, ProtocolError) as exc:
        print(f"seethrough lora: error: {exc}", file=sys.stderr)
        return 2
    try:
        with SeeThroughClient(endpoint, client_choice.timeout_s, keys=keys) as client:
            if request is not None:
                reply = client.set_lora(request)
                print(f"LoRAs changed in {reply.load_s:.2f} s on {endpoint}")
            info = client.info()
    except ServerError as exc:
        print(f"seethrough lora: the server refused: {exc}", file=sys.stderr)
        return 1
    except SeeThroughError as exc:
        print(f"seethrough lora: error: {exc}", file=sys.stderr)
        return 1
    if info.state == "loading":
        print("the model is still loading; its LoRAs are listed once it is ready")
    print("\n".join(describe_loras(info.model, info.lora)))
    return 0


def _request(args: argparse.Namespace) -> SetLoraRequest:
    styles = None
    if args.no_style_loras:
        styles = []
    elif args.style_lora:
        styles = [StyleLoraChoice(_as_sent(path), scale) for path, scale in args.style_lora]
    request = SetLoraRequest(
        lora=_as_sent(args.lora) if args.lora else None, lora_scale=args.lora_scale, style_loras=styles
    )
    request.validate()  # "nothing to change" and a negative scale fail here, before connecting
    return request


def _as_sent(path: str) -> str:
    """An existing local path as an absolute path; anything else (a repo id, a path on the server's
    machine) as given."""
    local = Path(path).expanduser()
    return str(local.absolute()) if local.exists() else path
