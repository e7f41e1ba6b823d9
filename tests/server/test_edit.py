"""Regional regeneration (`generate` with `edit`): the real tiny model behind a real server."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import torch
import zmq
from server_support import build_request, gated_tiny_pipeline, run_in_process, running_server

from inference_server.edit_blend import LatentEdit, composite, encode_image, feather
from inference_server.model_errors import RequestError
from seethrough_core.client import SeeThroughClient
from seethrough_core.edit_input import EditInput
from seethrough_core.protocol import ErrorCode, ErrorReply, GenerateRequest, ProtocolError, decode_reply

SIDE = 256


def region_mask() -> np.ndarray:
    mask = np.zeros((SIDE, SIDE), dtype=np.uint8)
    mask[64:160, 72:200] = 255
    return mask


@pytest.fixture(scope="module")
def pipeline():
    return gated_tiny_pipeline()


@pytest.fixture(scope="module")
def server(pipeline):
    with running_server(pipeline) as server:
        yield server


@pytest.fixture(scope="module")
def previous(server) -> np.ndarray:
    with SeeThroughClient(server.endpoint, timeout_s=30) as client:
        return client.submit(build_request("the first picture", steps=3)).wait(timeout_s=120).image


def test_an_edit_changes_only_inside_the_mask(server, previous):
    mask = region_mask()
    request = build_request("the first picture", steps=3, seed=7, edit=EditInput(previous, mask, 1.0))
    with SeeThroughClient(server.endpoint, timeout_s=30) as client:
        result = client.submit(request).wait(timeout_s=120)
    outside = mask == 0
    assert np.array_equal(result.image[outside], previous[outside])  # byte for byte
    inside = ~outside
    changed = (result.image[inside] != previous[inside]).any(axis=-1)
    assert changed.mean() > 0.5
    assert {"encode_edit_s", "composite_s"} <= set(result.model_timings)


def test_strength_below_one_runs_the_end_of_the_schedule(server, previous):
    request = build_request(steps=4, edit=EditInput(previous, region_mask(), 0.3))
    with SeeThroughClient(server.endpoint, timeout_s=30) as client:
        progress = []
        client.submit(request).wait(on_progress=progress.append, timeout_s=120)
    assert [(p.step, p.total) for p in progress] == [(1, 2), (2, 2)]  # int(4 - 4 * 0.3) = 2 skipped


def test_a_lower_strength_stays_closer_to_the_previous_image(pipeline, previous):
    # The tiny VAE has random weights, so pixel distances say nothing about the picture; the latents
    # are what strength acts on: compare the final latents inside the region with the previous ones.
    inner = pipeline.inner
    request = build_request(steps=4, seed=5)
    edit = EditInput(previous, region_mask())
    reference = encode_image(inner.vae, previous)
    inside = LatentEdit.prepare(inner.vae, edit, torch.zeros_like(reference)).inside
    distances = {}
    for strength in (1.0, 0.3):
        latents = []
        run_in_process(
            inner,
            request,
            step_callback=lambda info, out=latents: out.append(info.latents.clone()),
            edit=EditInput(previous, edit.mask, strength),
        )
        final = latents[-1]
        assert torch.equal(final[~inside], reference[~inside])  # pinned to the previous image
        distances[strength] = float((final - reference)[inside].abs().mean())
    assert distances[0.3] < 0.8 * distances[1.0], distances


def test_the_pipeline_refuses_a_bad_edit_naming_the_field(pipeline, previous):
    request = build_request(steps=1)
    with pytest.raises(RequestError) as caught:
        run_in_process(pipeline.inner, request, edit=EditInput(previous, np.zeros((SIDE, SIDE), np.uint8)))
    assert caught.value.field == "edit.mask" and "empty" in caught.value.message


def test_edit_round_trips_through_the_protocol(previous):
    from seethrough_core.protocol import decode_request

    request = build_request(edit=EditInput(previous, region_mask(), 0.5))
    decoded = decode_request(request.encode())
    assert isinstance(decoded, GenerateRequest) and decoded.edit is not None
    assert np.array_equal(decoded.edit.image, previous)
    assert np.array_equal(decoded.edit.region(), region_mask() == 255)
    assert decoded.edit.strength == 0.5
    assert decode_request(build_request().encode()).edit is None


def test_the_client_side_checks_the_edit_before_sending(previous):
    with pytest.raises(ProtocolError) as caught:
        build_request(edit=EditInput(previous[:128], region_mask())).encode()
    assert (caught.value.code, caught.value.field) == (ErrorCode.INVALID_FIELD, "edit.image")


# --- bad edits on the wire: frames built by hand, as a client in another language might send them ------


def edit_frames(**edit_changes) -> list[bytes]:
    image = np.zeros((SIDE, SIDE, 3), np.uint8)
    frames = [
        bytes(memoryview(f))
        for f in build_request(request_id="edit-1", edit=EditInput(image, region_mask())).encode()
    ]
    header = msgpack.unpackb(frames[0])
    for key, value in edit_changes.items():
        if key.startswith("frame"):
            frames[header["edit"][key.removeprefix("frame_")]["frame"]] = value
        else:
            header["edit"][key] = value
    frames[0] = msgpack.packb(header)
    return frames


def small_image_frames() -> list[bytes]:
    frames = edit_frames(frame_image=b"\x00" * (128 * SIDE * 3))
    header = msgpack.unpackb(frames[0])
    header["edit"]["image"]["shape"] = [128, SIDE, 3]
    frames[0] = msgpack.packb(header)
    return frames


def soft_mask_frames() -> list[bytes]:
    soft = region_mask()
    soft[64:70] = 128
    return edit_frames(frame_mask=soft.tobytes())


def not_a_map_frames() -> list[bytes]:
    frames = edit_frames()
    frames[0] = msgpack.packb({**msgpack.unpackb(frames[0]), "edit": "yes"})
    return frames


BAD_EDITS = {
    "wrong image size": (small_image_frames(), "edit.image", "256, 256, 3"),
    "non-binary mask": (soft_mask_frames(), "edit.mask", "binary"),
    "empty mask": (edit_frames(frame_mask=bytes(SIDE * SIDE)), "edit.mask", "empty"),
    "strength 0": (edit_frames(strength=0.0), "edit.strength", "(0, 1]"),
    "strength above 1": (edit_frames(strength=1.5), "edit.strength", "(0, 1]"),
    "edit not a map": (not_a_map_frames(), "edit", "map"),
}


@pytest.mark.parametrize("case", list(BAD_EDITS))
def test_a_bad_edit_gets_invalid_field_and_the_server_keeps_serving(server, case):
    frames, field, words = BAD_EDITS[case]
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.linger = 0
    socket.connect(server.endpoint)
    try:
        socket.send_multipart(frames)
        assert socket.poll(10_000), "no answer from the server"
        reply = decode_reply(socket.recv_multipart())
    finally:
        socket.close()
    assert isinstance(reply, ErrorReply), reply
    assert (reply.code, reply.field, reply.request_id) == (ErrorCode.INVALID_FIELD, field, "edit-1")
    assert words in reply.message
    with SeeThroughClient(server.endpoint, timeout_s=10) as client:
        assert client.info().state == "ready"


# --- the pixel composite -------------------------------------------------------------------------------


def test_the_feather_rises_inside_the_mask_only():
    region = np.zeros((40, 40), dtype=bool)
    region[10:30, 10:30] = True
    weight = feather(region, 4)
    assert (weight[~region] == 0).all()
    assert weight[10, 20] == pytest.approx(1 / 5) and weight[14, 20] == 1.0  # edge pixel, 4 px in
    assert (weight[region] > 0).all()
    edge_of_frame = np.ones((20, 20), dtype=bool)
    assert (feather(edge_of_frame, 4) == 1).all()  # the frame's border is no edge


def test_the_composite_keeps_every_pixel_outside_the_mask():
    rng = np.random.default_rng(0)
    previous, generated = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2))
    region = np.zeros((64, 64), dtype=bool)
    region[8:40, 16:56] = True
    out = composite(previous, generated, region, 4)
    assert np.array_equal(out[~region], previous[~region])
    assert np.array_equal(out[20:28, 28:44], generated[20:28, 28:44])  # deep inside: all new
