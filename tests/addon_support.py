"""Helpers for the add-on tests: its preferences, driving its job pump, a scripted fake server, and a
recording stand-in for UILayout so panel draw code runs headless (the bpy module draws no UI).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import bpy
import numpy as np
import zmq

from seethrough_core.client import SeeThroughClient, ServerUnavailableError
from seethrough_core.protocol import (
    Accepted,
    GenerateRequest,
    InfoReply,
    InfoRequest,
    Progress,
    Result,
    decode_request,
)
from seethrough_core.server_process import ServerProcess, free_loopback_port

ADDON = "blender_addon"  # the package name when enabled from this checkout


def prefs():
    return bpy.context.preferences.addons[ADDON].preferences


def configure(address: str, out_dir: Path, timeout_s: float = 30.0) -> None:
    p = prefs()
    p.server_address = address
    p.timeout_s = timeout_s
    p.output_dir = str(out_dir)


def import_scene(layout: dict, tmp_path: Path, address: str, seed: int) -> bpy.types.Scene:
    """``layout`` imported through the add-on, sent to ``address`` with ``seed`` and 2 steps, no step
    previews; results under tmp_path/out."""
    path = tmp_path / "layout.json"
    path.write_text(json.dumps(layout))
    assert bpy.ops.seethrough.import_layout(filepath=str(path)) == {"FINISHED"}
    configure(address, tmp_path / "out")
    scene = bpy.context.scene
    props = scene.seethrough
    props.random_seed, props.seed, props.steps, props.show_previews = False, seed, 2, False
    return scene


@contextmanager
def tiny_server(python: str, log_path: Path) -> Iterator[str]:
    """`seethrough serve --tiny` run by ``python`` on a free loopback port; yields its address once ready."""
    address = f"tcp://127.0.0.1:{free_loopback_port()}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [python, "-m", "seethrough", "serve", "--tiny", "--bind", address],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        with SeeThroughClient(address, timeout_s=2.0) as client:
            deadline = time.monotonic() + 180
            while True:
                assert process.poll() is None, log_path.read_text()
                try:
                    if client.info().state == "ready":
                        break
                except ServerUnavailableError:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
        yield address
    finally:
        process.terminate()
        process.wait(30)


def tiny_server_process(python: str, log_path: Path) -> ServerProcess:
    """`seethrough serve --tiny` run by ``python`` at a free loopback address, not started: a server a
    test can kill and start again at the same address."""
    endpoint = f"tcp://127.0.0.1:{free_loopback_port()}"
    argv = [python, "-m", "seethrough", "serve", "--tiny", "--bind", endpoint]
    return ServerProcess(argv, log_path, endpoint)


def pump_until_done(timeout_s: float = 120.0, on_pump: Callable[[], None] | None = None):
    """Drive the main-thread pump as Blender's timer would; returns the job's final status."""
    from blender_addon import generation
    from blender_addon.generation_jobs import RUNNER

    deadline = time.monotonic() + timeout_s
    while generation.pump():
        if on_pump is not None:
            on_pump()
        if time.monotonic() > deadline:
            raise TimeoutError(f"the job did not finish in {timeout_s} s: {RUNNER.status}")
        time.sleep(0.02)
    return RUNNER.status


class FakeServer:
    """A ROUTER socket playing the server from a script.

    mode "finish": answers info, accepts a job, sends one progress and a result.
    mode "die": answers info, accepts, sends one progress, then goes silent for good (a crash).
    Every request it receives is recorded in `received`.
    """

    def __init__(self, mode: str = "finish") -> None:
        self.mode = mode
        self.received: list[str] = []
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.linger = 0
        self.port = self._socket.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"tcp://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _send(self, peer: bytes, message) -> None:
        self._socket.send_multipart([peer, *message.encode()])

    def _serve(self) -> None:
        dead = False
        while not self._stop.is_set():
            if not self._socket.poll(50):
                continue
            peer, *frames = self._socket.recv_multipart()
            request = decode_request(frames)
            self.received.append(request.TYPE)
            if dead:
                continue
            if isinstance(request, InfoRequest):
                self._send(peer, self._info(request))
            elif isinstance(request, GenerateRequest):
                self._send(peer, Accepted(request.request_id, "job-1", 0))
                self._send(peer, Progress(request.request_id, "job-1", 1, 2, 0.1, None))
                if self.mode == "die":
                    dead = True
                    continue
                image = np.full((request.settings.height, request.settings.width, 3), 127, np.uint8)
                self._send(peer, self._result(request, image))

    def _info(self, request: InfoRequest) -> InfoReply:
        return InfoReply(
            request_id=request.request_id,
            server_version="fake",
            state="ready",
            model={"name": "fake model"},
            lora=None,
            device="cpu",
            free_memory_bytes=None,
            memory_kind="system",
            queue_length=0,
            is_noise=True,
            max_boxes=16,
            job_state="unknown" if request.job_id else None,
        )

    def _result(self, request: GenerateRequest, image: np.ndarray) -> Result:
        return Result(
            request_id=request.request_id,
            job_id="job-1",
            image=image,
            seed=request.settings.seed or 0,
            prompt="a photo of " + " and ".join(request.settings.descriptions),
            call_ids=[[1] for _ in request.settings.descriptions],
            steps=request.settings.steps,
            guidance=request.settings.guidance,
            timings={"total_s": 0.1},
            model_timings={},
            model={"name": "fake model"},
            lora=None,
            is_noise=True,
            metadata=request.metadata,
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._socket.close(0)
        self._context.term()


# --- panel drawing without a UI ---------------------------------------------------------------


class _OperatorProps:
    """What layout.operator() returns: setting a property the operator lacks is a bug."""

    def __init__(self, idname: str) -> None:
        module, name = idname.split(".")
        op = getattr(getattr(bpy.ops, module), name)
        object.__setattr__(self, "_names", set(op.get_rna_type().properties.keys()))
        object.__setattr__(self, "_idname", idname)

    def __setattr__(self, key: str, value) -> None:
        assert key in self._names, f"{self._idname} has no property {key!r}"


class RecordingLayout:
    """Enough of UILayout for our draw code; checks every property and operator it is given."""

    def __init__(self, log: list[str] | None = None) -> None:
        self.log = log if log is not None else []
        self.alert = False
        self.enabled = True

    def _child(self, *args, **kwargs) -> RecordingLayout:
        return RecordingLayout(self.log)

    row = column = box = split = _child

    def label(self, text: str = "", **kwargs) -> None:
        self.log.append(f"label:{text}")

    def prop(self, data, name: str, **kwargs) -> None:
        assert name in data.bl_rna.properties, f"{data!r} has no property {name!r}"
        self.log.append(f"prop:{name}")

    def operator(self, idname: str, text: str = "", **kwargs) -> _OperatorProps:
        self.log.append(f"operator:{idname}")
        if text:  # the button's own text, as an entry of its own
            self.log.append(f"button:{text}")
        return _OperatorProps(idname)

    def template_list(self, list_type, list_id, data, prop, active_data, active_prop, **kwargs) -> None:
        assert hasattr(bpy.types, list_type), f"UIList {list_type} is not registered"
        assert prop in data.bl_rna.properties and active_prop in active_data.bl_rna.properties
        self.log.append(f"list:{list_type}")

    def progress(self, factor: float = 0.0, type: str = "BAR", text: str = "") -> None:  # noqa: A002
        assert 0.0 <= factor <= 1.0
        self.log.append(f"progress:{text}")

    def icon(self, data) -> int:
        return 0

    def separator(self, **kwargs) -> None:
        pass


class DrawSelf:
    """Stands in for a Panel, UIList or AddonPreferences instance when calling their draw functions
    directly; other attributes come from `target` (the real preferences, for instance)."""

    bitflag_filter_item = 1 << 30

    def __init__(self, layout: RecordingLayout | None, target=None) -> None:
        self.layout = layout
        self._target = target

    def __getattr__(self, name: str):
        if name.startswith("_") or self._target is None:
            raise AttributeError(name)
        return getattr(self._target, name)


def drawn_generate_panel() -> str:
    """The Generate panel's lines as drawn now, its wrapped messages joined."""
    from blender_addon import ui

    log: list[str] = []
    ui.SEETHROUGH_PT_generate.draw(DrawSelf(RecordingLayout(log)), bpy.context)
    return " ".join(line.removeprefix("label:") for line in log)
