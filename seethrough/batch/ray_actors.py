"""What `seethrough batch --ray` runs on the cluster: OSCR renders as tasks, generation on actors.

An OSCR render is a Ray task (`num_cpus=1`) that renders with bpy in its worker process, into a
temporary folder, and returns the folder's files and the token grids: the driver writes them under
the output folder, so nodes need no shared disk. A generation actor holds one loaded pipeline: it
runs `seethrough serve`'s own server, built from serve's options (serve_command.make_server: the same
loading code, the same errors), on a loopback port of its node, and sends it one job at a time.
Placement, task retries and actor restarts are Ray's (the options below); the driver writes every
image once it has arrived, so a job retried after a crash is still written exactly once.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import ray

from seethrough_core.client import JobCancelledError, SeeThroughClient, ServerError
from seethrough_core.layout import Layout
from seethrough_core.protocol import ErrorReply, GenerateRequest, Progress, Result
from seethrough_core.upscale_plan import ViewCondition, ViewCrop

# A node or worker that dies takes its work with it; Ray restarts the actor (reloading the model)
# and runs its unfinished calls again, up to this many times, before the batch counts it as lost.
MAX_RESTARTS = 3
RENDER_RETRIES = 3
MODEL_LOAD_TIMEOUT_S = 3600.0  # FLUX.1-dev from a slow disk takes minutes; the driver shows the wait
STATUS_GROUP = "status"  # progress and cancel are answered while a job runs


@dataclass(frozen=True)
class RenderedShot:
    """A shot's condition folder (relative path -> bytes) and its token grids; for an upscale tile's
    view, its condition too (the amodal masks the driver would otherwise make again)."""

    files: dict[str, bytes]
    token_grids: np.ndarray
    condition: ViewCondition | None = None


@ray.remote(num_cpus=1, max_retries=RENDER_RETRIES)
def render_shot(layout: Layout, engine: str, as_view: bool = False) -> RenderedShot:
    """Render a shot's OSCR image and masks with bpy in this worker process (today's render code);
    ``as_view``: an upscale tile's view, returned with its condition."""
    from blender_addon.render import render_layout  # Blender: loaded once per worker process

    with tempfile.TemporaryDirectory(prefix="seethrough-render-") as folder:
        rendered = render_layout(layout, folder, engine=engine, quiet=True)
        condition = rendered.view_condition() if as_view else None
        return RenderedShot(folder_files(Path(folder)), rendered.masks.token_grids(), condition)


@ray.remote(num_cpus=1, max_retries=RENDER_RETRIES)
def render_tile_views(
    whole: Layout, crops: list[ViewCrop], engine: str
) -> tuple[dict[str, bytes], list[RenderedShot]]:
    """Upscale tiles' views cut from one render of the view covering them (render.render_views), in
    this worker: the cuts and each tile's masks are made here too, not on the driver. The whole view's
    folder, then each crop's with its condition (the crops' own folders are the driver's)."""
    from blender_addon.render import render_views

    with tempfile.TemporaryDirectory(prefix="seethrough-views-") as folder:
        root = Path(folder)
        here = [replace(crop, folder=root / f"tile-{n}") for n, crop in enumerate(crops)]
        conditions = render_views(whole, root / "whole", here, engine=engine, quiet=True)
        cut = [
            RenderedShot(folder_files(crop.folder), condition.token_grids, condition)
            for crop, condition in zip(here, conditions, strict=True)
        ]
        return folder_files(root / "whole"), cut


def folder_files(folder: Path) -> dict[str, bytes]:
    """A rendered-layout folder's files by their relative paths (what a render task returns)."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@dataclass(frozen=True)
class ActorInfo:
    """Where an actor runs and what it loaded (for the batch's progress lines)."""

    pid: int
    node: str
    device: str
    model: str
    load_error: str | None


@ray.remote(concurrency_groups={STATUS_GROUP: 1})
class GenerationActor:
    """One loaded pipeline, serving the driver's jobs in order (Ray's default group runs one at a time)."""

    def __init__(self, serve_argv: list[str], timeout_s: float) -> None:
        from seethrough.serve_command import make_server, parse_serve_arguments

        self._lock = threading.Lock()
        self._job = None
        self._progress: Progress | None = None
        self._client: SeeThroughClient | None = None
        args = parse_serve_arguments([*serve_argv, "--bind", "tcp://127.0.0.1:*"])
        self._model = "tiny (random weights)" if args.tiny else args.model
        self._device = args.device or ("cpu" if args.tiny else "cuda")
        self.load_error: str | None = None
        try:
            self._server = make_server(args)
            self._server.start()
        except Exception as exc:  # the message serve would print; the driver reports it
            self.load_error = str(exc)
            return
        if not self._server.wait_ready(MODEL_LOAD_TIMEOUT_S):
            self.load_error = self._server.load_error or f"not loaded within {MODEL_LOAD_TIMEOUT_S:.0f} s"
            return
        self._client = SeeThroughClient(self._server.endpoint, timeout_s)

    @ray.method(concurrency_group=STATUS_GROUP)
    def info(self) -> ActorInfo:
        node = ray.util.get_node_ip_address()
        return ActorInfo(os.getpid(), node, self._device, self._model, self.load_error)

    def generate(self, request: GenerateRequest) -> Result | ErrorReply | None:
        """The job's Result, the server's ErrorReply (a job's own failure), or None if it was cancelled."""
        if self._client is None:
            raise RuntimeError(f"the model could not be loaded: {self.load_error}")
        with self._lock:
            self._progress = None
            self._job = self._client.submit(request)
        try:
            return self._job.wait(on_progress=self._on_progress)
        except ServerError as exc:
            return exc.reply
        except JobCancelledError:
            return None
        finally:
            with self._lock:
                self._job = None

    @ray.method(concurrency_group=STATUS_GROUP)
    def progress(self) -> Progress | None:
        return self._progress

    @ray.method(concurrency_group=STATUS_GROUP)
    def cancel(self, request_id: str) -> None:
        """Stop that job if it runs: the actor may hold a base and a tile job, each cancelled alone."""
        with self._lock:
            if self._job is not None and self._job.request_id == request_id:
                self._job.cancel()

    def _on_progress(self, progress: Progress) -> None:
        self._progress = Progress(
            progress.request_id, progress.job_id, progress.step, progress.total, progress.elapsed_s
        )  # without the preview: the driver shows the step only
