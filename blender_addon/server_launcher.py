"""Starts and stops a local `seethrough serve` process for the artist, and watches it come up. No bpy.

The server runs in its own process (and usually its own Python environment with torch), never
inside Blender: its output goes to a log file, and it is stopped when the add-on is disabled or
Blender exits, so GPU memory is given back. It counts as started only once it answers `info`: a
watcher thread asks it, and the panel shows what the watcher saw (starting, loading the model,
ready) or, when the process ended, its exit code and the last lines of its log.
"""

from __future__ import annotations

import atexit
import os
import shlex
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from seethrough_core.client import SeeThroughClient
from seethrough_core.endpoint import parse_endpoint
from seethrough_core.errors import SeeThroughError
from seethrough_core.keys import ClientKeys
from seethrough_core.server_process import LocalServerError, ServerProcess

SET_LORA_PROMPT = (
    "Set the LoRA file first: the SeeThrough3D lora.safetensors (Preferences > Add-ons > SeeThrough > "
    "LoRA File). Or add --tiny to the arguments to test without weights (pictures are noise)"
)
SILENCE_LIMIT_S = 120.0  # a server that has not answered by then is reported (it may bind elsewhere)
LOG_LINES = 8  # of the log shown when the server exits


@dataclass(frozen=True)
class ServerCommand:
    executable: str  # `seethrough`, a path to it, or a Python interpreter (then: -m seethrough ...)
    arguments: str  # e.g. "serve --tiny"; split like a shell would
    address: str  # the add-on's server address: passed as --bind unless the arguments have one
    log_path: Path
    lora: str = ""  # absolute path of the SeeThrough3D LoRA: passed as --lora (the preference)
    lora_scale: float = 1.0
    style_lora: str = ""  # absolute path of a style LoRA: passed as --style-lora PATH:SCALE
    style_lora_scale: float = 1.0

    def argv(self) -> list[str]:
        executable = self.executable.strip()
        if not executable:
            raise LocalServerError("no executable set for the local server (e.g. seethrough)")
        try:
            arguments = shlex.split(self.arguments, posix=os.name != "nt")
        except ValueError as exc:
            raise LocalServerError(f"cannot read the server arguments: {exc}") from None
        resolved = shutil.which(executable) or (executable if Path(executable).is_file() else None)
        if resolved is None:
            raise LocalServerError(
                f"cannot find {executable!r}: give the full path of the `seethrough` command in the "
                "environment where the server is installed (e.g. /home/me/seethrough/.venv/bin/seethrough)"
            )
        arguments += self._lora_arguments(arguments)
        if not _has(arguments, "--bind"):
            arguments += ["--bind", parse_endpoint(self.address).url]
        return [resolved, *arguments]

    def _lora_arguments(self, arguments: list[str]) -> list[str]:
        """--lora and --style-lora from the preferences; each in one place only."""
        added: list[str] = []
        for option, path, scale_option, scale in (
            ("--lora", self.lora, "--lora-scale", self.lora_scale),
            ("--style-lora", self.style_lora, None, self.style_lora_scale),
        ):
            if not path.strip():
                continue
            if _has(arguments, option):
                raise LocalServerError(
                    f"{option} is given twice: in the arguments and in the preferences' LoRA files; "
                    "keep one of them"
                )
            if scale_option is None:
                added += [option, f"{path}:{scale:g}"]
            else:
                added += [option, path] + ([scale_option, f"{scale:g}"] if scale != 1.0 else [])
        if not self.lora.strip() and not _has(arguments, "--lora") and not _has(arguments, "--tiny"):
            raise LocalServerError(SET_LORA_PROMPT)
        return added


def _has(arguments: list[str], option: str) -> bool:
    return any(a == option or a.startswith(option + "=") for a in arguments)


@dataclass(frozen=True)
class ServerState:
    """What the panel shows about the local server; replaced whole by the watcher thread."""

    phase: str = "stopped"  # stopped, starting, loading, ready, silent, exited
    message: str = "Not started"
    log_lines: tuple[str, ...] = ()  # the log's last lines, once it exited
    exit_code: int | None = None
    since: float = field(default_factory=time.monotonic)

    @property
    def settled(self) -> bool:
        """Nothing more to wait for: ready, ended, or silent for too long."""
        return self.phase in ("stopped", "ready", "silent", "exited")

    @property
    def answering(self) -> bool:
        return self.phase in ("loading", "ready")


class LocalServer:
    """At most one server process at a time, started from the add-on's preferences."""

    def __init__(self) -> None:
        self.server: ServerProcess | None = None
        self.state = ServerState()
        self._watcher: threading.Thread | None = None
        self._stop_watching = threading.Event()

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
        return self.state.message

    def start(self, command: ServerCommand, keys: ClientKeys | None = None) -> int:
        """Start the server and its watcher; returns its pid at once. Refuses when one is running."""
        if self.running:
            raise LocalServerError(f"a local server is already running (pid {self.pid}); stop it first")
        self._end_watcher()
        endpoint = parse_endpoint(command.address).url
        self.server = ServerProcess(command.argv(), command.log_path, endpoint, keys)
        pid = self.server.start()
        self.state = ServerState("starting", f"Starting (pid {pid}): waiting for it to answer on {endpoint}")
        self._watch_from_start()
        return pid

    def start_again_for(self, endpoint: str) -> str | None:
        """A job waits for the server at ``endpoint``: when that is this server and it exited on its own
        (a crash, out of memory; not a Stop), start it again, with the same command, log and address.
        Returns what happened, for the job's message; None when it is not this server's to restart."""
        server = self.server
        if server is None or self.running or self.state.phase != "exited" or server.endpoint != endpoint:
            return None
        code = self.state.exit_code
        self._end_watcher()
        try:
            pid = server.start()
        except LocalServerError as exc:
            return f"the local server exited with code {code} and cannot be started again: {exc}"
        self.state = ServerState("starting", f"Started again (pid {pid}) after it exited with code {code}")
        self._watch_from_start()
        return f"the local server exited with code {code}; it is started again (pid {pid})"

    def _watch_from_start(self) -> None:
        self._stop_watching = threading.Event()
        self._watcher = threading.Thread(
            target=self._watch,
            args=(self.server, self._stop_watching),
            name="seethrough-server-watch",
            daemon=True,
        )
        self._watcher.start()

    def _watch(self, server: ServerProcess, stop: threading.Event) -> None:
        """Ask the server for `info` until it is ready, then keep an eye on the process."""
        try:
            with SeeThroughClient(server.endpoint, timeout_s=1.0, keys=server.keys) as client:
                while not stop.is_set():
                    if self.state.phase == "ready":
                        if server.process is not None and server.process.poll() is not None:
                            server.look(client)  # raises: it exited
                        stop.wait(0.5)
                        continue
                    info = server.look(client)
                    if info is None:
                        if (
                            time.monotonic() - self.state.since > SILENCE_LIMIT_S
                            and self.state.phase == "starting"
                        ):
                            self._set(ServerState("silent", _silence_message(server)))
                        continue
                    model = str(info.model.get("name", "")) + (
                        " (random weights: noise)" if info.is_noise else ""
                    )
                    if info.state == "ready":
                        self._set(ServerState("ready", f"Started (pid {server.pid}): ready, {model}"))
                    elif self.state.phase != "loading":
                        self._set(ServerState("loading", f"Started (pid {server.pid}): loading {model}"))
                    stop.wait(0.25)
        except LocalServerError as exc:
            if not stop.is_set():  # not a stop asked for from here
                self._set(_exited(exc))
        except SeeThroughError as exc:  # e.g. unusable keys: the server runs, we cannot ask it
            self._set(ServerState("silent", f"Started (pid {server.pid}) but cannot ask it: {exc}"))

    def _set(self, state: ServerState) -> None:
        self.state = state  # one assignment: the main thread sees the old state or the new one

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Stop the server (politely, then by force); returns its exit code, None if none ran."""
        if self.server is None:
            return None
        self._stop_watching.set()
        code = self.server.stop(timeout_s)
        self._end_watcher()
        self.state = ServerState("stopped", f"Stopped (exit code {code})")
        return code

    def _end_watcher(self) -> None:
        self._stop_watching.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(5.0)
        self._watcher = None

    def log_tail(self, lines: int = 5) -> list[str]:
        return self.server.log_tail(lines) if self.server is not None else []


def _exited(exc: LocalServerError) -> ServerState:
    code = exc.exit_code
    lines = tuple(line for line in exc.log_lines if line.strip())[-LOG_LINES:]
    return ServerState("exited", f"The local server exited with code {code}; its log ends with:", lines, code)


def _silence_message(server: ServerProcess) -> str:
    return (
        f"Running (pid {server.pid}) but not answering on {server.endpoint} after {SILENCE_LIMIT_S:.0f} s: "
        f"check the arguments' --bind against the Server Address, and the log ({server.log_path})"
    )


SERVER = LocalServer()
atexit.register(SERVER.stop)  # Blender closing: never leave a server holding the GPU
