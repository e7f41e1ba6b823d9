"""CURVE key pairs for remote use: `seethrough keys create`, and reading them on both sides.

ZeroMQ's CURVE encrypts the connection and authenticates both ends: the server proves itself with
its secret key (clients know its public key), and serves only clients whose public key is in its
--client-keys folder. Keys are files in ZeroMQ's certificate format (zmq.auth): NAME.key holds the
public key (safe to copy anywhere), NAME.key_secret the public and secret key (owner-only).
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from .errors import SeeThroughError

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
_Z85_KEY_CHARS = 40


class KeyFileError(SeeThroughError, ValueError):
    """A key file that is missing, unreadable, of the wrong kind, or readable by others."""


@dataclass(frozen=True)
class KeyPair:
    public: bytes  # z85, 40 characters
    secret: bytes


@dataclass(frozen=True)
class ClientKeys:
    """What a client needs to talk to a CURVE server: the server's public key and its own pair."""

    server_public: bytes
    client: KeyPair

    @classmethod
    def from_files(cls, server_public_file: str | Path, client_secret_file: str | Path) -> ClientKeys:
        return cls(read_public_key(server_public_file), read_key_pair(client_secret_file))

    def apply(self, socket: zmq.Socket) -> None:
        """Make `socket` a CURVE client (before it connects)."""
        socket.curve_serverkey = self.server_public
        socket.curve_publickey = self.client.public
        socket.curve_secretkey = self.client.secret


def create_key_pair(name: str, directory: str | Path = ".") -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret in `directory`; returns (public file, secret file).

    Refuses to overwrite either file: a replaced key locks out everyone who had the old one."""
    if not name or any(sep in name for sep in ("/", "\\")) or name.startswith("."):
        raise KeyFileError(f"{name!r} is not a usable key name: use letters, digits, - and _, e.g. gpu-box")
    folder = Path(directory)
    public, secret = folder / (name + PUBLIC_SUFFIX), folder / (name + SECRET_SUFFIX)
    for path in (public, secret):
        if path.exists():
            raise KeyFileError(
                f"{path} exists already; pick another name or folder (keys are never overwritten)"
            )
    folder.mkdir(parents=True, exist_ok=True)
    old_umask = os.umask(0o077)  # the secret file is never readable by others, not even for a moment
    try:
        zmq.auth.create_certificates(folder, name)
    finally:
        os.umask(old_umask)
    os.chmod(secret, 0o600)
    os.chmod(public, 0o644)  # public keys are meant to be copied
    return public, secret


def read_public_key(path: str | Path) -> bytes:
    """The public key in a NAME.key (or NAME.key_secret) file."""
    public, _secret = _load(path)
    return public


def read_key_pair(path: str | Path) -> KeyPair:
    """Both keys from a NAME.key_secret file, which must be readable by its owner only."""
    public, secret = _load(path)
    if secret is None:
        raise KeyFileError(
            f"{path} holds only a public key; give the secret key file (NAME{SECRET_SUFFIX}) made by "
            "`seethrough keys create NAME`"
        )
    if sys.platform != "win32":
        mode = Path(path).stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"{path} can be read by other users (mode {stat.filemode(mode)}); a secret key must be "
                f"readable by its owner only: chmod 600 {path}"
            )
    return KeyPair(public, secret)


def read_public_keys(directory: str | Path) -> set[bytes]:
    """Every public key in a folder of NAME.key files (the clients a server serves)."""
    folder = Path(directory)
    if not folder.is_dir():
        raise KeyFileError(f"{folder} is not a folder; give the folder holding the clients' NAME.key files")
    return {read_public_key(path) for path in sorted(folder.glob("*" + PUBLIC_SUFFIX))}


def _load(path: str | Path) -> tuple[bytes, bytes | None]:
    file = Path(path)
    if not file.is_file():
        raise KeyFileError(f"no key file at {file}; make one with `seethrough keys create NAME`")
    try:
        public, secret = zmq.auth.load_certificate(file)
    except (ValueError, OSError) as exc:
        raise KeyFileError(f"{file} is not a ZeroMQ key file ({exc})") from None
    if any(key is not None and len(key) != _Z85_KEY_CHARS for key in (public, secret)):
        raise KeyFileError(f"{file} holds a malformed key (CURVE keys are {_Z85_KEY_CHARS} Z85 characters)")
    return public, secret
