"""seethrough_core.client: timeouts, local checks, threads, and the job life cycle against the real server."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import zmq
from server_support import build_request, gated_tiny_pipeline, running_server

from seethrough_core.client import (
    Job,
    JobCancelledError,
    JobLostError,
    SeeThroughClient,
    ServerError,
    ServerUnavailableError,
)
from seethrough_core.endpoint import EndpointError
from seethrough_core.errors import SeeThroughError
from seethrough_core.protocol import Accepted, ErrorCode, Progress, ProtocolError, Result, decode_request


def nothing_listening() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture(scope="module")
def pipeline():
    return gated_tiny_pipeline()


@pytest.fixture(scope="module")
def server(pipeline):
    with running_server(pipeline) as server:
        yield server


# --- without a server ---------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["info", "submit"])
def test_nothing_listening_is_a_clear_error_within_the_timeout(call):
    endpoint = nothing_listening()
    with SeeThroughClient(endpoint, timeout_s=0.5) as client:
        started = time.monotonic()
        with pytest.raises(ServerUnavailableError) as info:
            client.info() if call == "info" else client.submit(build_request())
        assert time.monotonic() - started < 2.0
    message = str(info.value)
    assert endpoint in message and "seethrough serve" in message


def test_a_server_that_never_answers_times_out():
    mute = zmq.Context.instance().socket(zmq.ROUTER)  # accepts connections, answers nothing
    port = mute.bind_to_random_port("tcp://127.0.0.1")
    try:
        with SeeThroughClient(f"tcp://127.0.0.1:{port}", timeout_s=0.5) as client:
            with pytest.raises(ServerUnavailableError, match="no answer to the info request"):
                client.info()
    finally:
        mute.close(linger=0)


def test_a_port_that_drops_connections_is_not_blamed_on_curve_keys():
    """A listener that accepts and drops every connection (a server being killed, or a program that is not
    the server) fails the ZeroMQ handshake without detail; a plain client was told that the server needs
    CURVE keys, which a CURVE server says with a protocol failure instead."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def drop_every_connection() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.close()

    dropper = threading.Thread(target=drop_every_connection, daemon=True)
    dropper.start()
    endpoint = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    try:
        with SeeThroughClient(endpoint, timeout_s=0.5) as client:
            with pytest.raises(ServerUnavailableError) as info:
                client.info()
    finally:
        stop.set()
        dropper.join(5)
        listener.close()
    message = str(info.value)
    assert "drops them during the ZeroMQ handshake" in message and "CURVE" not in message, message


def test_a_server_that_goes_silent_mid_job_is_noticed_within_the_timeout():
    """A server that accepted a job and then says nothing (hung, or killed with its connection left
    open) is reported within timeout_s of its last message: half the time quiet, half for the answer
    to the job check (before, each got the whole timeout: 2 x timeout_s)."""
    router = zmq.Context.instance().socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    accepted = threading.Event()

    def accept_then_go_silent() -> None:
        peer, *frames = router.recv_multipart()
        request = decode_request(frames)
        router.send_multipart([peer, *Accepted(request.request_id, "job-1", 0).encode()])
        accepted.set()

    thread = threading.Thread(target=accept_then_go_silent)
    thread.start()
    try:
        with SeeThroughClient(f"tcp://127.0.0.1:{port}", timeout_s=2.0) as client:
            job = client.submit(build_request())
            # the reply can reach the client before the server thread marks it sent: wait for the mark
            assert accepted.wait(10)
            started = time.monotonic()
            with pytest.raises(ServerUnavailableError):
                job.wait()
            waited = time.monotonic() - started
        assert 1.0 <= waited < 3.0, f"noticed after {waited:.1f} s with a 2 s timeout"
    finally:
        thread.join(10)
        router.close(linger=0)


def test_bad_addresses_fail_at_construction():
    with pytest.raises(EndpointError, match="ZeroMQ uses tcp://host:port"):
        SeeThroughClient("http://localhost:5555")
    with pytest.raises(ValueError):
        SeeThroughClient("tcp://127.0.0.1:5555", timeout_s=0)


def test_invalid_requests_fail_locally_before_any_network_traffic():
    with SeeThroughClient(nothing_listening(), timeout_s=5) as client:
        started = time.monotonic()
        with pytest.raises(ProtocolError) as info:
            client.submit(build_request(width=1000))
        assert info.value.field == "width" and time.monotonic() - started < 0.5


def test_a_closed_client_says_so():
    client = SeeThroughClient(nothing_listening(), timeout_s=0.5)
    client.close()
    client.close()  # idempotent
    with pytest.raises(SeeThroughError, match="closed"):
        client.info()


# --- against the server -------------------------------------------------------------------------------


def test_events_yields_progress_then_the_result(server):
    with SeeThroughClient(server.endpoint, timeout_s=10) as client:
        job = client.submit(build_request("events", steps=2))
        events = list(job.events(timeout_s=60))
        assert [type(e) for e in events] == [Progress, Progress, Result]
        assert job.done
        with pytest.raises(SeeThroughError, match="already finished"):
            job.wait()


def test_cancel_from_the_ui_thread_while_a_worker_thread_waits(server, pipeline):
    """The add-on's pattern: wait() on a worker thread, cancel() from the main thread."""
    with SeeThroughClient(server.endpoint, timeout_s=10) as client:
        pipeline.hold()
        job = client.submit(build_request("threads", steps=6))
        outcome: list[object] = []
        progress: list[int] = []

        def worker() -> None:
            try:
                outcome.append(job.wait(on_progress=lambda p: progress.append(p.step), timeout_s=60))
            except JobCancelledError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=worker)
        thread.start()
        pipeline.wait_until_held("threads")
        # Let step 1's progress out, but stop the job again at step 2: without that the tiny model
        # can finish all 6 steps before the cancel arrives.
        pipeline.release()
        pipeline.hold()
        while not progress:
            time.sleep(0.01)
        job.cancel()
        client.info()  # same socket, answered in order: the server has taken the cancel by now
        pipeline.release()
        thread.join(60)
        assert len(outcome) == 1 and isinstance(outcome[0], JobCancelledError)
        assert progress and progress[-1] < 6
        assert client.info().queue_length == 0  # the same client still works


def test_many_threads_share_one_client(server):
    with SeeThroughClient(server.endpoint, timeout_s=10) as client:
        replies: list[str] = []
        errors: list[BaseException] = []

        def ask() -> None:
            try:
                for _ in range(5):
                    replies.append(client.info().state)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=ask) for _ in range(4)]
        job = client.submit(build_request("meanwhile", steps=2))
        for thread in threads:
            thread.start()
        result = job.wait(timeout_s=60)
        for thread in threads:
            thread.join(30)
        assert not errors and replies == ["ready"] * 20
        assert result.image.shape == (256, 256, 3)


def test_a_job_the_server_no_longer_knows_fails_instead_of_hanging(server):
    """What a client sees after the server restarted: its liveness check finds the job unknown."""
    with SeeThroughClient(server.endpoint, timeout_s=1.0) as client:
        request = build_request()
        job = Job(client, request)
        job.accept(Accepted(request.request_id, "a-job-from-before-the-restart", 0))
        with pytest.raises(JobLostError) as info:  # a ServerError: submitting it again is safe
            job.wait(timeout_s=10)
        assert info.value.code == ErrorCode.UNKNOWN_JOB and "restarted" in info.value.message


def test_server_stopping_mid_job_is_reported_as_shutting_down(pipeline):
    with running_server(pipeline) as server, SeeThroughClient(server.endpoint, timeout_s=10) as client:
        pipeline.hold()
        job = client.submit(build_request("interrupted", steps=4))
        pipeline.wait_until_held("interrupted")
        running = server._queue.running  # the held job
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        # Release only once the shutdown has reached the job; a fixed sleep loses that race on a
        # loaded machine, and the job then finishes normally instead.
        assert running is not None and running.cancel_event.wait(10)
        pipeline.release()
        # Read only after the server has gone and its connection has dropped (as when Blender's
        # worker is busy at that moment): its last message must still be there.
        stopper.join(30)
        time.sleep(0.2)
        with pytest.raises(ServerError) as info:
            job.wait(timeout_s=30)
        assert info.value.code == ErrorCode.SHUTTING_DOWN


def test_queue_full_is_an_error_on_submit(pipeline):
    with running_server(pipeline, max_pending=1) as server, SeeThroughClient(server.endpoint, 10) as client:
        pipeline.hold()
        running = client.submit(build_request("full 1", steps=1))
        pipeline.wait_until_held("full 1")
        client.submit(build_request("full 2", steps=1))
        with pytest.raises(ServerError) as info:
            client.submit(build_request("full 3", steps=1))
        assert info.value.code == ErrorCode.QUEUE_FULL
        pipeline.release()
        assert running.wait(timeout_s=60).image.shape == (256, 256, 3)
