"""OSCR renders made before the jobs that need them: while Generate Frames' server generates one frame,
the next frames' OSCR images render here, so their jobs start by sending instead of rendering; and while
the server generates a frame's base picture, the views of the tiles its upscale will refine.

One background render at a time (background_render.run_render), on a thread of its own, in the order
queued, and none starts while a job renders its own (held): the renders here fill the time the server
generates, and never slow the render a job waits for. A job about to render a folder asks first
(claim): a render of it in progress here is waited for instead of made twice; one still queued is
taken back, and the job renders it itself as before.
A render that fails here is only a lost head start: the job renders it again and reports the failure.
No bpy here.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .background_render import RenderFailedError, RenderTask, run_render


class RenderAhead:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._queued: deque[RenderTask] = deque()
        # the render in progress (by its folder), and the event that stops it alone
        self._rendering: dict[Path, tuple[RenderTask, threading.Event]] = {}
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._held = 0  # jobs rendering their own OSCR image now
        self.rendered = 0  # renders finished here (a test checks no render is made twice)

    def queue(self, tasks: Sequence[RenderTask], start: bool = True, first: bool = False) -> None:
        """Queue renders; with ``start`` False they wait for the end of the next job's own render; with
        ``first``, before those queued already (needed sooner: the job running now waits for them)."""
        with self._changed:
            if first:
                self._queued.extendleft(reversed(tasks))
            else:
                self._queued.extend(tasks)
            if start:
                self._start()

    def _start(self) -> None:
        if self._thread is None and self._queued:
            self._thread = threading.Thread(
                target=self._work, args=(self._cancel,), name="SeeThrough render ahead", daemon=True
            )
            self._thread.start()

    @property
    def busy(self) -> bool:
        """Renders are queued or in progress here."""
        with self._changed:
            return bool(self._queued or self._rendering)

    def stop(self) -> None:
        """Drop what is queued and stop the render in progress (its process is killed)."""
        with self._changed:
            self._queued.clear()
            self._cancel.set()
            for _, stop in self._rendering.values():
                stop.set()
            self._cancel, self._thread = threading.Event(), None  # a later queue() starts afresh
            self._changed.notify_all()

    def forget(self, out_dirs: Sequence[Path]) -> None:
        """Drop the renders of ``out_dirs`` (a job that queued them ended): queued ones are taken back, one
        in progress is stopped, and waited for (its process killed, nothing writes into its folders any
        more); the others go on."""
        with self._changed:
            dropped = set(out_dirs)
            kept = [task for task in self._queued if task.out_dir not in dropped]
            self._queued.clear()
            self._queued.extend(kept)
            for out_dir in dropped & self._rendering.keys():
                self._rendering[out_dir][1].set()
            self._changed.notify_all()
            self._changed.wait_for(lambda: not dropped & self._rendering.keys())

    def claim(self, out_dir: Path, cancel: threading.Event) -> None:
        """Before a job renders ``out_dir`` itself: take the render that fills it (its own, or a shared
        view cut into it) out of the queue, or wait until such a render here is over (or ``cancel`` is
        set). The job then finds the folder complete, or renders it."""
        with self._changed:
            for task in self._queued:
                if out_dir in task.fills:
                    self._queued.remove(task)
                    return
            while not cancel.is_set() and any(out_dir in t.fills for t, _ in self._rendering.values()):
                self._changed.wait(0.1)

    @contextmanager
    def held(self) -> Iterator[None]:
        """While a job renders its own: no render here starts (one in progress finishes); after it,
        the renders queued start."""
        with self._changed:
            self._held += 1
        try:
            yield
        finally:
            with self._changed:
                self._held -= 1
                self._start()
                self._changed.notify_all()

    def _work(self, cancel: threading.Event) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: not self._held or cancel.is_set())
                if cancel.is_set() or not self._queued:
                    if self._thread is threading.current_thread():
                        self._thread = None
                    return
                task = self._queued.popleft()
                stop = threading.Event()
                self._rendering[task.out_dir] = (task, stop)
            rendered = None
            try:
                rendered = run_render(task, stop)
            except RenderFailedError:
                pass  # the frame's job renders it again, and says why it fails
            finally:
                with self._changed:
                    self._rendering.pop(task.out_dir, None)
                    self.rendered += rendered is not None
                    self._changed.notify_all()


AHEAD = RenderAhead()
