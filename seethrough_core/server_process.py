"""Runs `seethrough serve` as a child process: start it, wait until it answers, stop it.

Used by `seethrough batch --tiny` (an embedded server for machines without weights) and by the
Blender add-on's "start a local server" preference. The server never runs inside the caller's
process: its output goes to a log file whose tail is quoted when it fails to come up, so the
reason is never lost in a closed console, and stopping it gives its GPU memory back.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

from .client import SeeThroughClient, ServerUnavailableError
from .errors import SeeThroughError
from .keys import ClientKeys
from .protocol import InfoReply


class LocalServerError(SeeThroughError):
    """The local server could not be started or did not come up; the message says why. When it ran
    and exited: ``exit_code`` and the last ``log_lines`` of its log."""

    def __init__(
        self, message: str, exit_code: int | None = None, log_lines: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.log_lines = log_lines or []


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """One `seethrough serve` child process listening on ``endpoint``."""

    def __init__(
        self, argv: list[str], log_path: Path, endpoint: str, keys: ClientKeys | None = None
    ) -> None:
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.endpoint = endpoint
        self.keys = keys  # CURVE keys wait_ready() connects with (a server started with --server-key)
        self.process: subprocess.Popen | None = None

    @classmethod
    def tiny(cls, log_path: Path, *extra_args: str, keys: ClientKeys | None = None) -> ServerProcess:
        """The tiny random-weight server on a free loopback port, run by this Python."""
        return cls.serving(log_path, "--tiny", *extra_args, keys=keys)

    @classmethod
    def serving(cls, log_path: Path, *serve_args: str, keys: ClientKeys | None = None) -> ServerProcess:
        """`seethrough serve SERVE_ARGS` on a free loopback port, run by this Python."""
        endpoint = f"tcp://127.0.0.1:{free_loopback_port()}"
        argv = [sys.executable, "-m", "seethrough", "serve", *serve_args, "--bind", endpoint]
        return cls(argv, log_path, endpoint, keys)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> int:
        """Start the process; returns its pid."""
        if self.running:
            raise LocalServerError(f"the local server is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Its own session / process group: a Ctrl-C meant for the caller does not kill it mid-job.
        group = (
            {"start_new_session": True}
            if os.name != "nt"
            else {
                "creationflags": subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
            }
        )
        with open(self.log_path, "ab") as log:
            log.write(
                f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {shlex.join(self.argv)}\n".encode()
            )
            log.flush()
            try:
                self.process = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    **group,
                )
            except OSError as exc:
                raise LocalServerError(f"cannot start {self.argv[0]}: {exc}") from None
        return self.process.pid

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        """Return once the server answers `info`; raise with its log's tail if it dies or hangs."""
        deadline = time.monotonic() + timeout_s
        with SeeThroughClient(self.endpoint, timeout_s=2.0, keys=self.keys) as client:
            while self.look(client) is None:
                if time.monotonic() > deadline:
                    self.stop()
                    raise LocalServerError(
                        f"the local server did not answer within {timeout_s:.0f} s; "
                        f"its log ({self.log_path}) ends with:\n" + "\n".join(self.log_tail(15))
                    )

    def look(self, client: SeeThroughClient) -> InfoReply | None:
        """One look at the server through ``client`` (connected to its endpoint): its `info`, or None
        while nothing answers yet (waits up to the client's timeout). LocalServerError, with the exit
        code and the log's last lines (``exit_code``, ``log_lines``), once the process has ended."""
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise LocalServerError(
                f"the local server exited with code {code}; its log ({self.log_path}) ends with:\n"
                + "\n".join(self.log_tail(15)),
                exit_code=code,
                log_lines=self.log_tail(15),
            )
        try:
            return client.info()
        except ServerUnavailableError:
            return None

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Stop the server (SIGTERM: it cancels its job and exits; then by force); its exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5.0)
        return process.returncode

    def log_tail(self, lines: int = 5) -> list[str]:
        if not self.log_path.is_file():
            return []
        with open(self.log_path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 8192))
            text = handle.read().decode("utf-8", "replace")
        return text.splitlines()[-lines:]

    def __enter__(self) -> ServerProcess:
        if not self.running:
            self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
