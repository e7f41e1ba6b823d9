"""Every kind of bad input gets an `error` naming the field, and the server keeps serving."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from server_support import build_request, gated_tiny_pipeline, running_server
from zmq.utils.monitor import recv_monitor_message

from inference_server.server import INTAKE_SLACK_BYTES
from seethrough_core.client import SeeThroughClient, ServerError
from seethrough_core.protocol import ErrorCode, ErrorReply, InfoReply, decode_reply

LIMIT = 4 << 20  # a small message limit, so oversized payloads are cheap to send


@pytest.fixture(scope="module")
def server():
    with running_server(gated_tiny_pipeline(), max_message_bytes=LIMIT) as server:
        yield server


@pytest.fixture
def dealer(server):
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.linger = 0
    socket.connect(server.endpoint)
    yield socket
    socket.close()


def exchange(socket, frames) -> tuple[ErrorReply | InfoReply, list[bytes]]:
    socket.send_multipart(frames)
    assert socket.poll(10_000), "no answer from the server"
    reply = socket.recv_multipart()
    return decode_reply(reply), reply


def valid_frames(**header_changes) -> list[bytes]:
    frames = [bytes(memoryview(f)) for f in build_request(request_id="bad-1").encode()]
    header = msgpack.unpackb(frames[0])
    for key, value in header_changes.items():
        if value is ...:
            del header[key]
        else:
            header[key] = value
    frames[0] = msgpack.packb(header)
    return frames


def with_frames(frames: list[bytes], **replace: bytes) -> list[bytes]:
    frames = list(frames)
    for index, data in replace.items():
        frames[int(index.removeprefix("f"))] = data
    return frames


def corrupt_png() -> list[bytes]:
    frames = valid_frames(oscr_image={"frame": 1, "encoding": "png"})
    buffer = io.BytesIO()
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(buffer, format="PNG")
    frames[1] = buffer.getvalue()[:40] + b"\x00" * 100  # a PNG cut short
    return frames


CASES = {
    "not msgpack": ([b"\xc1\xc1 definitely not msgpack"], ErrorCode.NOT_MSGPACK, ""),
    "empty frame": ([b""], ErrorCode.NOT_MSGPACK, ""),
    "msgpack but not a map": ([msgpack.packb([1, 2, 3])], ErrorCode.NOT_MSGPACK, ""),
    "wrong protocol version": (valid_frames(protocol=99), ErrorCode.UNSUPPORTED_PROTOCOL, "protocol"),
    "unknown type": (valid_frames(type="explode"), ErrorCode.UNKNOWN_TYPE, "type"),
    "missing field": (valid_frames(descriptions=...), ErrorCode.MISSING_FIELD, "descriptions"),
    "mistyped field": (valid_frames(width="256"), ErrorCode.INVALID_FIELD, "width"),
    "mask count != box count": (
        valid_frames(descriptions=["a red car", "an old tree", "a cat"]),
        ErrorCode.INVALID_FIELD,
        "masks",
    ),
    "resolution not a multiple of 16": (valid_frames(width=250), ErrorCode.INVALID_FIELD, "width"),
    "resolution too large": (valid_frames(height=4096), ErrorCode.INVALID_FIELD, "height"),
    "raw image of the wrong size": (
        with_frames(valid_frames(), f1=b"\x00" * 1000),
        ErrorCode.BAD_IMAGE,
        "oscr_image",
    ),
    "corrupt PNG bytes": (corrupt_png(), ErrorCode.BAD_IMAGE, "oscr_image"),
    "frame index out of range": (
        valid_frames(masks={"frame": 7, "dtype": "uint8", "shape": [2, 256, 256]}),
        ErrorCode.INVALID_FIELD,
        "masks.frame",
    ),
    "too many frames": (valid_frames() + [b"x"] * 9, ErrorCode.TOO_LARGE, "frames"),
    # Every frame within the limit (larger ones cost the connection), together over it.
    "oversized payload": (valid_frames() + [b"\x00" * (LIMIT // 2 + 1)] * 2, ErrorCode.TOO_LARGE, "frames"),
    "cancel without job_id": (
        [msgpack.packb({"type": "cancel", "protocol": 1, "request_id": "c1"})],
        ErrorCode.MISSING_FIELD,
        "job_id",
    ),
    "cancel of an unknown job": (
        [msgpack.packb({"type": "cancel", "protocol": 1, "request_id": "c2", "job_id": "nope"})],
        ErrorCode.UNKNOWN_JOB,
        "job_id",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_answered_with_an_error_naming_the_field(dealer, case):
    frames, code, field = CASES[case]
    reply, _ = exchange(dealer, frames)
    assert isinstance(reply, ErrorReply), reply
    assert (reply.code, reply.field) == (code, field), reply.message
    assert reply.message
    if field and case not in ("cancel without job_id", "cancel of an unknown job"):
        assert reply.request_id == "bad-1"  # the client can match the error to its request
    # ... and the same connection is still served.
    info, _ = exchange(dealer, [msgpack.packb({"type": "info", "protocol": 1, "request_id": "after"})])
    assert isinstance(info, InfoReply) and info.request_id == "after"


def test_a_req_socket_gets_a_readable_error_in_its_envelope(server):
    socket = zmq.Context.instance().socket(zmq.REQ)
    socket.linger = 0
    socket.connect(server.endpoint)
    socket.send(msgpack.packb({"type": "info", "protocol": 1, "request_id": "req"}))
    assert socket.poll(10_000)
    reply = decode_reply(socket.recv_multipart())
    socket.close()
    assert reply.code == ErrorCode.INVALID_FIELD and "DEALER" in reply.message


def test_a_dealer_that_sends_an_empty_first_frame_gets_a_plain_error(dealer):
    header = msgpack.packb({"type": "info", "protocol": 1, "request_id": "empty-first"})
    reply, frames = exchange(dealer, [b"", header])
    assert frames[0] != b""  # no REQ envelope: frame 0 is the header
    assert (reply.code, reply.field) == (ErrorCode.NOT_MSGPACK, "")


def test_a_frame_over_the_message_limit_drops_only_that_connection(server, dealer):
    dealer.send_multipart([b"\x00" * (LIMIT + 1)])  # the server disconnects this peer unread
    with SeeThroughClient(server.endpoint, timeout_s=10) as other:
        assert other.info().state == "ready"


def test_after_all_that_a_valid_request_succeeds(server, dealer):
    for frames, _, _ in CASES.values():
        dealer.send_multipart(frames)  # all at once, never reading the answers
    with SeeThroughClient(server.endpoint, timeout_s=10) as client:
        result = client.submit(build_request("still alive", steps=2)).wait(timeout_s=60)
        assert result.image.shape == (256, 256, 3) and result.is_noise


# --- memory: what a client can make the server hold, as this process's peak RSS ----------------------
# The server runs in this process (a thread), so the peak includes the test client's own buffer.
# benchmarks/oversize_bench.py measures a real server process at the real limits.

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self")
MIB = 1 << 20
WAIT_MS = 30_000


def _rss_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _peak_above_now(send) -> tuple[int, object]:
    """(peak RSS growth in bytes while `send()` runs, what it returned)."""
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _rss_kib("VmRSS")
    outcome = send()
    return (_rss_kib("VmHWM") - before) * 1024, outcome


@pytest.fixture
def watched_dealer(server):
    """A DEALER and a monitor that reports when the server drops the connection."""
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.linger = 0
    monitor = socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    socket.connect(server.endpoint)
    yield socket, monitor
    socket.disable_monitor()
    monitor.close(linger=0)
    socket.close()


HEADER = msgpack.packb({"type": "info", "protocol": 1, "request_id": "big"})


# Frames over the limit: dropped before any is stored (before this limit the server held all 8).
# Many legal frames: the intake guard cuts the connection once its unfinished message is LIMIT +
# slack ahead; an unguarded server holds the whole 1 GiB message. The guard samples every 2 ms from
# its own thread, and loopback moves tens of MiB a millisecond, so where it cuts depends on the
# scheduler (189 MiB seen on a loaded 2-core machine for a 36 MiB threshold): the bound is half the
# message, which only a missing guard reaches. benchmarks/oversize_bench.py measures the real figures.
OVERSIZED = {
    "frames over the limit": (LIMIT + MIB, 8, 3 * LIMIT),
    "many legal frames": (3 * MIB, 342, 512 * MIB),
}
_frame, _count, _bound = OVERSIZED["many legal frames"]
assert _frame * _count >= 2 * _bound > 8 * (LIMIT + INTAKE_SLACK_BYTES)


@linux_only
@pytest.mark.parametrize("case", list(OVERSIZED))
def test_oversized_messages_cost_the_connection_not_memory(server, watched_dealer, case):
    frame_bytes, count, bound = OVERSIZED[case]
    socket, monitor = watched_dealer
    block = bytes(frame_bytes)  # one buffer, sent `count` times without copies

    def send():
        socket.send_multipart([HEADER, *([block] * count)], copy=False)
        assert monitor.poll(WAIT_MS), "the server kept the connection"
        return recv_monitor_message(monitor)["event"]

    growth, event = _peak_above_now(send)
    assert event == zmq.EVENT_DISCONNECTED
    assert growth < bound, f"peak RSS grew {growth / MIB:.0f} MiB"
    with SeeThroughClient(server.endpoint, timeout_s=10) as other:
        assert other.info().state == "ready"


@linux_only
def test_a_message_of_legal_frames_over_the_total_is_answered_and_freed(server, watched_dealer):
    socket, _ = watched_dealer
    block = bytes(LIMIT // 2 + 1)

    def send():
        socket.send_multipart([HEADER, *([block] * 3)], copy=False)
        assert socket.poll(WAIT_MS), "no answer"
        return decode_reply(socket.recv_multipart())

    growth, reply = _peak_above_now(send)
    assert (reply.code, reply.field) == (ErrorCode.TOO_LARGE, "frames")
    assert growth < 3 * LIMIT, f"peak RSS grew {growth / MIB:.0f} MiB"


# --- the prompt: checked against the model's token limit before `accepted` --------------------------


def test_a_prompt_longer_than_the_model_reads_is_refused_before_it_is_accepted(server):
    pipeline = gated_tiny_pipeline()
    ran = len(pipeline.calls)
    with SeeThroughClient(server.endpoint, timeout_s=10) as client:
        limit = client.info().max_prompt_tokens
        assert limit == 512
        # Within the 2000-character limit of the protocol, far beyond 512 tokens.
        with pytest.raises(ServerError) as caught:
            client.submit(build_request("a dog, " * 280, boxes=2))
        assert (caught.value.code, caught.value.field) == (ErrorCode.INVALID_FIELD, "scene_prompt")
        assert "512" in caught.value.message and "Shorten" in caught.value.message
        descriptions = ["a car, " * 20] * 8
        descriptions[5] = "a red car, " * 27  # the longest: shortening it helps most
        request = build_request("at night", boxes=1, descriptions=descriptions)
        request.masks = np.repeat(request.masks, 8, axis=0)
        with pytest.raises(ServerError) as caught:
            client.submit(request)
        assert (caught.value.code, caught.value.field) == (ErrorCode.INVALID_FIELD, "descriptions[5]")
    assert len(pipeline.calls) == ran  # neither reached the model
