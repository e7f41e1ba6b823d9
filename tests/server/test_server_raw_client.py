"""A minimal client written from docs/protocol.md alone: raw pyzmq + msgpack + numpy.

It deliberately imports nothing from seethrough_core.protocol or seethrough_core.client, so it
checks that the document (not our shared code) describes what the server really does.
"""

from __future__ import annotations

import uuid

import msgpack
import numpy as np
import pytest
import zmq
from server_support import gated_tiny_pipeline, running_server


@pytest.fixture(scope="module")
def endpoint():
    with running_server(gated_tiny_pipeline()) as server:
        yield server.endpoint


class RawClient:
    def __init__(self, endpoint: str) -> None:
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.linger = 0
        self.socket.connect(endpoint)

    def send(self, header: dict, *frames) -> str:
        header = {"protocol": 1, "request_id": uuid.uuid4().hex, **header}
        self.socket.send_multipart([msgpack.packb(header), *frames])
        return header["request_id"]

    def receive(self) -> tuple[dict, list[bytes]]:
        if not self.socket.poll(30_000):
            raise TimeoutError("no answer: is `seethrough serve` running?")
        frames = self.socket.recv_multipart()
        return msgpack.unpackb(frames[0]), frames

    @staticmethod
    def array(header: dict, frames: list[bytes], key: str) -> np.ndarray:
        ref = header[key]
        return np.frombuffer(frames[ref["frame"]], np.dtype(ref["dtype"])).reshape(ref["shape"])

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def raw(endpoint):
    client = RawClient(endpoint)
    yield client
    client.close()


def test_info_from_the_document(raw):
    request_id = raw.send({"type": "info"})
    reply, _ = raw.receive()
    assert reply["type"] == "info_reply" and reply["protocol"] == 1 and reply["request_id"] == request_id
    for key in ("server_version", "state", "model", "lora", "device", "free_memory_bytes", "memory_kind",
                "queue_length", "is_noise", "max_boxes"):  # fmt: skip
        assert key in reply, key
    assert reply["state"] == "ready" and reply["is_noise"] is True and reply["max_boxes"] == 16


def test_generate_from_the_document(raw):
    oscr = np.zeros((512, 512, 3), np.uint8)
    oscr[100:400, 150:350] = (0, 0, 128)
    masks = np.zeros((1, 512, 512), np.uint8)
    masks[0, 100:400, 150:350] = 255
    header = {
        "type": "generate",
        "scene_prompt": "on mars",
        "descriptions": ["a rover"],
        "width": 256,
        "height": 256,
        "steps": 3,
        "seed": 7,
        "mask_kind": "amodal",
        "oscr_image": {"frame": 1, "dtype": "uint8", "shape": list(oscr.shape)},
        "masks": {"frame": 2, "dtype": "uint8", "shape": list(masks.shape)},
        "metadata": {"shot": 4},
    }
    request_id = raw.send(header, oscr, masks)
    accepted, _ = raw.receive()
    assert accepted["type"] == "accepted" and accepted["request_id"] == request_id
    job_id = accepted["job_id"]
    steps = []
    while True:
        reply, frames = raw.receive()
        assert reply["job_id"] == job_id
        if reply["type"] == "progress":
            steps.append((reply["step"], reply["total"]))
            continue
        assert reply["type"] == "result", reply
        break
    assert steps == [(1, 3), (2, 3), (3, 3)]
    image = raw.array(reply, frames, "image")
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8
    assert reply["seed"] == 7 and reply["is_noise"] is True and reply["metadata"] == {"shot": 4}
    assert reply["prompt"] == "a photo of a rover on mars"
    assert set(reply["timings"]) >= {"queue_wait_s", "generation_s", "total_s"}


def test_png_oscr_and_token_grid_masks_from_the_document(raw):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((300, 400, 3), 40, np.uint8)).save(buffer, format="PNG")
    grids = np.zeros((2, 32, 32), np.uint8)
    grids[0, 4:20, 4:20] = 1
    grids[1, 10:30, 12:28] = 1
    header = {
        "type": "generate",
        "scene_prompt": "",
        "descriptions": ["a cat", "a lamp"],
        "width": 256,
        "height": 256,
        "steps": 1,
        "mask_kind": "token_grid",
        "oscr_image": {"frame": 1, "encoding": "png"},
        "masks": {"frame": 2, "dtype": "uint8", "shape": [2, 32, 32]},
    }
    raw.send(header, buffer.getvalue(), grids)
    kinds = []
    while not kinds or kinds[-1] not in ("result", "error", "cancelled"):
        reply, _ = raw.receive()
        kinds.append(reply["type"])
    assert kinds == ["accepted", "progress", "result"]
    assert 0 <= reply["seed"] <= 4294967295  # nil seed: the server picked one


def test_cancel_and_error_from_the_document(raw):
    request_id = raw.send({"type": "cancel", "job_id": "no-such-job"})
    reply, _ = raw.receive()
    assert reply["type"] == "error" and reply["code"] == "unknown_job" and reply["field"] == "job_id"
    assert reply["request_id"] == request_id
    request_id = raw.send({"type": "generate", "scene_prompt": "x"})
    reply, _ = raw.receive()
    assert reply["type"] == "error" and reply["code"] == "missing_field" and reply["request_id"] == request_id
