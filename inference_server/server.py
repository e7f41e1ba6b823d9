"""The inference server: one ROUTER socket for every client, one worker thread for the GPU.

The loop thread owns both sockets (the clients' ROUTER and the worker's inproc PAIR) and never
runs the model, so info and cancel are answered at once even mid-generation. Jobs run in FIFO
order. Every send to a client is non-blocking with ROUTER_MANDATORY: a message for a client that
went away fails at once instead of blocking or vanishing silently, and that client's running job
is cancelled so the GPU moves on. No input, however malformed, escapes the loop as an exception.

A client that does not read fills its pipe; what it is still owed waits in its outbox (outbox.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import zmq

from seethrough_core import __version__
from seethrough_core.client import SeeThroughClient
from seethrough_core.endpoint import (
    DEFAULT_ENDPOINT,
    Endpoint,
    EndpointError,
    check_bind_allowed,
    parse_endpoint,
)
from seethrough_core.errors import SeeThroughError
from seethrough_core.limits import (
    MAX_BOXES,
    MAX_FRAMES,
    MAX_MESSAGE_BYTES,
    MAX_QUEUED_BYTES,
    MAX_QUEUED_BYTES_PER_CLIENT,
)
from seethrough_core.protocol import (
    PROTOCOL_VERSION,
    Accepted,
    Cancelled,
    CancelRequest,
    ErrorCode,
    ErrorReply,
    Frame,
    GenerateRequest,
    InfoReply,
    InfoRequest,
    ProtocolError,
    SetLoraRequest,
    decode_request,
    new_id,
)
from seethrough_core.vocabulary import DEFAULT_MAX_QUEUE

from .auth import CurveSettings, Gatekeeper, HandshakeLog
from .intake import IntakeGuard
from .job_queue import JobQueue, QueueFullError, ServerJob, held_bytes
from .memory import free_memory, memory_kind
from .model_errors import RequestError
from .outbox import Delivery, Outboxes
from .ports import port_owner
from .worker import Worker

if TYPE_CHECKING:  # the pipeline module imports torch; the server runs without it until loading
    from .pipeline import SeeThroughPipeline

log = logging.getLogger(__name__)

_POLL_MS = 100  # how often the loop checks for a stop request
# Complete messages that may wait per connection before ZeroMQ stops reading it. (1 is not
# enough with CURVE: measured, a CURVE connection then delivers nothing at all.)
_RECEIVE_HWM = 2
# How far a connection may get ahead of the loop (inference_server.intake): one maximum message
# plus the kernel's receive buffer. Clients that wait for `accepted` before sending the next large
# request (the reference client does) never come near it.
INTAKE_SLACK_BYTES = 32 << 20
_RESEND_POLL_MS = 10  # how often the loop retries outboxes of clients that are behind
_SHUTDOWN_RESEND_S = 1.0  # on shutdown, how long clients that are behind get to catch up


@dataclass
class ServerConfig:
    endpoint: str = DEFAULT_ENDPOINT  # "tcp://127.0.0.1:*" binds an ephemeral port (tests)
    allow_remote: bool = False
    device: str = "cuda"  # where free memory is measured; the pipeline's identity may refine it
    model: str = ""  # what is being loaded, for info replies before the pipeline is ready
    max_pending: int = DEFAULT_MAX_QUEUE
    max_queued_bytes: int = MAX_QUEUED_BYTES  # what waiting jobs may hold in all (job_queue.py)
    max_queued_bytes_per_client: int = MAX_QUEUED_BYTES_PER_CLIENT
    max_frames: int = MAX_FRAMES
    max_message_bytes: int = MAX_MESSAGE_BYTES
    # CURVE: the server's NAME.key_secret file and the folder of the clients' NAME.key files. With
    # both, only those clients are served, and an address other machines can reach is allowed.
    server_key: str | None = None
    client_keys: str | None = None
    shutdown_grace_s: float = 10.0  # how long a running job may take to stop on shutdown


class AddressInUseError(EndpointError):
    """Another process listens on the port."""


def describe_pipeline(pipeline: SeeThroughPipeline) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(model identity, LoRA identity or None) from the pipeline's flat identity map.

    {"model": m, "lora": l, "lora_scale": s, "device": d, ...} becomes
    ({"name": m, "device": d, ...}, {"name": l, "scale": s}).
    """
    identity = dict(pipeline.identity)
    lora_keys = [key for key in identity if key == "lora" or key.startswith("lora_")]
    lora = {("name" if key == "lora" else key.removeprefix("lora_")): identity.pop(key) for key in lora_keys}
    model = {"name": str(identity.pop("model", "")), **identity}
    return model, (lora if lora.get("name") else None)


class SeeThroughServer:
    """Call bind(), then serve_forever() (blocking) or start() (a thread); stop() from anywhere."""

    def __init__(
        self, load_pipeline: Callable[[], SeeThroughPipeline], config: ServerConfig | None = None
    ) -> None:
        self.config = config or ServerConfig()
        self._load_pipeline = load_pipeline
        self._context = zmq.Context()
        self._router: zmq.Socket | None = None
        self._events: zmq.Socket | None = None
        self._queue = JobQueue(
            self.config.max_pending, self.config.max_queued_bytes, self.config.max_queued_bytes_per_client
        )
        self._jobs: dict[str, ServerJob] = {}  # queued or running, until their last message is sent
        self._outboxes: Outboxes | None = None  # what clients that are behind are owed; set by bind()
        self._worker: Worker | None = None
        self._gatekeeper: Gatekeeper | None = None  # CURVE, when the config has keys
        self._intake: IntakeGuard | None = None  # watches the router's connections; set by bind()
        self._pipeline: SeeThroughPipeline | None = None
        # Checks a prompt against the model's tokenizer limit; set once the model is loaded.
        self._check_prompt: Callable[[str, list[str]], None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.endpoint = ""  # the bound address, with the real port
        self.load_error: str | None = None  # set when the model failed to load

    # --- life cycle -----------------------------------------------------------------------------------

    def bind(self) -> str:
        """Check the address and bind; fast, so address mistakes show before a long model load."""
        try:
            endpoint = parse_endpoint(self.config.endpoint, for_bind=True)
            curve = self._curve_settings()
            check_bind_allowed(
                endpoint, allow_remote=self.config.allow_remote, authenticated=curve is not None
            )
            if curve is not None:
                self._gatekeeper = Gatekeeper(self._context, curve)
            self._router = self._bind_router(endpoint)
        except BaseException:
            if self._gatekeeper is not None:
                self._gatekeeper.stop()
            self._context.term()  # a server that cannot bind is over; leave no I/O thread behind
            raise
        self.endpoint = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        self._outboxes = Outboxes(self._router, self._client_gone)
        if self._intake is not None:
            self._intake.start()
        return self.endpoint

    def _curve_settings(self) -> CurveSettings | None:
        server_key, client_keys = self.config.server_key, self.config.client_keys
        if server_key is None and client_keys is None:
            return None
        if server_key is None or client_keys is None:
            raise EndpointError(
                "CURVE needs both the server's secret key file (--server-key NAME.key_secret) and the "
                "folder of the clients' public keys (--client-keys DIR); make them with "
                "`seethrough keys create`"
            )
        return CurveSettings.from_paths(server_key, client_keys)

    def _bind_router(self, endpoint: Endpoint) -> zmq.Socket:
        router = self._context.socket(zmq.ROUTER)
        if self._gatekeeper is not None:
            self._gatekeeper.secure(router)
        router.ipv6 = endpoint.needs_ipv6  # e.g. tcp://[::1]:5555
        router.linger = 1000
        router.router_mandatory = True  # unknown client: EHOSTUNREACH instead of a silent drop
        router.sndhwm = 1000
        # Memory per client: ZeroMQ hands over a multipart message only once all its frames have
        # arrived. One complete message waits per connection (ZeroMQ stops reading it beyond
        # that); no frame may be larger than a whole legal message (a bigger one costs the
        # connection before it is allocated); and as ZeroMQ cannot limit the number of frames,
        # the intake guard drops a connection whose unfinished message grows past the limit.
        # A message that is merely too big or has too many frames is answered with "too_large".
        router.rcvhwm = _RECEIVE_HWM
        router.maxmsgsize = self.config.max_message_bytes
        handshakes = HandshakeLog() if self._gatekeeper is not None else None
        self._intake = IntakeGuard(router, self.config.max_message_bytes + INTAKE_SLACK_BYTES, handshakes)
        try:
            router.bind(endpoint.url)
        except zmq.ZMQError as exc:
            self._intake.stop()
            self._intake = None
            router.close(linger=0)
            if exc.errno == zmq.EADDRINUSE:
                raise AddressInUseError(_address_in_use_message(endpoint.url, endpoint.port)) from None
            raise EndpointError(f"cannot listen on {endpoint.url}: {exc.strerror}") from None
        return router

    def serve_forever(self) -> None:
        """Load the model in the worker and answer clients until stop(); returns after a clean shutdown."""
        if self._router is None:
            self.bind()
        events_address = f"inproc://seethrough-events-{new_id()}"
        self._events = self._context.socket(zmq.PAIR)
        self._events.bind(events_address)
        log.info(
            "listening on %s (protocol %d%s); loading the model",
            self.endpoint,
            PROTOCOL_VERSION,
            ", CURVE: only clients with a key in " + str(self.config.client_keys) if self._gatekeeper else "",
        )
        self._worker = Worker(
            self._load_pipeline, self._queue, self._context, events_address, describe_pipeline
        )
        self._worker.start()
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._events, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(_RESEND_POLL_MS if self._outboxes else _POLL_MS))
                if self._events in ready:
                    self._on_worker_event(self._events.recv_multipart(copy=False))
                if self._router in ready:
                    frames = self._router.recv_multipart(copy=False)
                    if self._intake is not None:
                        self._intake.taken(frames)
                    self._on_client_message(frames)
                    del frames  # a large request is freed now, not when the next one arrives
                if self._outboxes:
                    self._outboxes.flush()
        finally:
            self._shut_down()

    def start(self) -> threading.Thread:
        """serve_forever() on a thread (tests, benchmarks, embedding); returns once bound."""
        self.bind()
        self._thread = threading.Thread(target=self.serve_forever, name="seethrough-server", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, wait: bool = True) -> None:
        """Ask the loop to finish (safe from any thread and from signal handlers)."""
        self._stop.set()
        if wait and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.config.shutdown_grace_s + 5)

    def wait_ready(self, timeout_s: float) -> bool:
        """True once the model is loaded (tests and benchmarks); False on timeout or load failure."""
        deadline = time.monotonic() + timeout_s
        while self._pipeline is None and self.load_error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._pipeline is not None

    def owed_messages(self) -> int:
        """Promised messages (accepted, final) waiting for clients that are behind (tests, monitoring).

        Read from another thread it is a snapshot; good enough to wait on."""
        return self._outboxes.owed_promised() if self._outboxes is not None else 0

    def clients_behind(self) -> int:
        """Clients whose pipe is full and who have an outbox (tests, monitoring)."""
        return self._outboxes.clients_behind() if self._outboxes is not None else 0

    # --- clients --------------------------------------------------------------------------------------

    def _on_client_message(self, frames: list[zmq.Frame]) -> None:
        received = time.monotonic()
        peer, body = frames[0].bytes, frames[1:]
        if len(body) > 1 and len(body[0]) == 0 and _peer_socket_type(frames[1]) == "REQ":
            # REQ sockets put an empty delimiter first, and allow one reply per request, where a
            # job sends many: answer in their envelope so the author reads why. (A DEALER that
            # sends an empty first frame gets the plain not_msgpack error, without an envelope.)
            message = "REQ sockets cannot receive progress messages; connect with a DEALER socket"
            reply = ErrorReply(ErrorCode.INVALID_FIELD, message, "socket").encode()
            self._send(peer, reply, envelope=[b""])
            return
        try:
            request = decode_request(
                body, max_frames=self.config.max_frames, max_bytes=self.config.max_message_bytes
            )
            if isinstance(request, InfoRequest):
                self._send(peer, self._info(request).encode())
            elif isinstance(request, GenerateRequest):
                self._on_generate(peer, request, received)
            elif isinstance(request, CancelRequest):
                self._on_cancel(peer, request)
            elif isinstance(request, SetLoraRequest):  # queued like a job: runs between generations
                self._queue_job(ServerJob(new_id(), request, peer, received_at=received))
        except ProtocolError as exc:
            log.info("bad request from %s: %s (%s)", peer.hex(), exc, exc.code)
            self._send(peer, ErrorReply.from_exception(exc).encode())
        except Exception as exc:  # a bug must cost one request, never the server
            log.exception("error while handling a request")
            self._send(peer, ErrorReply(ErrorCode.SERVER_ERROR, f"internal server error: {exc}").encode())

    def _info(self, request: InfoRequest) -> InfoReply:
        pipeline = self._pipeline
        if pipeline is not None:
            model, lora = describe_pipeline(pipeline)
        else:
            model, lora = {"name": self.config.model}, None
        device = str(model.get("device", self.config.device))
        # While the worker imports torch, asking torch here would block this loop until it is done.
        free, kind = free_memory(device) if pipeline is not None else (None, memory_kind(device))
        job_state = job_position = None
        if request.job_id is not None:
            job_position = self._queue.position(request.job_id)
            if request.job_id not in self._jobs:
                job_state = "unknown"
            else:
                job_state = "running" if job_position is None else "queued"
        return InfoReply(
            request_id=request.request_id,
            server_version=__version__,
            state="ready" if pipeline is not None else "loading",
            model=model,
            lora=lora,
            device=device,
            free_memory_bytes=free,
            memory_kind=kind,
            queue_length=len(self._queue),
            is_noise=pipeline is not None and bool(pipeline.is_noise),
            max_boxes=pipeline.max_boxes if pipeline is not None else MAX_BOXES,
            max_prompt_tokens=pipeline.max_prompt_tokens if pipeline is not None else None,
            job_state=job_state,
            job_queue_position=job_position,
        )

    def _on_generate(self, peer: bytes, request: GenerateRequest, received: float) -> None:
        settings = request.settings
        if self._pipeline is not None and len(settings.descriptions) > self._pipeline.max_boxes:
            raise ProtocolError(
                ErrorCode.INVALID_FIELD,
                f"{len(settings.descriptions)} boxes; this model takes at most {self._pipeline.max_boxes}",
                "descriptions",
                request.request_id,
            )
        if self._check_prompt is not None:  # while the model loads, the worker checks it later
            try:
                self._check_prompt(settings.scene_prompt, settings.descriptions)
            except RequestError as exc:
                raise ProtocolError(
                    ErrorCode.INVALID_FIELD, exc.message, exc.field, request.request_id
                ) from None
        # Pool full-size masks now: a queued job then holds 16 KB of token grids, not up to 67 MB.
        # A PNG/JPEG OSCR image stays encoded (checked, not decoded): the worker decodes it.
        request.masks, request.mask_kind = request.token_grids(), "token_grid"
        self._queue_job(
            ServerJob(new_id(), request, peer, received_at=received, held_bytes=held_bytes(request))
        )

    def _queue_job(self, job: ServerJob) -> None:
        request, peer = job.request, job.owner
        try:
            position = self._queue.put(job)
        except QueueFullError as exc:
            raise ProtocolError(ErrorCode.QUEUE_FULL, str(exc), "", request.request_id) from None
        self._jobs[job.job_id] = job
        # Sent before the loop forwards any worker event, so `accepted` always precedes `progress`.
        self._send(peer, Accepted(request.request_id, job.job_id, position).encode(), Delivery.PROMISED)
        log.info("job %s queued from %s (%d ahead)", job.job_id, peer.hex(), position)

    def _on_cancel(self, peer: bytes, request: CancelRequest) -> None:
        job = self._jobs.get(request.job_id)
        if job is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_JOB,
                f"no job {request.job_id!r} is queued or running: it finished already, or never existed",
                "job_id",
                request.request_id,
                request.job_id,
            )
        job.cancel_requests.append((peer, request.request_id))
        if self._queue.remove_pending(job.job_id) is not None:
            self._end_cancelled(job, was_running=False)
        else:
            job.cancel_event.set()  # the worker stops at the next step and reports b"cancelled"

    # --- worker ---------------------------------------------------------------------------------------

    def _on_worker_event(self, frames: list[zmq.Frame]) -> None:
        kind = frames[0].bytes
        if kind == b"ready":
            self._pipeline = self._worker.pipeline if self._worker else None
            if self._pipeline is not None:
                self._check_prompt = self._pipeline.prompt_checker()
            log.info(
                "ready: serving on %s. Point the Blender add-on at this address; Ctrl-C stops.", self.endpoint
            )
            return
        if kind == b"load_failed":
            self.load_error = frames[1].bytes.decode(errors="replace")
            log.error("the model could not be loaded; stopping: %s", self.load_error)
            self._stop.set()
            return
        job = self._jobs.get(frames[1].bytes.decode())
        if job is None:
            return
        if kind == b"send":
            self._send_to_owner(job, frames[2:], Delivery.PROGRESS)
            return
        if frames[2].bytes == b"cancelled":
            self._end_cancelled(job, was_running=True)
            return
        del self._jobs[job.job_id]
        self._send_to_owner(job, frames[3:])
        too_late = "the job finished before the cancel took effect"
        for peer, request_id in job.cancel_requests:
            if peer != job.owner:  # the owner's answer is the result itself
                reply = ErrorReply(ErrorCode.ALREADY_FINISHED, too_late, "job_id", request_id, job.job_id)
                self._send(peer, reply.encode())

    def _end_cancelled(self, job: ServerJob, *, was_running: bool) -> None:
        """Answer the owner and every canceller once; the job is over."""
        self._jobs.pop(job.job_id, None)
        if job.shutting_down:
            self._send_to_owner(job, self._shutdown_error(job))
            return
        owner_request_id = job.request.request_id
        for peer, request_id in job.cancel_requests:
            if peer == job.owner:
                owner_request_id = request_id
            else:
                self._send(peer, Cancelled(request_id, job.job_id, was_running).encode())
        self._send_to_owner(job, Cancelled(owner_request_id, job.job_id, was_running).encode())
        log.info("job %s cancelled (%s)", job.job_id, "was running" if was_running else "was queued")

    def _send_to_owner(
        self, job: ServerJob, frames: Sequence[Frame], delivery: Delivery = Delivery.PROMISED
    ) -> None:
        if not job.owner_gone and not self._send(job.owner, frames, delivery):
            self._client_gone(job.owner)

    def _client_gone(self, peer: bytes) -> None:
        """The client vanished: forget what it was owed, stop spending the GPU on it, drop its queue."""
        if self._outboxes is not None:
            self._outboxes.forget(peer)
        for job in list(self._jobs.values()):
            if job.owner != peer or job.owner_gone:
                continue
            job.owner_gone = True
            if self._queue.remove_pending(job.job_id) is not None:
                self._jobs.pop(job.job_id, None)
            else:
                job.cancel_event.set()  # running: it ends at its next step; its messages go nowhere
        log.info("client %s went away; its jobs are cancelled", peer.hex())

    def _send(
        self,
        peer: bytes,
        frames: Sequence[Frame],
        delivery: Delivery = Delivery.REPLY,
        envelope: Sequence[bytes] = (),
    ) -> bool:
        """Send without ever blocking the loop (outbox.py); False if the client is gone."""
        assert self._outboxes is not None  # bound before any client can send
        return self._outboxes.send(peer, [*envelope, *frames], delivery)

    # --- shutdown -------------------------------------------------------------------------------------

    def _shutdown_error(self, job: ServerJob) -> list[Frame]:
        if self.load_error is not None:
            code, message = ErrorCode.LOAD_FAILED, f"the server could not load its model: {self.load_error}"
        else:
            code, message = ErrorCode.SHUTTING_DOWN, "the server is shutting down; the job did not finish"
        return ErrorReply(code, message, "", job.request.request_id, job.job_id).encode()

    def _shut_down(self) -> None:
        log.info("shutting down")
        for job in self._queue.close():
            self._jobs.pop(job.job_id, None)
            self._send_to_owner(job, self._shutdown_error(job))
        running = self._queue.running
        if running is not None:
            running.shutting_down = not running.cancel_requests  # an asked-for cancel stays a cancel
            running.cancel_event.set()
        # Keep forwarding the worker's last messages until it has stopped (or the grace runs out).
        deadline = time.monotonic() + self.config.shutdown_grace_s
        worker = self._worker
        while worker is not None and worker.is_alive() and self._pipeline is not None:
            if self._events.poll(50):
                self._on_worker_event(self._events.recv_multipart(copy=False))
            if time.monotonic() > deadline:
                log.warning(
                    "the running job did not stop within %.0f s; exiting anyway", self.config.shutdown_grace_s
                )
                break
        while self._events is not None and self._events.poll(0):
            self._on_worker_event(self._events.recv_multipart(copy=False))
        if self._events is not None:
            self._events.close(linger=0)
        # What clients that are behind are still owed gets as long as the router's linger.
        deadline = time.monotonic() + _SHUTDOWN_RESEND_S
        while self._outboxes and time.monotonic() < deadline:
            self._outboxes.flush()
            time.sleep(_RESEND_POLL_MS / 1000)
        if self._router is not None:
            if self._intake is not None:
                self._intake.stop()
            self._router.close()  # lingers briefly so the last error replies go out
        if self._gatekeeper is not None:
            self._gatekeeper.stop()
        intake_alive = self._intake is not None and self._intake.is_alive()
        if (worker is None or not worker.is_alive()) and not intake_alive:
            self._context.term()
        # else: the worker is still loading the model (it cannot be interrupted), or the intake
        # guard has not ended yet; being daemon threads, they end with the process. Terminating
        # the context now would block on their sockets.
        log.info("stopped")


def _peer_socket_type(frame: zmq.Frame) -> str:
    """The sender's socket type from the connection's ZMTP metadata ("REQ", "DEALER", ...)."""
    try:
        return str(frame.get("Socket-Type"))
    except zmq.ZMQError:  # a transport without metadata: judge by the envelope alone
        return "REQ"


def _address_in_use_message(url: str, port: int | None) -> str:
    owner = port_owner(port) if port else None
    text = f"cannot listen on {url}: the address is already in use" + (f" by {owner}. " if owner else ". ")
    try:
        with SeeThroughClient(f"tcp://127.0.0.1:{port}", timeout_s=1.0) as client:
            info = client.info()
        text += (
            f"A SeeThrough server (version {info.server_version}, model {info.model.get('name', '?')}) "
            "is already running there: point the add-on at it, or stop it first. "
        )
    except SeeThroughError:  # some other program
        if owner:
            text += "Stop that program. "
        else:
            text += (
                f"Find it with `lsof -i :{port}` (Linux, macOS) or `netstat -ano | findstr :{port}` "
                "(Windows) and stop it. "
            )
    return text + (
        f"Or pick another port, e.g. --bind tcp://127.0.0.1:{(port or 5555) + 1}, and enter the same "
        "address in the add-on's preferences."
    )
