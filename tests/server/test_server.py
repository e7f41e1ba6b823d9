"""The server end to end: real sockets on 127.0.0.1, the real tiny pipeline, our client."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq
from server_support import build_request, gated_tiny_pipeline, running_server

from seethrough_core.client import JobCancelledError, SeeThroughClient, ServerError
from seethrough_core.protocol import Cancelled, ErrorCode, Progress, Result


@pytest.fixture(scope="module")
def pipeline():
    return gated_tiny_pipeline()


@pytest.fixture(scope="module")
def server(pipeline):
    with running_server(pipeline) as server:
        yield server


@pytest.fixture
def client(server):
    with SeeThroughClient(server.endpoint, timeout_s=10) as client:
        yield client


def test_info_describes_the_tiny_model(client):
    info = client.info()
    assert info.state == "ready"
    assert info.is_noise is True
    assert info.max_boxes == 16
    assert info.device == "cpu" and info.memory_kind == "system" and info.free_memory_bytes > 0
    assert info.model["name"].startswith("random tiny")
    assert info.lora is not None and info.lora["name"] == "random tiny"
    assert info.queue_length == 0


def test_generate_round_trip(client, pipeline):
    request = build_request("on mars", steps=4, preview_interval=2, metadata={"frame": 12, "tag": "shot-3"})
    job = client.submit(request)
    assert job.queue_position == 0
    progress: list[Progress] = []
    result = job.wait(on_progress=progress.append)
    assert result.image.shape == (256, 256, 3) and result.image.dtype == np.uint8
    assert result.is_noise is True
    assert result.prompt == "a photo of a red car and an old tree on mars"
    assert len(result.call_ids) == 2 and all(result.call_ids)
    assert [p.step for p in progress] == [1, 2, 3, 4]
    assert {p.total for p in progress} == {4}
    assert [p.preview is not None for p in progress] == [False, True, False, True]
    assert progress[1].preview.dtype == np.uint8 and progress[1].preview.shape[2] == 3
    assert result.metadata == {"frame": 12, "tag": "shot-3"}
    assert (result.seed, result.steps, result.guidance) == (1, 4, 3.5)
    assert set(result.timings) == {"queue_wait_s", "generation_s", "total_s"}
    assert result.timings["total_s"] >= result.timings["generation_s"] > 0
    assert "denoise_s" in result.model_timings
    assert result.model["name"].startswith("random tiny") and result.job_id == job.id


def test_same_seed_same_image_and_the_server_picks_and_reports_a_seed(client):
    first = client.submit(build_request("determinism", seed=123, steps=2)).wait()
    second = client.submit(build_request("determinism", seed=123, steps=2)).wait()
    np.testing.assert_array_equal(first.image, second.image)
    picked = client.submit(build_request("determinism", seed=None, steps=2)).wait()
    assert 0 <= picked.seed < 2**32
    if picked.seed != 123:
        assert not np.array_equal(picked.image, first.image)


def test_token_grid_masks_are_accepted(client):
    grids = np.zeros((1, 32, 32), dtype=bool)
    grids[0, 8:24, 4:20] = True
    request = build_request("grids", boxes=1, masks=grids, mask_kind="token_grid", steps=1)
    result = client.submit(request).wait()
    assert result.image.shape == (256, 256, 3)


def test_cancel_running_job_stops_before_the_vae_decode(client, pipeline):
    decodes = pipeline.decodes
    pipeline.hold()
    job = client.submit(build_request("cancel me", steps=6))
    assert pipeline.wait_until_held("cancel me") == 1
    job.cancel()
    client.info()  # same socket, answered in order: the server has taken the cancel by now
    pipeline.release()
    events = list(_events_or_error(job))
    assert isinstance(events[-1], Cancelled) and events[-1].was_running
    assert not any(isinstance(e, Result) for e in events)
    assert all(e.step == 1 for e in events if isinstance(e, Progress))
    assert pipeline.decodes == decodes
    assert client.info(job_id=job.id).job_state == "unknown"


def test_cancel_queued_job_and_wait_raises_job_cancelled(client, pipeline):
    pipeline.hold()
    running = client.submit(build_request("runs first", steps=2))
    pipeline.wait_until_held("runs first")
    queued = client.submit(build_request("waits", steps=2))
    assert queued.queue_position == 1
    assert client.info(job_id=queued.id).job_state == "queued"
    queued.cancel()
    with pytest.raises(JobCancelledError):
        queued.wait(timeout_s=10)
    pipeline.release()
    assert running.wait(timeout_s=30).image.shape == (256, 256, 3)
    assert "waits" not in pipeline.calls


def test_two_clients_are_served_in_order_and_info_answers_while_generating(server, pipeline):
    with (
        SeeThroughClient(server.endpoint, 10) as alice,
        SeeThroughClient(server.endpoint, 10) as bob,
        SeeThroughClient(server.endpoint, 10) as watcher,
    ):
        pipeline.hold()
        first = alice.submit(build_request("alice 1", steps=2))
        pipeline.wait_until_held("alice 1")
        second = bob.submit(build_request("bob 1", steps=2))
        third = alice.submit(build_request("alice 2", steps=2))
        assert (first.queue_position, second.queue_position, third.queue_position) == (0, 1, 2)
        started = time.monotonic()
        info = watcher.info()  # while a job is mid-generation
        assert time.monotonic() - started < 1.0
        assert info.queue_length == 3
        calls_before = len(pipeline.calls)
        pipeline.release()
        results = {}

        def wait(name, job):
            results[name] = job.wait(timeout_s=60)

        threads = [threading.Thread(target=wait, args=item) for item in [("b", second), ("a2", third)]]
        for thread in threads:
            thread.start()
        wait("a1", first)
        for thread in threads:
            thread.join(60)
        assert set(results) == {"a1", "b", "a2"}
        assert pipeline.calls[calls_before - 1 :] == ["alice 1", "bob 1", "alice 2"]
        assert results["b"].timings["queue_wait_s"] > 0 and results["b"].job_id == second.id


def test_a_client_that_disconnects_mid_job_does_not_disturb_others(server, pipeline):
    decodes = pipeline.decodes
    pipeline.hold()
    leaver = SeeThroughClient(server.endpoint, 10)
    gone = leaver.submit(build_request("leaver", steps=8))
    pipeline.wait_until_held("leaver")
    leaver.close()  # vanishes mid-job, without cancelling
    with SeeThroughClient(server.endpoint, 10) as stayer:
        job = stayer.submit(build_request("stayer", steps=2))
        time.sleep(0.2)  # the server notices the closed connection
        pipeline.release()
        result = job.wait(timeout_s=60)
        assert result.image.shape == (256, 256, 3)
        # The leaver's job was cancelled when its progress could not be delivered: no decode for it.
        assert pipeline.decodes == decodes + 1
        assert stayer.info(job_id=gone.id).job_state == "unknown"


def test_cancel_from_another_connection_and_unknown_jobs(server, pipeline):
    with SeeThroughClient(server.endpoint, 10) as owner, SeeThroughClient(server.endpoint, 10) as other:
        pipeline.hold()
        job = owner.submit(build_request("cancelled by other", steps=4))
        pipeline.wait_until_held("cancelled by other")
        running = server._queue.running  # the held job
        # A raw DEALER here, to see the reply the other connection gets.
        other_socket = zmq.Context.instance().socket(zmq.DEALER)
        other_socket.linger = 0
        other_socket.connect(server.endpoint)
        from seethrough_core.protocol import CancelRequest, decode_reply

        other_socket.send_multipart(CancelRequest(job_id=job.id).encode())
        assert running is not None and running.cancel_event.wait(10)  # arrived while paused
        pipeline.release()
        assert other_socket.poll(10_000)
        reply = decode_reply(other_socket.recv_multipart())
        assert isinstance(reply, Cancelled) and reply.job_id == job.id
        with pytest.raises(JobCancelledError):
            job.wait(timeout_s=30)
        other_socket.send_multipart(CancelRequest(job_id=job.id).encode())
        assert other_socket.poll(10_000)
        error = decode_reply(other_socket.recv_multipart())
        assert (error.code, error.field) == (ErrorCode.UNKNOWN_JOB, "job_id")
        other_socket.close()
        assert other.info().queue_length == 0


@pytest.mark.slow
def test_slow_steps_longer_than_the_client_timeout_are_waited_for(server, pipeline):
    """Silence longer than timeout_s makes the client ask the server, which says: still running."""
    with SeeThroughClient(server.endpoint, timeout_s=1.0) as client:
        pipeline.hold()
        job = client.submit(build_request("slow", steps=2))
        pipeline.wait_until_held("slow")
        threading.Timer(3.5, pipeline.release).start()  # over three timeouts of silence
        assert job.wait(timeout_s=60).image.shape == (256, 256, 3)


def test_a_prompt_the_model_cannot_read_is_refused_and_the_server_goes_on(client):
    long = " ".join(["zq"] * 600)  # about 1200 T5 tokens in the tiny vocabulary; the model reads 512
    with pytest.raises(ServerError) as info:  # refused at submission, before `accepted`
        client.submit(build_request(long, boxes=1, steps=1))
    assert info.value.code == ErrorCode.INVALID_FIELD and info.value.field == "scene_prompt"
    after = client.submit(build_request("after an error", boxes=1, steps=1)).wait()
    assert after.image.shape == (256, 256, 3)


def _events_or_error(job):
    try:
        yield from job.events(timeout_s=60)
    except ServerError as exc:
        pytest.fail(f"the job failed: {exc}")
