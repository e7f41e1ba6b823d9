"""Starts and stops a local `seethrough serve` process for the artist. No bpy.

The server runs in its own process (and usually its own Python environment with torch), never
inside Blender: its output goes to a log file, and it is stopped when the add-on is disabled or
Blender exits, so GPU memory is given back.
"""

from __future__ import annotations

import atexit
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from seethrough_core.endpoint import parse_endpoint
from seethrough_core.server_process import LocalServerError, ServerProcess


@dataclass(frozen=True)
class ServerCommand:
    executable: str  # `seethrough`, a path to it, or a Python interpreter (then: -m seethrough ...)
    arguments: str  # e.g. "serve --tiny"; split like a shell would
    address: str  # the add-on's server address: passed as --bind unless the arguments have one
    log_path: Path

    def argv(self) -> list[str]:
        executable = self.executable.strip()
        if not executable:
            raise LocalServerError("no executable set for the local server (e.g. seethrough)")
        resolved = shutil.which(executable) or (executable if Path(executable).is_file() else None)
        if resolved is None:
            raise LocalServerError(
                f"cannot find {executable!r}: give the full path of the `seethrough` command in the "
                "environment where the server is installed (e.g. /home/me/seethrough/.venv/bin/seethrough)"
            )
        try:
            arguments = shlex.split(self.arguments, posix=os.name != "nt")
        except ValueError as exc:
            raise LocalServerError(f"cannot read the server arguments: {exc}") from None
        if not any(a == "--bind" or a.startswith("--bind=") for a in arguments):
            arguments += ["--bind", parse_endpoint(self.address).url]
        return [resolved, *arguments]


class LocalServer:
    """At most one server process at a time, started from the add-on's preferences."""

    def __init__(self) -> None:
        self.server: ServerProcess | None = None

    @property
    def process(self) -> subprocess.Popen | None:
        return self.server.process if self.server is not None else None

    @property
    def log_path(self) -> Path | None:
        return self.server.log_path if self.server is not None else None

    @property
    def command(self) -> list[str]:
        return self.server.argv if self.server is not None else []

    @property
    def running(self) -> bool:
        return self.server is not None and self.server.running

    @property
    def pid(self) -> int | None:
        return self.server.pid if self.server is not None else None

    def describe_exit(self) -> str:
        if self.process is None:
            return "Not started"
        code = self.process.poll()
        return "Running" if code is None else f"Exited with code {code} (see {self.log_path})"

    def start(self, command: ServerCommand) -> int:
        """Start the server; returns its pid. Refuses when one is already running."""
        if self.running:
            raise LocalServerError(f"a local server is already running (pid {self.pid}); stop it first")
        self.server = ServerProcess(command.argv(), command.log_path, parse_endpoint(command.address).url)
        return self.server.start()

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Stop the server (politely, then by force); returns its exit code, None if none ran."""
        return self.server.stop(timeout_s) if self.server is not None else None

    def log_tail(self, lines: int = 5) -> list[str]:
        return self.server.log_tail(lines) if self.server is not None else []


SERVER = LocalServer()
atexit.register(SERVER.stop)  # Blender closing: never leave a server holding the GPU
