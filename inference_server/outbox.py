"""What the server owes each client, sent without ever blocking its loop.

Every send to a client is non-blocking with ROUTER_MANDATORY: a message for a client that went away
fails at once instead of blocking or vanishing silently. A client that does not read fills its pipe
(the send high-water mark, then the TCP buffers). From then on it has an outbox of what it is still
owed, in order, resent as the pipe drains: a job's `accepted` and its one final message (result,
cancelled or error) always, replies to info and cancel up to OUTBOX_REPLIES; progress messages are
dropped while the client is behind. The outbox holds at most two messages per job of that client, and
jobs are bounded by the queue (max_pending), so its size is bounded too. Drops are logged once per
client. Used by the loop thread only.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

import zmq

from seethrough_core.protocol import Frame

log = logging.getLogger(__name__)

OUTBOX_REPLIES = 64  # info/cancel replies kept for a client that is behind; more are dropped


class Delivery(Enum):
    """What a message is owed: how the server treats it when the client's pipe is full."""

    PROGRESS = "progress"  # dropped (the next one, or the final message, supersedes it)
    REPLY = "reply"  # kept up to OUTBOX_REPLIES per client, then dropped: the client may ask again
    PROMISED = "promised"  # a job's accepted and final message: kept while the client is connected


@dataclass
class _Owed:
    """Messages owed to one client whose pipe is full, oldest first."""

    messages: deque[tuple[list[Frame], Delivery]] = field(default_factory=deque)
    replies: int = 0  # REPLY messages among them


class Outboxes:
    """The clients' outboxes on one ROUTER socket; ``on_gone(peer)`` hears of a client that vanished
    while its messages were being resent."""

    def __init__(self, router: zmq.Socket, on_gone: Callable[[bytes], None]) -> None:
        self._router = router
        self._on_gone = on_gone
        self._owed: dict[bytes, _Owed] = {}  # clients whose pipe is full
        self._dropped: dict[bytes, int] = {}  # messages dropped per client (logged once per client)

    def __bool__(self) -> bool:
        """Some client is behind: the loop polls more often to resend."""
        return bool(self._owed)

    def send(self, peer: bytes, message: Sequence[Frame], delivery: Delivery) -> bool:
        """Send now, or keep it owed while the client's pipe is full; False if the client is gone."""
        box = self._owed.get(peer)
        if box is None:
            try:
                self._router.send_multipart([peer, *message], flags=zmq.NOBLOCK, copy=False)
                return True
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EHOSTUNREACH:
                    return False
                if exc.errno != zmq.EAGAIN:
                    raise
            box = self._owed[peer] = _Owed()
        if delivery is Delivery.PROMISED or (delivery is Delivery.REPLY and box.replies < OUTBOX_REPLIES):
            box.messages.append((list(message), delivery))
            box.replies += delivery is Delivery.REPLY
        else:
            self._note_drop(peer)
        return True

    def flush(self) -> None:
        """Resend what clients that were behind are owed, oldest first, as far as their pipes take it."""
        for peer, box in list(self._owed.items()):
            while box.messages:
                message, delivery = box.messages[0]
                try:
                    self._router.send_multipart([peer, *message], flags=zmq.NOBLOCK, copy=False)
                except zmq.ZMQError as exc:
                    if exc.errno == zmq.EHOSTUNREACH:
                        self._on_gone(peer)
                        break
                    if exc.errno != zmq.EAGAIN:
                        raise
                    break
                box.messages.popleft()
                box.replies -= delivery is Delivery.REPLY
            else:
                del self._owed[peer]

    def forget(self, peer: bytes) -> None:
        """The client is gone: nothing is owed to it any more."""
        self._owed.pop(peer, None)
        self._dropped.pop(peer, None)

    def owed_promised(self) -> int:
        """Promised messages waiting; read from another thread it is a snapshot, good enough to wait on."""
        return sum(
            kind is Delivery.PROMISED for box in list(self._owed.values()) for _, kind in list(box.messages)
        )

    def clients_behind(self) -> int:
        return len(self._owed)

    def _note_drop(self, peer: bytes) -> None:
        count = self._dropped.get(peer, 0)
        self._dropped[peer] = count + 1
        if count == 0:
            log.warning(
                "client %s is not reading its messages: its progress messages (and replies beyond %d) "
                "are dropped while it is behind; its jobs' final messages are kept. Logged once per client.",
                peer.hex(),
                OUTBOX_REPLIES,
            )
