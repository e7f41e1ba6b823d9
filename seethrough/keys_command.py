"""`seethrough keys create NAME [--dir DIR]`: CURVE key pairs for serving to other machines."""

from __future__ import annotations

import argparse
import sys

from seethrough_core.keys import KeyFileError, create_key_pair


def add_keys_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser(
        "create", help="write NAME.key (public: copy it) and NAME.key_secret (secret: owner-only)"
    )
    create.add_argument("name", help="e.g. gpu-server, or one name per workstation")
    create.add_argument("--dir", default=".", help="folder to write the two files in (default: here)")


def run_keys(args: argparse.Namespace) -> int:
    try:
        public, secret = create_key_pair(args.name, args.dir)
    except (KeyFileError, OSError) as exc:
        print(f"seethrough keys: error: {exc}", file=sys.stderr)
        return 2
    print(f"public key: {public}  (give it to the other side)")
    print(f"secret key: {secret}  (keep it here; readable by you only)")
    return 0
