"""Jobs and the FIFO queue between the socket loop (producer) and the one GPU worker (consumer).

The queue is the only state both threads touch, so it carries its own lock. Taking a job and
marking it running happen under that lock in one step: a cancel arriving at any moment finds the
job either still queued (removed at once) or running (signalled), never in between.

Waiting jobs are bounded in number (max_pending) and in the bytes they hold (their images and
masks; a PNG/JPEG OSCR image is kept encoded until its job runs), per client and in all: a client
cannot make the server hold much more than one maximum message by queueing jobs.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from seethrough_core.limits import MAX_QUEUED_BYTES, MAX_QUEUED_BYTES_PER_CLIENT
from seethrough_core.protocol import GenerateRequest, SetLoraRequest


def held_bytes(request: GenerateRequest) -> int:
    """What a waiting request holds in memory: its OSCR image (encoded or raw), masks and edit."""
    arrays = [request.masks]
    if request.edit is not None:
        arrays += [request.edit.image, request.edit.mask]
    oscr = request.oscr_image
    oscr_bytes = len(oscr) if isinstance(oscr, bytes | bytearray) else np.asarray(oscr).nbytes
    return oscr_bytes + sum(np.asarray(a).nbytes for a in arrays)


@dataclass
class ServerJob:
    job_id: str
    request: GenerateRequest | SetLoraRequest  # a generation, or a LoRA change between generations
    owner: bytes  # ZeroMQ routing id of the connection that submitted it
    received_at: float = field(default_factory=time.monotonic)  # when its message arrived
    held_bytes: int = 0  # counted against the queue's byte budgets while it waits
    cancel_event: threading.Event = field(default_factory=threading.Event)
    # (routing id, request_id) of every cancel request: each gets an answer when the job ends.
    cancel_requests: list[tuple[bytes, str]] = field(default_factory=list)
    owner_gone: bool = False  # its connection vanished: nobody to send anything to
    shutting_down: bool = False  # cancelled because the server stops, not because anyone asked


class QueueFullError(Exception):
    """The queue holds max_pending jobs already, or the job's bytes would pass a budget; the message
    says which and what to do."""


class JobQueue:
    def __init__(
        self,
        max_pending: int,
        max_bytes: int = MAX_QUEUED_BYTES,
        max_bytes_per_client: int = MAX_QUEUED_BYTES_PER_CLIENT,
    ) -> None:
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self.max_bytes_per_client = max_bytes_per_client
        self._pending: deque[ServerJob] = deque()
        self._running: ServerJob | None = None
        self._closed = False
        self._cond = threading.Condition()
        self._held = 0  # bytes of the waiting jobs
        self._held_by: dict[bytes, int] = {}  # the same per client

    def put(self, job: ServerJob) -> int:
        """Append a job; returns how many jobs run before it (the running one included)."""
        with self._cond:
            if len(self._pending) >= self.max_pending:
                raise QueueFullError(
                    f"{self.max_pending} jobs are waiting already; try again when some have finished"
                )
            own = self._held_by.get(job.owner, 0)
            # A client's first waiting job always fits its budget: no legal message is larger.
            if own and own + job.held_bytes > self.max_bytes_per_client:
                raise QueueFullError(
                    f"your waiting jobs hold {own >> 20} MiB of images already and this one "
                    f"{job.held_bytes >> 20} MiB more; at most {self.max_bytes_per_client >> 20} MiB per "
                    "client may wait: send it again once one of yours has started (or send PNG files)"
                )
            if self._held and self._held + job.held_bytes > self.max_bytes:
                raise QueueFullError(
                    f"the waiting jobs hold {self._held >> 20} MiB of images already; at most "
                    f"{self.max_bytes >> 20} MiB may wait: try again when some have started"
                )
            position = len(self._pending) + (self._running is not None)
            self._pending.append(job)
            self._count(job, +1)
            self._cond.notify()
            return position

    def _count(self, job: ServerJob, sign: int) -> None:
        """Add or remove a waiting job's bytes (the caller holds the lock)."""
        self._held += sign * job.held_bytes
        left = self._held_by.get(job.owner, 0) + sign * job.held_bytes
        if left:
            self._held_by[job.owner] = left
        else:
            self._held_by.pop(job.owner, None)

    def held(self, owner: bytes | None = None) -> int:
        """Bytes the waiting jobs hold (of one client, or of all)."""
        with self._cond:
            return self._held if owner is None else self._held_by.get(owner, 0)

    def take(self) -> ServerJob | None:
        """The next job, now marked running; blocks while the queue is empty, None once closed."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            self._running = self._pending.popleft()
            self._count(self._running, -1)
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
                    self._count(job, -1)
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
            self._held, self._held_by = 0, {}
            self._cond.notify_all()
            return pending
