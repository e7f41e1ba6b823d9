"""Every kind of bad input gets an `error` naming the field, and the server keeps serving."""

from __future__ import annotations

import io

import msgpack
import numpy as np
import pytest
import zmq
from server_support import build_request, gated_tiny_pipeline, running_server

from seethrough_core.client import SeeThroughClient
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
