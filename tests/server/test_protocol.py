"""Messages of seethrough_core/protocol.py and addresses of seethrough_core/endpoint.py, without sockets."""

from __future__ import annotations

import io

import msgpack
import numpy as np
import pytest
from PIL import Image
from protocol_support import request_of, wire_field

from seethrough_core.endpoint import EndpointError, check_bind_allowed, parse_endpoint
from seethrough_core.protocol import (
    PROTOCOL_VERSION,
    Accepted,
    Cancelled,
    CancelRequest,
    ErrorCode,
    ErrorReply,
    GenerateRequest,
    InfoReply,
    InfoRequest,
    Progress,
    ProtocolError,
    Result,
    decode_reply,
    decode_request,
)
from seethrough_core.token_grid import pool_to_token_grid


def make_request(**overrides) -> GenerateRequest:
    masks = np.zeros((2, 256, 320), dtype=np.uint8)
    masks[0, 10:100, 20:200] = 255
    masks[1, 120:250, 100:300] = 255
    fields = dict(
        scene_prompt="on a quiet street",
        descriptions=["a red vintage car", "a cyclist"],
        oscr_image=np.random.default_rng(0).integers(0, 256, (256, 320, 3), dtype=np.uint8),
        masks=masks,
        mask_kind="amodal",
        width=320,
        height=256,
        seed=7,
        steps=4,
        preview_interval=2,
        metadata={"scene": "street", "frame": 3},
    )
    fields.update(overrides)
    return request_of(**fields)


def wire(frames) -> list[bytes]:
    """What arrives at the other end: plain bytes per frame."""
    return [bytes(memoryview(f)) for f in frames]


def header_of(frames) -> dict:
    return msgpack.unpackb(bytes(memoryview(frames[0])))


def tampered(frames, **changes) -> list[bytes]:
    header = header_of(frames)
    for key, value in changes.items():
        if value is ...:
            header.pop(key)
        else:
            header[key] = value
    return [msgpack.packb(header), *wire(frames[1:])]


def error_of(frames, **kwargs) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_request(frames, **kwargs)
    return info.value


# --- round trips ------------------------------------------------------------------------------------


def test_generate_round_trip_keeps_every_field_and_sends_arrays_as_frames():
    request = make_request()
    frames = request.encode()
    assert len(frames) == 3
    header = header_of(frames)
    assert header["type"] == "generate" and header["protocol"] == PROTOCOL_VERSION
    assert header["oscr_image"] == {"frame": 1, "dtype": "uint8", "shape": [256, 320, 3]}
    back = decode_request(wire(frames))
    assert isinstance(back, GenerateRequest)
    for name in ("scene_prompt", "descriptions", "mask_kind", "width", "height", "seed", "steps", "guidance",
                 "preview_interval", "metadata", "request_id", "oscr_jpeg_round_trip", "condition_cache",
                 "step_cache"):  # fmt: skip
        assert wire_field(back, name) == wire_field(request, name), name
    np.testing.assert_array_equal(back.oscr_image, request.oscr_image)
    np.testing.assert_array_equal(back.masks, request.masks)


def test_the_settings_travel_as_header_keys_of_their_own():
    """The request holds one GenerationSettings; the wire keeps the flat keys of docs/protocol.md."""
    request = make_request()
    header = header_of(request.encode())
    assert set(header) == {
        "type", "protocol", "scene_prompt", "descriptions", "width", "height", "seed", "steps", "guidance",
        "preview_interval", "condition_cache", "step_cache", "oscr_image", "masks", "mask_kind", "metadata",
        "request_id", "oscr_jpeg_round_trip", "edit",
    }  # fmt: skip
    assert decode_request(wire(request.encode())).settings == request.settings


def test_a_field_missing_from_the_header_is_refused_unless_the_dataclass_gives_a_default():
    frames = make_request().encode()
    for name in ("width", "height", "descriptions", "masks", "mask_kind"):
        assert error_of(tampered(frames, **{name: ...})).field == name
    back = decode_request(tampered(frames, guidance=..., preview_interval=..., metadata=..., edit=...))
    assert (back.settings.guidance, back.settings.preview_interval, back.metadata, back.edit) == (
        3.5,
        0,
        {},
        None,
    )


def test_decoded_arrays_are_views_of_the_received_frames():
    frames = wire(make_request().encode())
    back = decode_request(frames)
    assert np.shares_memory(back.oscr_image, np.frombuffer(frames[1], np.uint8))


def test_amodal_masks_pool_to_token_grids_like_token_grid_module():
    request = make_request()
    grids = request.token_grids()
    assert grids.shape == (2, 32, 32) and grids.dtype == bool
    for mask, grid in zip(request.masks, grids, strict=True):
        np.testing.assert_array_equal(grid, pool_to_token_grid(mask))


def test_token_grid_masks_any_nonzero_byte_is_inside():
    grids = np.zeros((2, 32, 32), dtype=np.uint8)
    grids[0, 3, 4] = 1
    grids[1, 5, 6] = 200
    request = make_request(masks=grids, mask_kind="token_grid")
    back = decode_request(wire(request.encode()))
    assert back.token_grids()[0, 3, 4] and back.token_grids()[1, 5, 6]
    assert back.token_grids().sum() == 2


def test_bool_frames_with_any_nonzero_byte_decode_as_true():
    frames = wire(make_request(masks=np.ones((2, 32, 32), bool), mask_kind="token_grid").encode())
    frames[2] = bytes([0, 7] * (len(frames[2]) // 2))
    back = decode_request(frames)
    assert back.masks.dtype == bool and back.masks.sum() == back.masks.size // 2


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_oscr_image_may_be_sent_as_png_or_jpeg(fmt):
    image = np.full((256, 320, 3), 120, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    request = make_request(oscr_image=buffer.getvalue())
    header = header_of(request.encode())
    assert header["oscr_image"] == {"frame": 1, "encoding": fmt.lower()}
    back = decode_request(wire(request.encode()))
    assert isinstance(back.oscr_image, bytes)  # checked, kept encoded until the job runs
    pixels = back.oscr_pixels()
    assert pixels.shape == (256, 320, 3)
    assert abs(int(pixels.mean()) - 120) <= 2


def test_reply_messages_round_trip():
    image = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    messages = [
        InfoReply(
            "r", "0.1.0", "ready", {"name": "tiny"}, None, "cpu", 123, "system", 2, True, 16, "queued", 1
        ),
        Accepted("r", "j", 3),
        Progress("r", "j", 2, 4, 0.5, image),
        Progress("r", "j", 3, 4, 0.7, None),
        Result(
            "r",
            "j",
            image,
            7,
            "a photo of a car",
            [[4, 5]],
            4,
            3.5,
            {"total_s": 1.0},
            {"denoise": 0.5},
            {"name": "tiny"},
            {"name": "lora", "rank": 4},
            True,
            {"k": [1, 2]},
            90,
            3,  # steps computed: one of the 4 reused the step cache
            True,  # made with the condition cache
            0.1,  # and the step cache at 0.1
        ),
        Cancelled("r", "j", True),
        ErrorReply("invalid_field", "bad", "width", "r", None),
    ]
    for message in messages:
        back = decode_reply(wire(message.encode()))
        assert type(back) is type(message)
        for name, value in vars(message).items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(getattr(back, name), value)
            else:
                assert getattr(back, name) == value, (type(message).__name__, name)


def test_speed_options_travel_and_absent_means_the_servers_default():
    back = decode_request(wire(make_request(condition_cache=True, step_cache=0.1).encode()))
    assert (back.settings.condition_cache, back.settings.step_cache) == (True, 0.1)
    back = decode_request(wire(make_request().encode()))
    assert (back.settings.condition_cache, back.settings.step_cache) == (None, None)


def test_request_ids_are_generated_and_unique():
    assert InfoRequest().request_id != InfoRequest().request_id
    assert CancelRequest(job_id="j").request_id


def test_a_request_type_is_not_a_reply_and_back():
    with pytest.raises(ProtocolError) as info:
        decode_request(wire(Accepted("r", "j", 0).encode()))
    assert info.value.code == ErrorCode.UNKNOWN_TYPE
    with pytest.raises(ProtocolError):
        decode_reply(wire(InfoRequest().encode()))


# --- validation (both ends) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"width": 500}, "width", "multiple of 16"),
        ({"height": 4096}, "height", "outside 256..2048"),
        ({"width": 128}, "width", "outside"),
        ({"descriptions": ["a car"]}, "masks", "2 masks for 1 descriptions"),
        ({"descriptions": ["a car", "  "]}, "descriptions[1]", "non-empty"),
        ({"descriptions": [f"box {i}" for i in range(17)]}, "descriptions", "at most 16"),
        ({"seed": -1}, "seed", "0.."),
        ({"steps": 0}, "steps", "1..100"),
        ({"guidance": float("nan")}, "guidance", "number"),
        ({"metadata": {1: "x"}}, "metadata", "string keys"),
        ({"mask_kind": "visible"}, "mask_kind", "token_grid, amodal"),
        ({"masks": np.zeros((2, 32, 32), np.uint8) + 1}, "masks", "255 inside"),
        (
            {"masks": np.stack([np.full((32, 32), 255, np.uint8), np.full((32, 32), 100, np.uint8)])},
            "masks",
            "mask 1 has values up to 100",
        ),  # fmt: skip
        ({"masks": np.zeros((2, 16, 16), bool), "mask_kind": "token_grid"}, "masks", "N x 32 x 32"),
        ({"oscr_image": np.zeros((256, 256), np.uint8)}, "oscr_image", "H x W x 3"),
        ({"oscr_image": np.zeros((256, 256, 3), np.float32)}, "oscr_image", "uint8"),
        ({"oscr_jpeg_round_trip": 1}, "oscr_jpeg_round_trip", "true or false"),
        ({"step_cache": 1.5}, "step_cache", "0..1"),
        ({"step_cache": "fast"}, "step_cache", "0..1"),
        ({"condition_cache": 1}, "condition_cache", "true, false or absent"),
    ],
)
def test_invalid_requests_name_the_field(overrides, field, fragment):
    with pytest.raises(ProtocolError) as info:
        make_request(**overrides).encode()
    assert info.value.code == ErrorCode.INVALID_FIELD
    assert info.value.field == field
    assert fragment in info.value.message


def test_the_server_side_runs_the_same_checks_on_decode():
    frames = tampered(make_request().encode(), width=1000, request_id="req-1")
    error = error_of(frames)
    assert (error.code, error.field, error.request_id) == (ErrorCode.INVALID_FIELD, "width", "req-1")


# --- malformed frames -------------------------------------------------------------------------------


@pytest.mark.parametrize("frame0", [b"", b"\xc1", b"\x93\x01\x02\x03", b'{"type": "info"}'])
def test_frames_that_are_not_a_msgpack_map(frame0):
    assert error_of([frame0]).code == ErrorCode.NOT_MSGPACK


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"protocol": ...}, ErrorCode.MISSING_FIELD, "protocol"),
        ({"protocol": 2}, ErrorCode.UNSUPPORTED_PROTOCOL, "protocol"),
        ({"protocol": True}, ErrorCode.UNSUPPORTED_PROTOCOL, "protocol"),
        ({"protocol": 1.0}, ErrorCode.UNSUPPORTED_PROTOCOL, "protocol"),
        ({"type": ...}, ErrorCode.MISSING_FIELD, "type"),
        ({"type": "render"}, ErrorCode.UNKNOWN_TYPE, "type"),
        ({"scene_prompt": ...}, ErrorCode.MISSING_FIELD, "scene_prompt"),
        ({"scene_prompt": 12}, ErrorCode.INVALID_FIELD, "scene_prompt"),
        ({"descriptions": "a car"}, ErrorCode.INVALID_FIELD, "descriptions"),
        ({"width": "512"}, ErrorCode.INVALID_FIELD, "width"),
        ({"steps": 2.5}, ErrorCode.INVALID_FIELD, "steps"),
        (
            {"masks": {"frame": 9, "dtype": "uint8", "shape": [2, 256, 320]}},
            ErrorCode.INVALID_FIELD,
            "masks.frame",
        ),
        (
            {"masks": {"frame": 2, "dtype": "float32", "shape": [2, 256, 320]}},
            ErrorCode.INVALID_FIELD,
            "masks.dtype",
        ),
        ({"masks": {"frame": 2, "dtype": "uint8", "shape": [2, 256, 321]}}, ErrorCode.BAD_IMAGE, "masks"),
        ({"masks": [1, 2]}, ErrorCode.INVALID_FIELD, "masks"),
        ({"oscr_image": {"frame": 1, "encoding": "webp"}}, ErrorCode.INVALID_FIELD, "oscr_image.encoding"),
        ({"request_id": ...}, ErrorCode.MISSING_FIELD, "request_id"),
        ({"request_id": "x" * 200}, ErrorCode.INVALID_FIELD, "request_id"),
    ],
)
def test_malformed_headers_name_the_field(changes, code, field):
    error = error_of(tampered(make_request().encode(), **changes))
    assert (error.code, error.field) == (code, field), error.message


def test_corrupt_png_bytes():
    frames = tampered(make_request().encode(), oscr_image={"frame": 1, "encoding": "png"})
    frames[1] = b"\x89PNG\r\n\x1a\n" + b"garbage" * 10
    error = error_of(frames)
    assert (error.code, error.field) == (ErrorCode.BAD_IMAGE, "oscr_image")


def test_too_many_frames_and_too_many_bytes():
    frames = wire(make_request().encode())
    assert error_of(frames + [b"x"] * 6).code == ErrorCode.TOO_LARGE
    error = error_of(frames, max_bytes=1000)
    assert (error.code, error.field) == (ErrorCode.TOO_LARGE, "frames")


def test_frames_the_header_does_not_reference_are_refused():
    frames = wire(make_request().encode()) + [b"extra"]
    error = error_of(frames)
    assert (error.code, error.field) == (ErrorCode.INVALID_FIELD, "frames")


def test_errors_carry_the_request_id_when_it_is_readable():
    frames = tampered(make_request().encode(), protocol=7, request_id="abc")
    assert error_of(frames).request_id == "abc"


def test_nil_optional_fields_take_their_defaults():
    back = decode_request(tampered(make_request().encode(), seed=None, steps=None, metadata=None))
    assert (back.settings.seed, back.settings.steps, back.metadata, back.oscr_jpeg_round_trip) == (
        None,
        25,
        {},
        True,
    )


def test_the_jpeg_round_trip_is_on_unless_the_request_opts_out():
    missing = tampered(make_request().encode(), oscr_jpeg_round_trip=...)  # a client that predates it
    assert decode_request(missing).oscr_jpeg_round_trip is True
    assert (
        decode_request(wire(make_request(oscr_jpeg_round_trip=False).encode())).oscr_jpeg_round_trip is False
    )


# --- addresses --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("http://localhost:5555", "ZeroMQ uses tcp://host:port, e.g. tcp://localhost:5555"),
        ("https://127.0.0.1:5555/", "not a ZeroMQ address"),
        ("localhost:5555", "tcp://localhost:5555"),
        ("tcp://localhost", "has no port"),
        ("tcp://localhost:99999", "1 to 65535"),
        ("tcp://:5555", "no host"),
        ("", "empty"),
        ("tcp://*:5555", "can only be bound"),
        ("tcp://127.0.0.1:*", "real port"),
    ],
)
def test_bad_addresses_explain_the_zeromq_form(address, fragment):
    with pytest.raises(EndpointError) as info:
        parse_endpoint(address)
    assert fragment in str(info.value)


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:5555", "tcp://localhost:5555", "tcp://[::1]:5555"])
def test_loopback_binds_are_allowed(address):
    check_bind_allowed(parse_endpoint(address, for_bind=True), allow_remote=False)


@pytest.mark.parametrize(
    "address",
    ["tcp://0.0.0.0:5555", "tcp://192.168.1.5:5555", "tcp://*:5555", "tcp://[::]:5555", "tcp://eth0:5"],
)
def test_non_loopback_binds_need_allow_remote(address):
    endpoint = parse_endpoint(address, for_bind=True)
    with pytest.raises(EndpointError) as info:
        check_bind_allowed(endpoint, allow_remote=False)
    assert "--allow-remote" in str(info.value) and "authentication" in str(info.value)
    check_bind_allowed(endpoint, allow_remote=True)


def test_endpoint_url_round_trip():
    assert parse_endpoint("tcp://[::1]:7", for_bind=True).url == "tcp://[::1]:7"
    assert parse_endpoint(" tcp://localhost:5555 ").url == "tcp://localhost:5555"
    assert parse_endpoint("tcp://127.0.0.1:*", for_bind=True).url == "tcp://127.0.0.1:*"
