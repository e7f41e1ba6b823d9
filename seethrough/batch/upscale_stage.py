"""The batch's second stage: each frame made in two stages is upscaled as soon as its base is ready.

A frame at a size the model does not take is generated as a base picture, then refined in tiles
(docs/upscale.md). The workers hand each finished base over (work_pool.ReadyBases); this stage renders
the frame's tile views, queues its tiles in one pool of server threads that every frame shares, and
writes the frame once its tiles are done. The servers take tiles between bases, so finished frames
come while later bases are still generated, and no server waits between one frame and the next.

Who drives it depends on where the views render. Blender in this process wants the main thread, which
also renders the shots' conditions: it polls the stage between shots and while it waits for a free
place in the queue of bases, then runs it to the end (runner.py). On a farm the views are cluster
tasks, and a thread of its own runs it (ray_runner.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from seethrough_core.client import SeeThroughClient
from seethrough_core.errors import SeeThroughError
from seethrough_core.frame_reuse import reuse_of_parent
from seethrough_core.server_away import Pause
from seethrough_core.upscale_run import (
    TilePool,
    Upscale,
    UpscaleRunner,
    resume_or_start_over,
    started_over_note,
)

from ..previous_picture import read_previous
from .plan import Task

if TYPE_CHECKING:
    from .runner import BatchRunner


@dataclass
class _FrameUpscale:
    """A frame whose tiles are queued: its task, its runner, and when its upscale started."""

    task: Task
    runner: UpscaleRunner
    started: float

    @property
    def path(self) -> Path:
        """Where the frame is written."""
        return self.task.image_path


class UpscaleStage:
    """The upscale of the batch's frames made in two stages, in the order their bases became ready.

    At most two frames are in hand: the one whose last tiles run, and the next, whose views render and
    whose first tiles are queued meanwhile. Every method raises KeyboardInterrupt once the batch is
    stopped (the finished tiles stay in NAME.tiles/ for the next run)."""

    def __init__(self, batch: BatchRunner) -> None:
        self._batch = batch
        self._clients: list[SeeThroughClient] = []
        self._pool: TilePool | None = None  # made with the first frame: a batch without one needs none
        self._views = None
        self._running: _FrameUpscale | None = None

    def poll(self) -> None:
        """Start the frames whose base is ready and write those whose tiles are done; never waits for a
        base (the main thread calls it between the shots it renders)."""
        while self._step(wait=False):
            pass

    def run(self) -> None:
        """Upscale every frame until no base is left to come (ReadyBases closed) and the last is written."""
        while self._step(wait=True):
            pass

    def close(self) -> None:
        """End the pool's threads (once stopped, what is queued is skipped) and close the clients."""
        if self._pool is not None:
            self._pool.close()
        for client in self._clients:
            client.close()

    def _step(self, wait: bool) -> bool:
        """One move; False when there is nothing to do (without ``wait``: now; with it: ever again)."""
        running = self._running
        task = self._batch._bases.take(wait=wait and running is None)
        if task is None:
            if running is None or not (wait or running.runner.settled):
                return False
            self._running = None
            self._complete(running)  # no next base yet: the frame is written, not held back
            return True
        if running is not None and self._batch._frame_before(task) == running.path:
            self._running = None
            self._complete(running)  # its pixels are what this frame keeps: written first
            running = None
        started = self._start(task)
        self._running = None
        self._complete(running)  # the frame before, whose last tiles ran meanwhile
        self._running = started
        return True

    def _start(self, task: Task) -> _FrameUpscale | None:
        """Render the frame's tile views and queue its tiles; None when it failed already."""
        batch = self._batch
        pool = self._pool_for_frames()
        start = time.perf_counter()
        options = batch.options
        try:
            base = read_previous(task.base_path)
            layout = task.shot.layout
            plan = batch.frame_plan(layout, task.seed)
            steps, guidance = options.steps, options.guidance
            reuse = None
            if options.consistent:  # the frame before (its base's parent's frame) lends what stays
                reuse = reuse_of_parent(base, plan=plan, frame_layout=layout, steps=steps, guidance=guidance)
            upscale = Upscale(
                plan=plan,
                frame_layout=layout,
                base_image=base.image,
                base_record=base.record,
                out_path=task.image_path,
                steps=steps,
                guidance=guidance,
                source={**base.record.source, "base": str(task.base_path)},
                reuse=reuse,
            )
            # tiles an interrupted run made for another base or settings (an --overwrite, a new
            # --upscale-strength) can never be part of this frame: they go, and the frame starts over
            upscale, started_over = resume_or_start_over(upscale)
            if started_over:
                batch._progress.note(f"{task.label}: {started_over_note(upscale)}")

            def on_progress(event) -> None:
                where = f"{task.label} tile {event.done + (event.step is not None)}/{event.total}"
                step = f" step {event.step}/{event.steps}" if event.step is not None else ""
                batch._progress.status("upscale", where + step)

            def on_note(text: str) -> None:
                batch._progress.note(f"{task.label}: {text}")

            runner = UpscaleRunner(
                upscale, pool.clients, self._views.view, on_progress=on_progress, stop=pool.stop,
                render_views=self._views.shared, on_note=on_note,
            )  # fmt: skip
            runner.queue_tiles(pool)
        except (SeeThroughError, OSError) as exc:  # this frame fails; the others go on
            if pool.stop.is_set():
                raise KeyboardInterrupt from None  # stopped, not failed: the next run makes it
            batch._fail(task, f"upscale: {exc}")
            return None
        return _FrameUpscale(task, runner, start)

    def _complete(self, frame: _FrameUpscale | None) -> None:
        """Wait for the frame's tiles and write it (None: no frame)."""
        if frame is None:
            return
        batch = self._batch
        task, plan = frame.task, frame.runner.upscale.plan
        try:
            saved = frame.runner.complete()
        except (SeeThroughError, OSError) as exc:
            batch._fail(task, f"upscale: {exc}")
            return
        finally:
            batch._progress.status("upscale", None)
        if saved is None:
            raise KeyboardInterrupt
        reuse = frame.runner.upscale.reuse
        tiles = f"in {len(plan.tiles)} tiles" if reuse is None else reuse.summary(plan)
        note = f" (upscaled from {plan.base.width}x{plan.base.height}, {tiles})"
        batch._frame_written(task, time.perf_counter() - frame.started, note)

    def _pool_for_frames(self) -> TilePool:
        if self._pool is None:
            batch = self._batch
            servers = batch.options.servers
            self._clients = [batch._client(endpoint) for endpoint in servers]
            endpoint_of = {id(c): endpoint for c, endpoint in zip(self._clients, servers, strict=True)}

            def server_back(client: SeeThroughClient, reason: str, pause: Pause) -> bool:
                """A server went away mid-tile: asked again as the bases' workers ask theirs."""
                return batch._wait_for_server(client, endpoint_of[id(client)], reason, pause)

            self._pool = TilePool(self._clients, batch._upscale_stop, server_back=server_back)
            self._views = batch._tile_views()
        return self._pool
