"""The batch's job accounting: the chains between the main thread (which renders and puts them) and
the server workers (which take them), so that no planned image is ever dropped.

A chain is "open" from put() until a worker calls finish() (every image of it done or failed).
A worker whose server dies gives its chain back and the next live worker takes it; workers leave
only once nothing is open and nothing more will be put, so a chain given back late still finds
someone. When the last server gives up, leave() hands back what is still waiting so it can be
failed with its name, and put() refuses from then on (the main thread fails those chains itself).

ReadyBases hands the frames made in two stages from the base stage to the upscale stage
(upscale_stage.py).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from .consistent import Chain
from .plan import Task


class WorkPool:
    def __init__(self, servers: int) -> None:
        self._capacity = servers  # chains waiting at most: rendering stays just ahead of generation
        self._servers_left = servers  # servers that have not given up
        self._ready: deque[Chain] = deque()
        self._open = 0
        self._producing = True
        self._stopping = False
        self._cond = threading.Condition()

    # --- the main thread ---------------------------------------------------------------------------

    def put(self, chain: Chain, meanwhile: Callable[[], None] | None = None) -> bool:
        """Queue a chain (blocks while enough are waiting, calling ``meanwhile`` between waits); False
        when the batch is stopping or no server is left, and the caller must account for the chain."""
        while True:
            with self._cond:
                if not self._accepting():
                    return False
                if len(self._ready) < self._capacity:
                    self._ready.append(chain)
                    self._open += 1
                    self._cond.notify_all()
                    return True
                self._cond.wait(0.2)  # a timeout, so Ctrl-C reaches the main thread
            if meanwhile is not None:
                meanwhile()  # outside the lock: the workers go on taking chains

    def close(self) -> None:
        """Nothing more will be put: workers leave once every open chain is finished."""
        with self._cond:
            self._producing = False
            self._cond.notify_all()

    def stop(self) -> None:
        """Interrupted: workers take nothing more; waiting chains stay for the next run."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def servers_left(self) -> int:
        with self._cond:
            return self._servers_left

    def _accepting(self) -> bool:
        return not self._stopping and self._servers_left > 0

    # --- the workers -------------------------------------------------------------------------------

    def take(self) -> Chain | None:
        """The next chain to run; blocks while none waits but some are open; None when all is done."""
        with self._cond:
            while not self._ready and not self._stopping and (self._producing or self._open):
                self._cond.wait()
            if self._stopping or not self._ready:
                return None
            return self._ready.popleft()

    def give_back(self, chain: Chain) -> None:
        """A chain this worker could not finish (its server went away): first in line for the others."""
        with self._cond:
            self._ready.appendleft(chain)
            self._cond.notify_all()

    def finish(self, chain: Chain) -> None:
        with self._cond:
            self._open -= 1
            self._cond.notify_all()

    def wait_until_done(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s``; True when no work is left for anyone (or the batch is stopping).
        A server being retried waits here, so a batch that finished elsewhere does not wait for it."""
        with self._cond:
            self._cond.wait_for(self._all_done, timeout_s)
            return self._all_done()

    def _all_done(self) -> bool:
        return self._stopping or (not self._producing and not self._open)

    def leave(self) -> list[Chain]:
        """This worker's server gave up. The last one to leave gets every waiting chain, to fail them
        (they count as finished); an earlier one gets nothing: the others still run them."""
        with self._cond:
            self._servers_left -= 1
            self._cond.notify_all()
            if self._servers_left > 0:
                return []
            orphans = list(self._ready)
            self._ready.clear()
            self._open -= len(orphans)
            return orphans


class ReadyBases:
    """Frames whose base picture is ready, in the order they became ready, waiting for their upscale.

    The workers put them (the main thread too, for bases a stopped run kept); the upscale loop takes
    them. Closed once no base will come: the base stage ended, or the batch stopped."""

    def __init__(self) -> None:
        self._ready: deque[Task] = deque()
        self._closed = False
        self._cond = threading.Condition()

    def put(self, task: Task) -> None:
        with self._cond:
            self._ready.append(task)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(self, wait: bool) -> Task | None:
        """The next frame; None when none is ready now, or with ``wait``, when none will come (it waits
        for one until then)."""
        with self._cond:
            while wait and not self._ready and not self._closed:
                self._cond.wait(0.2)  # a timeout, so Ctrl-C reaches the main thread
            return self._ready.popleft() if self._ready else None
