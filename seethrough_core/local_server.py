"""Starts `seethrough serve` as a child process and waits until it answers.

Used by `seethrough batch --tiny` (an embedded server for machines without weights) and by the
Blender add-on's "start a local server" preference. The child's output goes to a log file whose
tail is quoted when it fails to come up, so the reason is never lost in a closed console.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from .client import SeeThroughClient, ServerUnavailableError
from .errors import SeeThroughError


class LocalServerError(SeeThroughError):
    """The local server process did not come up; the message quotes the end of its log."""


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalServer:
    """A `seethrough serve ARGS --bind tcp://127.0.0.1:PORT` child process."""

    def __init__(self, serve_args: list[str], log_path: Path, port: int | None = None) -> None:
        self.port = port or free_loopback_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        self.command = [
            sys.executable,
            "-m",
            "seethrough_core",
            "serve",
            *serve_args,
            "--bind",
            self.endpoint,
        ]
        self.process: subprocess.Popen | None = None

    def start(self, ready_timeout_s: float = 300.0) -> LocalServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + ready_timeout_s
        with SeeThroughClient(self.endpoint, timeout_s=2.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise LocalServerError(
                        f"the local server exited with code {self.process.returncode} before it was ready; "
                        f"its log ({self.log_path}) ends with:\n{self.log_tail()}"
                    )
                try:
                    client.info()
                    return self
                except ServerUnavailableError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise LocalServerError(
                            f"the local server did not answer within {ready_timeout_s:.0f} s; "
                            f"its log ({self.log_path}) ends with:\n{self.log_tail()}"
                        ) from None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # SIGTERM: the server shuts down cleanly
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout_s)

    def __enter__(self) -> LocalServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
