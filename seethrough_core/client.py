"""A client of the inference server (docs/protocol.md): no bpy, no torch, safe to call from any thread.

The Blender add-on runs it on a worker thread so the UI never freezes, and may cancel from another
thread: a cancel goes out on a short-lived socket of its own, never on the one a waiting thread
reads. That one DEALER socket serves every other call: whichever thread is waiting pumps it (under a
lock) and sorts replies into per-request mailboxes, so nobody misses a message meant for somebody else.

Every wait is bounded. A request (delivery and answer together) gets `timeout_s`. While a job runs
(or sits in the queue, which can take minutes without a single message), half of `timeout_s` of
silence makes the client ask the server about the job, and the answer gets the other half: a dead
server becomes a `ServerUnavailableError` within `timeout_s` of its last message, a busy one is
waited for, and a restarted one that no longer knows the job raises `JobLostError`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import zmq
from zmq.utils.monitor import recv_monitor_message

from .endpoint import DEFAULT_ENDPOINT, parse_endpoint
from .errors import SeeThroughError
from .keys import ClientKeys
from .protocol import (
    Accepted,
    Cancelled,
    CancelRequest,
    ErrorCode,
    ErrorReply,
    GenerateRequest,
    InfoReply,
    InfoRequest,
    LoraSet,
    Message,
    Progress,
    ProtocolError,
    Result,
    SetLoraRequest,
    decode_reply,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
_POLL_SLICE_S = 0.05  # the longest a waiting thread holds the socket before others get a turn
# One connection at a time: up once the ZMTP handshake succeeded (so a non-ZeroMQ program on the
# port never counts as a server), down at any disconnect.
# Failed handshakes say why a server never answers: CURVE keys that do not match, or one side
# using CURVE and the other not.
_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
_CONNECTION_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | _HANDSHAKE_FAILED
START_HINT = (
    "Start it with `seethrough serve --model black-forest-labs/FLUX.1-dev --lora PATH/lora.safetensors` "
    "(or `seethrough serve --tiny` to test the connection) and check that this address matches its --bind."
)


class ServerUnavailableError(SeeThroughError):
    """No answer from the server within the timeout: not running, wrong address, or hung."""


class ServerError(SeeThroughError):
    """The server answered with an error; `code` and `field` say what and where (see ErrorCode)."""

    def __init__(self, reply: ErrorReply) -> None:
        self.reply = reply
        self.code = reply.code
        self.field = reply.field
        self.message = reply.message
        super().__init__(f"{reply.field}: {reply.message}" if reply.field else reply.message)


class JobLostError(ServerError):
    """The server no longer knows a job it accepted (it was restarted): submitting it again is safe."""


class JobCancelledError(SeeThroughError):
    """The job was cancelled before it produced an image."""


class JobTimeoutError(SeeThroughError, TimeoutError):
    """The job did not finish within the time the caller allowed (the server still answers)."""


ProgressCallback = Callable[[Progress], None]


class _SocketTurn:
    """The socket's lock. The thread that waits for replies holds it in short slices and, between
    slices, steps aside when another thread wants it (a cancel from the UI while a worker waits):
    a plain lock could hand it back to the same waiting thread again and again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.wanted_by = 0  # threads blocked waiting for a turn

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._count_lock:
            self.wanted_by += 1
        try:
            self._lock.acquire()
        finally:
            with self._count_lock:
                self.wanted_by -= 1
        try:
            yield
        finally:
            self._lock.release()

    def step_aside(self) -> None:
        if self.wanted_by:
            time.sleep(0.001)


class SeeThroughClient:
    """Talks to one server. Use as a context manager, or call close()."""

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        context: zmq.Context | None = None,
        keys: ClientKeys | None = None,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        address = parse_endpoint(endpoint)
        self.endpoint = address.url
        self.timeout_s = float(timeout_s)
        self._turn = _SocketTurn()
        self._boxes: dict[str, deque[Message]] = {}
        self._context = context or zmq.Context.instance()
        self._ipv6 = address.needs_ipv6  # e.g. tcp://[::1]:5555
        self.keys = keys
        self._handshake_failure = ""  # why the last handshake failed, for the error message
        self._socket, self._monitor = self._connect(linger_ms=0)  # close() never hangs on a dead server
        self._connected = False
        self._closed = False

    # --- public API ---------------------------------------------------------------------------------

    def info(self, job_id: str | None = None, timeout_s: float | None = None) -> InfoReply:
        """The server's state (model, device, free memory, queue); with job_id, that job's state too.

        ``timeout_s`` bounds delivery and answer together (default: the client's timeout)."""
        request = InfoRequest(job_id=job_id)
        reply = self._request(request, f"info request to {self.endpoint}", timeout_s=timeout_s)
        if not isinstance(reply, InfoReply):
            raise self._unexpected(reply, "info_reply")
        return reply

    def submit(self, request: GenerateRequest | SetLoraRequest) -> Job:
        """Queue a generation (or a LoRA change); returns once the server has accepted it (validation
        errors raise here)."""
        job = Job(self, request)
        self._open_box(request.request_id, job.box)
        try:
            reply = self._request(request, f"generate request to {self.endpoint}", box=job.box)
        except BaseException:
            self._close_box(request.request_id)
            raise
        if not isinstance(reply, Accepted):
            self._close_box(request.request_id)
            raise self._unexpected(reply, "accepted")
        job.accept(reply)
        return job

    def set_lora(self, request: SetLoraRequest, timeout_s: float | None = None) -> LoraSet:
        """Change the server's LoRAs; returns once they are in use (after the jobs queued before).
        ServerError (code lora_failed) names every missing or unfit file; nothing changed then."""
        for event in self.submit(request).events(timeout_s):
            if isinstance(event, LoraSet):
                return event
            if isinstance(event, Cancelled):
                raise JobCancelledError("the LoRA change was cancelled before it ran")
        raise SeeThroughError("the server ended the LoRA change without an answer")

    def cancel(self, job_id: str) -> None:
        """Ask the server to cancel a job; the job itself then ends with `cancelled` (or its result).

        Any thread may call it: it connects a socket of its own for the one message (the server answers
        a cancel from any connection), so it never touches the socket another thread is waiting on."""
        self._check_open()
        frames = CancelRequest(job_id=job_id).encode()
        # Lingers up to the timeout on close, so the cancel still goes out once sent.
        socket, monitor = self._connect(linger_ms=int(self.timeout_s * 1000))
        try:
            if not self._wait_connected(monitor, time.monotonic() + self.timeout_s, connected=False):
                raise self._undeliverable("cancel request")
            try:
                socket.send_multipart(frames, copy=False)
            except zmq.Again:
                raise self._undeliverable("cancel request") from None
        finally:
            socket.disable_monitor()
            monitor.close(linger=0)
            socket.close()

    def close(self) -> None:
        with self._turn():
            if not self._closed:
                self._closed = True
                self._socket.disable_monitor()
                self._monitor.close(linger=0)
                self._socket.close(linger=0)

    def __enter__(self) -> SeeThroughClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ------------------------------------------------------------------------------------

    def _connect(self, linger_ms: int) -> tuple[zmq.Socket, zmq.Socket]:
        """A DEALER socket connecting to the server, and the monitor of its connection.

        A request sent while the server is down must fail within the timeout, not sit in a buffer and
        start a surprise job when the server comes up later; so a send first waits for a live
        connection, watched through the socket monitor. (ZMQ_IMMEDIATE would also do that, but it
        throws away replies not yet read when the connection drops: the server's last words, such as
        "shutting down", would be lost whenever the reading thread was a moment late.)"""
        socket = self._context.socket(zmq.DEALER)
        socket.linger = linger_ms
        socket.sndtimeo = int(self.timeout_s * 1000)
        socket.ipv6 = self._ipv6
        if self.keys is not None:
            self.keys.apply(socket)  # CURVE: encrypted, and the server must prove it holds its key
        monitor = socket.get_monitor_socket(_CONNECTION_EVENTS)
        socket.connect(self.endpoint)
        return socket, monitor

    def _request(
        self,
        message: Message,
        what: str,
        box: deque[Message] | None = None,
        timeout_s: float | None = None,
    ) -> Message:
        """Send one request and wait for its first reply (keyed by request_id): both within one timeout."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        request_id = message.request_id  # type: ignore[attr-defined]
        own_box = box is None
        box = self._open_box(request_id, box)
        try:
            self._send(message, what, deadline)
            reply = self._next(box, deadline)
        finally:
            if own_box:
                self._close_box(request_id)
        if reply is None:
            raise ServerUnavailableError(
                f"no answer to the {what} within {timeout_s:g} s: is the SeeThrough server running "
                f"there? {START_HINT}"
            )
        return reply

    def _send(self, message: Message, what: str, deadline: float | None = None) -> None:
        frames = message.encode()  # validates: bad requests fail here, before any network traffic
        with self._turn():
            self._check_open()
            self._connected = self._wait_connected(
                self._monitor, deadline or time.monotonic() + self.timeout_s, self._connected
            )
            if not self._connected:
                raise self._undeliverable(what)
            try:
                self._socket.send_multipart(frames, copy=False)
            except zmq.Again:
                raise self._undeliverable(what) from None

    def _explain_handshake_failure(self, event: int) -> str:
        if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and self.keys is None:
            # A CURVE server refuses a plain client with a protocol failure; this is a dropped connection
            return (
                f"something at {self.endpoint} accepts connections but drops them during the ZeroMQ "
                "handshake: a server that is stopping or starting, or a program there that is not the "
                "SeeThrough server"
            )
        if self.keys is None:
            return (
                f"the server at {self.endpoint} requires CURVE keys and this client has none: set the "
                "server's public key file and this client's secret key file (add-on preferences: Server "
                "Keys; seethrough batch: --server-public-key and --client-key)"
            )
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return (
                f"the server at {self.endpoint} refused this client's key: its public key "
                f"({self.keys.client.public.decode()}) is not in the server's --client-keys folder; "
                "copy the client's NAME.key file there"
            )
        return (
            f"the CURVE handshake with {self.endpoint} failed: the server public key file does not belong "
            "to this server, or the server runs without --server-key (or it stopped during the handshake)"
        )

    def _undeliverable(self, what: str) -> ServerUnavailableError:
        if self._handshake_failure:
            return ServerUnavailableError(f"could not deliver the {what}: {self._handshake_failure}")
        return ServerUnavailableError(
            f"could not deliver the {what}: nothing answers at {self.endpoint} "
            f"(waited {self.timeout_s:g} s). {START_HINT}"
        )

    def _wait_connected(self, monitor: zmq.Socket, deadline: float, connected: bool) -> bool:
        """Whether a server has completed the ZeroMQ handshake with the monitored socket, waiting up to
        ``deadline`` for it; ``connected``: the state last seen (the caller owns the socket)."""
        while True:
            while monitor.poll(0):
                event = recv_monitor_message(monitor)["event"]
                connected = event == zmq.EVENT_HANDSHAKE_SUCCEEDED
                if connected:  # an earlier failure no longer explains anything
                    self._handshake_failure = ""
                elif event & _HANDSHAKE_FAILED:
                    self._handshake_failure = self._explain_handshake_failure(event)
            remaining = deadline - time.monotonic()
            if connected or remaining <= 0:
                return connected
            monitor.poll(int(min(remaining, _POLL_SLICE_S) * 1000) + 1)

    def _next(self, box: deque[Message], deadline: float) -> Message | None:
        """The next message for `box`, pumping the socket meanwhile; None at the deadline."""
        while True:
            with self._turn():
                if box:
                    return box.popleft()
                self._check_open()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                if self._socket.poll(int(min(remaining, _POLL_SLICE_S) * 1000) + 1, zmq.POLLIN):
                    self._drain()
            self._turn.step_aside()

    def _drain(self) -> None:
        """Receive everything waiting and sort it into mailboxes (the caller holds the lock)."""
        while True:
            try:
                frames = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                message = decode_reply(frames)
            except ProtocolError as exc:
                # Deliver it to whoever waits for that request, so a broken reply fails loudly.
                message = ErrorReply.from_exception(exc)
            key = _routing_key(message)
            box = self._boxes.get(key) if key else None
            if box is None:
                log.debug("dropping a %s nobody waits for (key %r)", message.TYPE, key)
                continue
            if isinstance(message, Accepted):
                # The job's progress may be in this same batch: route its job_id to the job now.
                self._boxes[message.job_id] = box
            box.append(message)

    def _open_box(self, key: str, box: deque[Message] | None = None) -> deque[Message]:
        with self._turn():
            self._boxes[key] = box if box is not None else deque()
            return self._boxes[key]

    def _close_box(self, key: str) -> None:
        with self._turn():
            self._boxes.pop(key, None)

    def _check_open(self) -> None:
        if self._closed:
            raise SeeThroughError("this SeeThroughClient is closed")

    def _unexpected(self, reply: Message, expected: str) -> SeeThroughError:
        if isinstance(reply, ErrorReply):
            return ServerError(reply)
        return SeeThroughError(
            f"the server at {self.endpoint} sent {reply.TYPE!r} where {expected!r} was due"
        )


def _routing_key(message: Message) -> str | None:
    """Job events go to their job's mailbox; everything else to the request that asked for it."""
    if isinstance(message, Progress | Result | Cancelled | LoraSet):
        return message.job_id
    return getattr(message, "request_id", None)


class Job:
    """A generation the server accepted. Iterate `events()` or call `wait()`; `cancel()` from any thread."""

    def __init__(self, client: SeeThroughClient, request: GenerateRequest | SetLoraRequest) -> None:
        self.client = client
        self.request = request
        self.request_id = request.request_id
        self.id = ""
        self.queue_position = 0
        self.box: deque[Message] = deque()
        self.done = False

    def accept(self, reply: Accepted) -> None:
        self.id = reply.job_id
        self.queue_position = reply.queue_position

    def cancel(self) -> None:
        """Ask for cancellation; events() then ends with Cancelled (or with the Result if it was too late)."""
        if not self.done:
            self.client.cancel(self.id)

    def events(self, timeout_s: float | None = None) -> Iterator[Progress | Result | Cancelled | LoraSet]:
        """Progress messages, then the Result (LoraSet for a LoRA change) or Cancelled. ServerError if
        the job failed.

        `timeout_s` bounds the whole job (None: no bound, as long as the server keeps answering).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while not self.done:
                message = self._next_event(deadline)
                if isinstance(message, ErrorReply):
                    self.done = True
                    raise ServerError(message)
                if isinstance(message, Result | Cancelled | LoraSet):
                    self.done = True
                if isinstance(message, Progress | Result | Cancelled | LoraSet):
                    yield message
        finally:
            if self.done:
                self.client._close_box(self.id)
                self.client._close_box(self.request_id)

    def wait(self, on_progress: ProgressCallback | None = None, timeout_s: float | None = None) -> Result:
        """Block until the image is ready; JobCancelledError if it was cancelled, ServerError if it failed."""
        for event in self.events(timeout_s):
            if isinstance(event, Progress):
                if on_progress is not None:
                    on_progress(event)
            elif isinstance(event, Result):
                return event
            else:
                raise JobCancelledError(f"job {self.id} was cancelled")
        raise SeeThroughError(f"job {self.id} already finished; its events were consumed before")

    def _next_event(self, deadline: float | None) -> Message:
        client = self.client
        while True:
            # Half the timeout of silence, then a question that gets the other half.
            quiet_until = time.monotonic() + client.timeout_s / 2
            limit = quiet_until if deadline is None else min(deadline, quiet_until)
            message = client._next(self.box, limit)
            if message is not None:
                return message
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeoutError(
                    f"job {self.id} did not finish within the time allowed; cancel() it or wait longer"
                )
            # Quiet for timeout_s: a long queue or a slow step, or a dead server? Ask.
            state = client.info(job_id=self.id, timeout_s=client.timeout_s / 2).job_state
            if self.box:
                continue  # the job's last message came in while we asked
            if state == "unknown":
                self.done = True
                raise JobLostError(
                    ErrorReply(
                        ErrorCode.UNKNOWN_JOB,
                        f"the server at {client.endpoint} no longer knows job {self.id} (was it restarted?); "
                        "submit it again",
                        "job_id",
                        self.request_id,
                        self.id,
                    )
                )

    def __repr__(self) -> str:
        state = "done" if self.done else "pending"
        return f"Job(id={self.id!r}, request_id={self.request_id!r}, {state})"
