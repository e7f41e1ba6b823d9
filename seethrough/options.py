"""Command-line options that several commands share, declared once (their choices and defaults come
from seethrough_core.vocabulary and limits, as the server and the add-on read them)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from seethrough_core.endpoint import DEFAULT_ENDPOINT, parse_endpoint
from seethrough_core.errors import SeeThroughError
from seethrough_core.keys import ClientKeys, KeyFileError
from seethrough_core.limits import DEFAULT_SERVER_RETRY_S, MAX_FRAME_SIDE
from seethrough_core.output_size import (
    MAX_PERCENTAGE,
    MIN_PERCENTAGE,
    OutputSize,
    parse_percentage,
    parse_resolution,
)
from seethrough_core.server_process import ServerProcess
from seethrough_core.vocabulary import DEFAULT_CLIENT_TIMEOUT_S, DEFAULT_RENDER_ENGINE, RENDER_ENGINES


def add_engine_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--engine",
        default=DEFAULT_RENDER_ENGINE,
        choices=RENDER_ENGINES,
        help="Blender engine of the OSCR image: cycles as the checkpoint's training data, eevee faster "
        f"on a GPU (default {DEFAULT_RENDER_ENGINE})",
    )


# --- the output size, as Blender's render settings (render, batch, edit) ----------------------------


def _argparse_type(parse):
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__.removeprefix("parse_")  # argparse names it in its error
    return convert


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output size (as Blender's render settings)")
    group.add_argument(
        "--resolution",
        type=_argparse_type(parse_resolution),
        metavar="WxH",
        help="render and generate at this size instead of the layout's, e.g. 1920x1080 (up to "
        f"{MAX_FRAME_SIDE} px a side; sizes the model cannot make directly are made in two stages, "
        "docs/upscale.md; default: the layout's or the .blend's resolution)",
    )
    group.add_argument(
        "--percentage",
        type=_argparse_type(parse_percentage),
        default=100,
        metavar="P",
        help=f"scale the size by P percent ({MIN_PERCENTAGE}..{MAX_PERCENTAGE}), e.g. 50 for a quick "
        "preview; each side is rounded to a multiple of 16 (default 100)",
    )


def size_from_args(args: argparse.Namespace) -> OutputSize:
    return OutputSize(args.resolution, args.percentage)


# --- talking to a server: every command that sends jobs takes these, with the same meaning ------------


class ClientOptionError(SeeThroughError):
    """Client options that do not go together."""


@dataclass(frozen=True)
class ClientOptions:
    servers: list[str]  # checked endpoint URLs; empty: the default one, or the embedded tiny server
    tiny: bool
    timeout_s: float
    keys: ClientKeys | None  # CURVE, for servers started with --server-key


def add_retry_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """--retry-for: how long a server that went away is asked again (seethrough_core.server_away);
    ``what``: what fails once it is given up on."""
    parser.add_argument(
        "--retry-for",
        type=float,
        default=DEFAULT_SERVER_RETRY_S,
        metavar="S",
        help=f"how long a server that went away is tried again (with growing pauses) before {what} "
        f"(default {DEFAULT_SERVER_RETRY_S:g})",
    )


def add_client_arguments(
    parser: argparse.ArgumentParser, *, several_servers: bool = False, embedded: bool = True
) -> None:
    """``several_servers``: --server may repeat; ``embedded``: --tiny starts a tiny server to talk to."""
    group = parser.add_argument_group("server", "where the jobs go (docs/server.md)")
    if several_servers:
        group.add_argument(
            "--server",
            action="append",
            metavar="ENDPOINT",
            help=f"a server to send jobs to; repeat it to use several GPUs (default {DEFAULT_ENDPOINT})",
        )
    else:
        group.add_argument("--server", metavar="ENDPOINT", help=f"the server (default {DEFAULT_ENDPOINT})")
    if embedded:
        group.add_argument(
            "--tiny",
            action="store_true",
            help="start an embedded server with the tiny random-weight model (images are noise; for testing)",
        )
    group.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_CLIENT_TIMEOUT_S,
        help=f"seconds of silence before a server counts as gone (default {DEFAULT_CLIENT_TIMEOUT_S:g})",
    )
    group.add_argument(
        "--server-public-key",
        metavar="FILE",
        help="CURVE: the server's public key file (NAME.key), for servers started with --server-key "
        "(default: no CURVE)",
    )
    group.add_argument(
        "--client-key",
        metavar="FILE_SECRET",
        help="CURVE: this machine's secret key file (NAME.key_secret); its NAME.key must be in the "
        "server's --client-keys folder (default: no CURVE)",
    )


def client_options(args: argparse.Namespace) -> ClientOptions:
    """The options checked: EndpointError, KeyFileError or ClientOptionError before anything runs."""
    given = args.server if isinstance(args.server, list) else [args.server] if args.server else []
    servers = [parse_endpoint(server).url for server in given]
    tiny = bool(getattr(args, "tiny", False))  # commands without an embedded server have no --tiny
    if tiny and servers:
        raise ClientOptionError("give --tiny or --server, not both")
    if not args.timeout > 0:
        raise ClientOptionError("--timeout must be more than 0 seconds")
    if not getattr(args, "retry_for", 0.0) >= 0:  # the commands with add_retry_argument
        raise ClientOptionError("--retry-for must be at least 0 seconds")
    return ClientOptions(servers, tiny, args.timeout, _client_keys(args.server_public_key, args.client_key))


@contextmanager
def server_endpoints(options: ClientOptions, log_dir: Path) -> Iterator[list[str]]:
    """The endpoints to send to: the embedded tiny server's (started here, stopped on leaving; its log in
    ``log_dir``), the given ones, or the default. Raises LocalServerError when the tiny one fails."""
    if not options.tiny:
        yield options.servers or [DEFAULT_ENDPOINT]
        return
    print(
        "Starting an embedded server with the tiny random-weight model (images will be noise) ...",
        file=sys.stderr,
        flush=True,
    )
    with ServerProcess.tiny(log_dir / "tiny_server.log") as server:
        yield [server.endpoint]


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
