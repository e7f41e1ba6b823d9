"""Jobs and the FIFO queue between the socket loop (producer) and the one GPU worker (consumer).

The queue is the only state both threads touch, so it carries its own lock. Taking a job and
marking it running happen under that lock in one step: a cancel arriving at any moment finds the
job either still queued (removed at once) or running (signalled), never in between.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from seethrough_core.protocol import GenerateRequest, SetLoraRequest


@dataclass
class ServerJob:
    job_id: str
    request: GenerateRequest | SetLoraRequest  # a generation, or a LoRA change between generations
    owner: bytes  # ZeroMQ routing id of the connection that submitted it
    received_at: float = field(default_factory=time.monotonic)  # when its message arrived
    cancel_event: threading.Event = field(default_factory=threading.Event)
    # (routing id, request_id) of every cancel request: each gets an answer when the job ends.
    cancel_requests: list[tuple[bytes, str]] = field(default_factory=list)
    owner_gone: bool = False  # its connection vanished: nobody to send anything to
    shutting_down: bool = False  # cancelled because the server stops, not because anyone asked


class QueueFullError(Exception):
    """The queue holds max_pending jobs already."""


class JobQueue:
    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self._pending: deque[ServerJob] = deque()
        self._running: ServerJob | None = None
        self._closed = False
        self._cond = threading.Condition()

    def put(self, job: ServerJob) -> int:
        """Append a job; returns how many jobs run before it (the running one included)."""
        with self._cond:
            if len(self._pending) >= self.max_pending:
                raise QueueFullError
            position = len(self._pending) + (self._running is not None)
            self._pending.append(job)
            self._cond.notify()
            return position

    def take(self) -> ServerJob | None:
        """The next job, now marked running; blocks while the queue is empty, None once closed."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            self._running = self._pending.popleft()
            return self._running

    def finish(self, job: ServerJob) -> None:
        with self._cond:
            if self._running is job:
                self._running = None

    def remove_pending(self, job_id: str) -> ServerJob | None:
        """Take a job out of the queue if it has not started; None if it is not waiting."""
        with self._cond:
            for job in self._pending:
                if job.job_id == job_id:
                    self._pending.remove(job)
                    return job
            return None

    def position(self, job_id: str) -> int | None:
        """Jobs ahead of a waiting job (the running one included); None if it is not waiting."""
        with self._cond:
            for index, job in enumerate(self._pending):
                if job.job_id == job_id:
                    return index + (self._running is not None)
            return None

    def pending_of(self, owner: bytes) -> list[ServerJob]:
        with self._cond:
            return [job for job in self._pending if job.owner == owner]

    def __len__(self) -> int:
        """Jobs waiting or running: what a new job would wait behind."""
        with self._cond:
            return len(self._pending) + (self._running is not None)

    @property
    def running(self) -> ServerJob | None:
        with self._cond:
            return self._running

    def close(self) -> list[ServerJob]:
        """Stop handing out jobs; returns the ones still waiting so they can be answered."""
        with self._cond:
            self._closed = True
            pending = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
            return pending
