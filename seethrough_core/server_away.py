"""What a run does when its server loses a job or goes away: the one rule of the batch, an upscale's
tiles, the add-on's jobs and `seethrough edit`.

A server that restarted under a job answers but no longer knows it (JobLostError): the job is sent
again. A server that went away (server_went_away) is asked again with growing pauses
(wait_until_back) by a caller that waits for it; once it answers, the job is sent again. Either
way a job is sent at most JOB_RESUBMITS more times, so a server that loses every job cannot hold a run
forever.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .client import JobLostError, SeeThroughClient, ServerError, ServerUnavailableError
from .errors import SeeThroughError
from .limits import JOB_RESUBMITS, RETRY_FIRST_S, RETRY_LONGEST_S
from .protocol import ErrorCode

T = TypeVar("T")

# Waits up to the given seconds; True when there is no need to wait any more.
Pause = Callable[[float], bool]
# A server that went away (the reason): True once it answers again, False when it is given up on. It
# waits with the pause given (which ends once no job can need the server any more).
ServerBack = Callable[[SeeThroughClient, str, Pause], bool]


def server_went_away(exc: BaseException) -> bool:
    """The server cannot run jobs now (silent, stopping, or its model did not load): a batch gives its
    job to another server or waits, and asks it again later. A lost job (JobLostError) is not this:
    the server answers, and the job is sent again."""
    if isinstance(exc, ServerUnavailableError):
        return True
    going = (ErrorCode.SHUTTING_DOWN, ErrorCode.LOAD_FAILED)
    return isinstance(exc, ServerError) and not isinstance(exc, JobLostError) and exc.code in going


@dataclass(frozen=True)
class ServerRetry:
    """How asking a server that went away again ended (wait_until_back)."""

    back: bool  # it answers again
    stopped: bool  # ``pause`` ended the waiting first: no work is left for it
    last_error: str  # why it did not answer the last time it was asked ("" if never asked)


def wait_until_back(client: SeeThroughClient, retry_s: float, timeout_s: float, pause: Pause) -> ServerRetry:
    """Ask a server that went away again, with growing pauses (RETRY_FIRST_S, doubling up to
    RETRY_LONGEST_S), for up to ``retry_s``: the one policy of every run that waits for its server.
    ``pause(seconds)`` waits before each try and returns True to stop waiting."""
    deadline = time.monotonic() + retry_s
    wait_s, last_error = RETRY_FIRST_S, ""
    while (remaining := deadline - time.monotonic()) > 0:
        if pause(min(wait_s, remaining)):
            return ServerRetry(False, True, last_error)
        try:
            client.info(timeout_s=max(0.1, min(timeout_s, deadline - time.monotonic())))
        except SeeThroughError as exc:
            last_error = str(exc)
            wait_s = min(wait_s * 2, RETRY_LONGEST_S)
            continue
        return ServerRetry(True, False, last_error)
    return ServerRetry(False, False, last_error)


class ServerStayedAwayError(ServerUnavailableError):
    """The server went away and was not back when the caller stopped waiting (its retry time ran out, or
    it was cancelled); ``__cause__`` is why it went away."""


def send_until_done(
    send: Callable[[], T],
    *,
    on_lost: Callable[[JobLostError], None],
    server_back: Callable[[str], bool] | None = None,
    what: str = "",
) -> T:
    """``send()``, sent again when the server lost the job (``on_lost`` is told first) and, with
    ``server_back``, when the server went away and ``server_back`` saw it answer again. Without
    ``server_back`` a server that went away raises as it is (a batch gives the job to another server).
    ``what`` names the job in the error of the last try."""
    for sent in range(1, JOB_RESUBMITS + 2):
        try:
            return send()
        except SeeThroughError as exc:
            lost = isinstance(exc, JobLostError)
            if not (lost or (server_back is not None and server_went_away(exc))):
                raise
            if sent > JOB_RESUBMITS:
                named = f"{what}: " if what else ""
                raise SeeThroughError(f"{named}{exc} (sent {sent} times)") from exc
            if lost:
                on_lost(exc)
            elif server_back is not None and not server_back(str(exc)):
                raise ServerStayedAwayError(str(exc)) from exc
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class ServerWait:
    """How a command waits for a server that went away (a ServerBack): asked again for up to ``retry_s``
    (--retry-for), each step said through ``note``: it went away, it is back (``then``: what happens
    next), or it did not come back."""

    retry_s: float
    timeout_s: float
    note: Callable[[str], None]
    then: str = "sending it jobs again"

    def __call__(self, client: SeeThroughClient, reason: str, pause: Pause) -> bool:
        """A ServerBack: True once ``client``'s server answers again."""
        return self.retry(client, reason, pause).back

    def retry(self, client: SeeThroughClient, reason: str, pause: Pause, also: str = "") -> ServerRetry:
        """Wait for ``client``'s server (``pause`` as in wait_until_back); ``also``: what happens
        meanwhile, said before the wait ("its jobs go to the other servers; ")."""
        where = f"server {client.endpoint}"
        self.note(f"{where} went away ({reason}); {also}trying it again for up to {self.retry_s:g} s")
        retry = wait_until_back(client, self.retry_s, self.timeout_s, pause)
        if retry.back:
            self.note(f"{where} is back; {self.then}")
        elif not retry.stopped:
            self.note(f"{where} did not come back within {self.retry_s:g} s")
        return retry
