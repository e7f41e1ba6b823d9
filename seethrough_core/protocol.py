"""The wire protocol between clients (the Blender add-on) and the inference server (docs/protocol.md).

Every message is a ZeroMQ multipart message: frame 0 is a msgpack map (the header, with "type",
"protocol" and ids), the frames after it are raw bytes: images and masks as C-ordered uint8/bool
arrays whose dtype and shape the header gives next to the frame's index. Large arrays never go
through msgpack: a 1024 px image costs 2-3 ms as its own frame and 4-6 ms wrapped in msgpack.

Each message is one dataclass here with `encode()`; `decode_request` / `decode_reply` turn frames
back into dataclasses and reject anything malformed with a `ProtocolError` naming the field, so the
server and the client share one definition and one set of checks.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import types
import typing
import uuid
from abc import ABC
from collections.abc import Sequence
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from enum import StrEnum
from typing import Any, ClassVar, Self

import msgpack
import numpy as np

from .condition_input import ConditionInput
from .edit_input import EditInput, edit_problem
from .errors import SeeThroughError
from .generation_settings import GenerationSettings, SettingError, is_int, is_number
from .limits import (
    MAX_FRAMES,
    MAX_HEADER_BYTES,
    MAX_ID_CHARS,
    MAX_IMAGE_SIDE,
    MAX_MESSAGE_BYTES,
    MIN_IMAGE_SIDE,
)
from .token_grid import BINARY_THRESHOLD, GRID_SIZE, pool_to_token_grid

PROTOCOL_VERSION = 1

MASK_KINDS = ("token_grid", "amodal")
ENCODINGS = ("raw", "png", "jpeg")
ARRAY_DTYPES = ("uint8", "bool")

Frame = bytes | bytearray | memoryview | np.ndarray  # anything with the buffer protocol goes as a frame


class ErrorCode(StrEnum):
    NOT_MSGPACK = "not_msgpack"  # frame 0 is not a msgpack map
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"  # header "protocol" is not PROTOCOL_VERSION
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"  # wrong type or out of range
    BAD_IMAGE = "bad_image"  # image or mask bytes that do not decode or do not match dtype/shape
    TOO_LARGE = "too_large"  # too many frames, or too many bytes
    QUEUE_FULL = "queue_full"
    UNKNOWN_JOB = "unknown_job"
    ALREADY_FINISHED = "already_finished"  # a cancel that came after the job's last step
    GENERATION_FAILED = "generation_failed"  # the model raised while generating
    LOAD_FAILED = "load_failed"  # the model never loaded; the server is stopping
    SHUTTING_DOWN = "shutting_down"
    SERVER_ERROR = "server_error"  # a bug in the server; it keeps serving
    LORA_FAILED = "lora_failed"  # a set_lora whose files are missing or do not fit; nothing changed


class ProtocolError(SeeThroughError, ValueError):
    """A message that breaks the protocol: `code` is an ErrorCode, `field` the offending header key."""

    def __init__(
        self,
        code: ErrorCode | str,
        message: str,
        field: str = "",
        request_id: str | None = None,
        job_id: str | None = None,
    ) -> None:
        self.code = str(code)
        self.message = message
        self.field = field
        self.request_id = request_id
        self.job_id = job_id
        super().__init__(f"{field}: {message}" if field else message)


# --- messages ---------------------------------------------------------------------------------------


def new_id() -> str:
    """A fresh request or job id: unique without coordination between clients."""
    return uuid.uuid4().hex


@dataclass
class Message(ABC):
    """Base of every message: dataclass fields become header keys; arrays and bytes become frames."""

    TYPE: ClassVar[str]

    def validate(self) -> None:  # noqa: B027 (an optional hook: most messages have no rules)
        """Semantic checks shared by both ends; subclasses with rules override it."""

    def encode(self) -> list[Frame]:
        self.validate()
        header: dict[str, Any] = {"type": self.TYPE, "protocol": PROTOCOL_VERSION}
        frames: list[Frame] = [b""]
        header.update(_encode_fields(self, frames))
        frames[0] = msgpack.packb(header, use_bin_type=True)
        return frames

    @classmethod
    def _decode(cls, r: _Reader) -> Self:
        """The message from a checked header, field by field as the dataclass declares them (types,
        defaults, `wire` rules); raises ProtocolError naming the first bad field."""
        message = cls(**_decode_fields(cls, r))
        message.validate()
        return message


# --- how a field travels ----------------------------------------------------------------------------
# A message's dataclass is its only declaration: the encoder writes every field as a header key and the
# decoder reads each one by its type, taking the field's default when the key is missing or nil. What
# the type cannot say is in the field's metadata, made by `wire(...)`.


def wire(
    *,
    lo: int | None = None,
    choices: Sequence[str] | None = None,
    id: bool = False,
    nonempty: bool = False,
    required: bool = False,
    image_min_side: int | None = None,
    flatten: bool = False,
) -> dict[str, Any]:
    """A field's wire rules: ``lo`` the smallest integer; ``choices`` the allowed strings; ``id`` a
    request or job id (``nonempty``: never ""); ``required`` on the wire although the dataclass has a
    default (a sender's default, e.g. a fresh id); ``image_min_side`` an RGB image of at least this
    side; ``flatten`` a dataclass whose fields are header keys of their own (the generation settings)."""
    return {
        "lo": lo,
        "choices": tuple(choices) if choices is not None else None,
        "id": id,
        "nonempty": nonempty,
        "required": required,
        "image_min_side": image_min_side,
        "flatten": flatten,
    }


_ID = wire(id=True)  # a request's or job's id as a reply names it ("" where there is none)
_REQUEST_ID = wire(id=True, nonempty=True, required=True)  # the sender makes a fresh one


def _encode_fields(value: Any, frames: list[Frame]) -> dict[str, Any]:
    header: dict[str, Any] = {}
    for f in fields(value):
        if f.metadata.get("flatten"):
            header.update(_encode_fields(getattr(value, f.name), frames))
        else:
            header[f.name] = _encode_value(getattr(value, f.name), frames)
    return header


def _encode_value(value: Any, frames: list[Frame]) -> Any:
    """A field's header value; arrays and bytes go to their own frames, a nested dataclass (an edit)
    becomes a map encoded the same way."""
    if isinstance(value, tuple):  # descriptions may be a tuple; msgpack sends both as an array
        return list(value)
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        frames.append(array)
        return {"frame": len(frames) - 1, "dtype": array.dtype.name, "shape": list(array.shape)}
    if isinstance(value, bytes | bytearray):
        frames.append(value)
        return {"frame": len(frames) - 1, "encoding": _sniff_encoding(value)}
    if is_dataclass(value) and not isinstance(value, type):
        return _encode_fields(value, frames)
    if isinstance(value, list) and any(is_dataclass(item) for item in value):  # set_lora's style_loras
        return [_encode_value(item, frames) for item in value]
    return value


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """A dataclass's resolved field types, worked out once per class (the loop decodes every message)."""
    return typing.get_type_hints(cls)


def _decode_fields(cls: type, r: _Reader) -> dict[str, Any]:
    hints = _field_types(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.metadata.get("flatten"):
            values[f.name] = hints[f.name](**_raw_fields(hints[f.name], r))
        else:
            values[f.name] = _decode_field(r, f, hints[f.name])
    return values


def _raw_fields(cls: type, r: _Reader) -> dict[str, Any]:
    """A flattened object's fields as sent (missing or nil: the field's default), for an object that
    checks itself (GenerationSettings.check, from the message's validate): one rule, one message."""
    hints = _field_types(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        args = typing.get_args(hints[f.name])
        optional = type(None) in args
        default = f.default if f.default is not MISSING else _MISSING
        values[f.name] = r.get(f.name, default, optional)
    return values


def _decode_field(r: _Reader, f: Field[Any], hint: Any) -> Any:
    name, rules = f.name, f.metadata
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        rest = tuple(a for a in args if a is not type(None))
        hint = rest[0] if len(rest) == 1 else typing.Union[rest]  # noqa: UP007 (built at run time)
    default: Any = _MISSING
    if not rules.get("required"):
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
    if default is None:
        default, optional = _MISSING, True
    origin, args = typing.get_origin(hint) or hint, typing.get_args(hint)
    if hint is str and rules.get("id"):
        value = r.text(name, default=default, optional=optional)
        if value is not None:
            _check_id(value, name, allow_empty=not rules["nonempty"], request_id=r.request_id)
        return value
    if hint is str and rules.get("choices"):
        return r.choice(name, rules["choices"], default=default, optional=optional)
    if hint is str:
        return r.text(name, default=default, optional=optional)
    if hint is bool:
        return r.boolean(name, default=default, optional=optional)
    if hint is int:
        return r.integer(name, default=default, optional=optional, lo=rules.get("lo"))
    if hint is float:
        return r.number(name, default=default, optional=optional)
    if origin is dict:
        return r.float_map(name) if args[1] is float else r.mapping(name, default=default, optional=optional)
    if origin in (list, Sequence) and is_dataclass(args[0]):
        return r.dataclass_list(name, args[0], optional=optional)
    if origin in (list, Sequence):
        return r.int_lists(name) if typing.get_origin(args[0]) is list else r.str_list(name)
    if hint is np.ndarray:
        array = r.array(name, optional=optional)
        if array is not None and rules.get("image_min_side") is not None:
            _check_image(array, name, r.request_id, min_side=rules["image_min_side"])
        return array
    if set(args) == {np.ndarray, bytes}:
        return r.image(name)
    if is_dataclass(hint):
        sub = r.nested(name)
        return None if sub is None else hint(**_decode_fields(hint, sub))
    raise TypeError(f"{name}: no wire reader for {hint!r}")  # a message declared with a new type


@dataclass
class InfoRequest(Message):
    """Ask for the server's state; with `job_id`, also for that job's state."""

    TYPE: ClassVar[str] = "info"
    job_id: str | None = field(default=None, metadata=wire(id=True))
    request_id: str = field(default_factory=new_id, metadata=_REQUEST_ID)


@dataclass
class InfoReply(Message):
    TYPE: ClassVar[str] = "info_reply"
    request_id: str = field(metadata=wire(id=True))
    server_version: str
    # "loading" (model not ready yet; jobs are queued) or "ready"
    state: str = field(metadata=wire(choices=("loading", "ready")))
    model: dict[str, Any]  # identity of the base model, e.g. {"name": ..., "dtype": ...}
    lora: dict[str, Any] | None  # identity of the SeeThrough LoRA; None for the tiny random model
    device: str
    # GPU memory when the device is CUDA, else system RAM
    free_memory_bytes: int | None = field(metadata=wire(lo=0))
    memory_kind: str = field(metadata=wire(choices=("gpu", "system")))
    # jobs waiting or running: what a new job would wait behind
    queue_length: int = field(metadata=wire(lo=0))
    is_noise: bool  # True: random weights, every image is noise
    max_boxes: int = field(metadata=wire(lo=1))
    # "queued", "running" or "unknown" when the request named a job
    job_state: str | None = field(default=None, metadata=wire(choices=("queued", "running", "unknown")))
    job_queue_position: int | None = field(default=None, metadata=wire(lo=0))
    # T5 tokens the model reads of the composed prompt ("a photo of " + descriptions joined by " and "
    # + " " + scene prompt, EOS included); None while the model loads.
    max_prompt_tokens: int | None = field(default=None, metadata=wire(lo=1))


@dataclass
class GenerateRequest(Message):
    """One image: its generation settings, its OSCR image and one mask per box.

    On the wire the settings' fields (`scene_prompt`, `descriptions`, `width`, `height`, `seed`, `steps`,
    `guidance`, `preview_interval`) are header keys of their own. `oscr_image` is uint8 H x W x 3, or
    the bytes of a PNG/JPEG file. `masks` are either token grids (N x 32 x 32, bool or uint8, nonzero
    inside; `mask_kind="token_grid"`) or full-size amodal masks (N x H x W, bool or uint8 with 255
    inside; `mask_kind="amodal"`) that the server pools onto the token grid. `settings.seed=None` lets
    the server pick one; the result reports it.
    """

    TYPE: ClassVar[str] = "generate"
    settings: GenerationSettings = field(metadata=wire(flatten=True))
    oscr_image: np.ndarray | bytes
    masks: np.ndarray
    mask_kind: str = field(default="amodal", metadata=wire(choices=MASK_KINDS, required=True))
    metadata: dict[str, Any] = field(default_factory=dict)  # returned untouched with the result
    request_id: str = field(default_factory=new_id, metadata=_REQUEST_ID)
    # The server passes the OSCR image through JPEG at the profile's quality (90), as the checkpoint's
    # training renders were saved; false: the pixels as sent (e.g. an image already saved that way).
    oscr_jpeg_round_trip: bool = True
    # Regional regeneration: change only inside edit.mask of the previous result edit.image (docs/edit.md).
    edit: EditInput | None = None

    @classmethod
    def for_settings(
        cls,
        settings: GenerationSettings,
        oscr_image: np.ndarray | bytes,
        token_grids: np.ndarray,
        metadata: dict[str, Any] | None = None,
        edit: EditInput | None = None,
    ) -> GenerateRequest:
        """The request for settings checked before the images were rendered: its OSCR image (PNG bytes
        or pixels) and its boxes' token grids (seethrough_core.masks, in box order); with ``edit``, a
        change of a previous picture inside the edit's mask only."""
        return cls(settings, oscr_image, token_grids, "token_grid", dict(metadata or {}), edit=edit)

    def condition(self) -> ConditionInput:
        """What the pipeline conditions on: the OSCR image's pixels (a PNG/JPEG decoded now:
        ProtocolError if it does not) and the masks on the token grid."""
        return ConditionInput(self.oscr_pixels(), self.token_grids(), self.oscr_jpeg_round_trip)

    def validate(self) -> None:
        def bad(name: str, message: str) -> ProtocolError:
            return ProtocolError(ErrorCode.INVALID_FIELD, message, name, self.request_id or None)

        _check_id(self.request_id, "request_id", allow_empty=False)
        if not isinstance(self.settings, GenerationSettings):
            raise bad("settings", "must be a GenerationSettings")
        if not isinstance(self.settings.descriptions, list | tuple):
            raise bad("descriptions", "must be a list of descriptions, one per box")
        try:
            self.settings.check()
        except SettingError as exc:
            raise bad(exc.field, exc.message) from None
        if not isinstance(self.metadata, dict) or not all(isinstance(k, str) for k in self.metadata):
            raise bad("metadata", "must be a map with string keys")
        if not isinstance(self.oscr_jpeg_round_trip, bool):
            raise bad("oscr_jpeg_round_trip", f"must be true or false, got {self.oscr_jpeg_round_trip!r}")
        if isinstance(self.oscr_image, np.ndarray):
            _check_image(self.oscr_image, "oscr_image", self.request_id)
        elif not isinstance(self.oscr_image, bytes | bytearray) or not self.oscr_image:
            raise bad("oscr_image", "must be a uint8 H x W x 3 array or the bytes of a PNG/JPEG file")
        self._validate_masks(bad)
        self._validate_edit()

    def _validate_edit(self) -> None:
        if self.edit is None:
            return
        problem = edit_problem(self.edit, self.settings.width, self.settings.height)
        if problem is not None:
            raise ProtocolError(
                ErrorCode.INVALID_FIELD, problem.message, problem.field, self.request_id or None
            )

    def _validate_masks(self, bad: Any) -> None:
        if self.mask_kind not in MASK_KINDS:
            raise bad("mask_kind", f"must be one of {', '.join(MASK_KINDS)}, got {self.mask_kind!r}")
        masks = self.masks
        if not isinstance(masks, np.ndarray) or masks.dtype.name not in ARRAY_DTYPES or masks.ndim != 3:
            raise bad("masks", "must be a bool or uint8 array of shape N x H x W (one mask per box)")
        boxes = len(self.settings.descriptions)
        if masks.shape[0] != boxes:
            raise bad(
                "masks",
                f"{masks.shape[0]} masks for {boxes} descriptions: send exactly one mask per box, in the "
                "order of the descriptions",
            )
        if self.mask_kind == "token_grid" and masks.shape[1:] != (GRID_SIZE, GRID_SIZE):
            raise bad(
                "masks",
                f"token grids must be N x {GRID_SIZE} x {GRID_SIZE}, got {list(masks.shape)}; "
                'send full-size masks with mask_kind "amodal" instead',
            )
        if self.mask_kind == "amodal" and not all(
            MIN_IMAGE_SIDE <= side <= MAX_IMAGE_SIDE for side in masks.shape[1:]
        ):
            raise bad(
                "masks",
                f"full-size masks need sides in {MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE}, got {list(masks.shape)}",
            )
        if self.mask_kind == "amodal" and masks.dtype == np.uint8 and masks.size:
            # Values 1..128 all fall under the > 128 threshold: such a box would vanish silently.
            peaks = masks.reshape(len(masks), -1).max(axis=1)
            for box, peak in enumerate(peaks):
                if 0 < peak <= BINARY_THRESHOLD:
                    raise bad(
                        "masks",
                        f"mask {box} has values up to {peak} but full-size uint8 masks count only values "
                        f"over {BINARY_THRESHOLD} as inside: the box would vanish. Send 255 inside and 0 "
                        "outside, or a bool array",
                    )

    def oscr_pixels(self) -> np.ndarray:
        """The OSCR image as uint8 H x W x 3 pixels: a PNG/JPEG file is decoded now.

        A request read from the wire keeps such a file encoded (checked, not decoded: a 60 KB PNG
        of a 4096 px image would hold 48 MB while it waits); the server decodes it when the job
        starts. ProtocolError (bad_image) if it does not decode after all."""
        if isinstance(self.oscr_image, np.ndarray):
            return self.oscr_image
        return decode_image_file(memoryview(self.oscr_image), "oscr_image", self.request_id)

    def token_grids(self) -> np.ndarray:
        """The box masks on the condition-token grid: bool N x 32 x 32."""
        if self.mask_kind == "token_grid":
            return np.asarray(self.masks).view(np.uint8) != 0
        return np.stack([pool_to_token_grid(mask) for mask in self.masks])


@dataclass
class Accepted(Message):
    TYPE: ClassVar[str] = "accepted"
    request_id: str = field(metadata=_ID)
    job_id: str = field(metadata=_ID)
    # jobs that run before this one (the running one included); 0: starts now
    queue_position: int = field(metadata=wire(lo=0))


@dataclass
class Progress(Message):
    TYPE: ClassVar[str] = "progress"
    request_id: str = field(metadata=_ID)
    job_id: str = field(metadata=_ID)
    step: int = field(metadata=wire(lo=1))  # 1-based
    total: int = field(metadata=wire(lo=1))
    elapsed_s: float  # since the job started running
    # small uint8 RGB image, every preview_interval steps
    preview: np.ndarray | None = field(default=None, metadata=wire(image_min_side=1))


@dataclass
class Result(Message):
    TYPE: ClassVar[str] = "result"
    request_id: str = field(metadata=_ID)
    job_id: str = field(metadata=_ID)
    image: np.ndarray = field(metadata=wire(image_min_side=1))  # uint8 H x W x 3
    seed: int = field(metadata=wire(lo=0))
    prompt: str  # the exact prompt the text encoders saw
    call_ids: list[list[int]]  # per box, the T5 token positions of its description in `prompt`
    steps: int = field(metadata=wire(lo=1))
    guidance: float
    timings: dict[str, float]  # queue_wait_s (received to model start), generation_s, total_s; seconds
    model_timings: dict[str, float]  # the pipeline's own breakdown
    model: dict[str, Any]
    lora: dict[str, Any] | None
    is_noise: bool
    metadata: dict[str, Any]
    # the JPEG round trip the OSCR image went through (None: none)
    oscr_jpeg_quality: int | None = field(default=None, metadata=wire(lo=1))
    # Denoising steps whose transformer blocks all ran; fewer than `steps` when the step cache reused
    # earlier steps' work (None: a server that does not report it)
    steps_computed: int | None = field(default=None, metadata=wire(lo=0))
    # The speed options the image was made with (the request's, else the server's defaults); None: unknown
    condition_cache: bool | None = None
    step_cache: float | None = None  # None also when the step cache was off


@dataclass
class CancelRequest(Message):
    TYPE: ClassVar[str] = "cancel"
    job_id: str = field(metadata=wire(id=True, nonempty=True))
    request_id: str = field(default_factory=new_id, metadata=_REQUEST_ID)


@dataclass
class Cancelled(Message):
    """The job stopped: removed from the queue, or stopped before its next step (no VAE decode)."""

    TYPE: ClassVar[str] = "cancelled"
    request_id: str = field(metadata=_ID)  # the cancel request's id
    job_id: str = field(metadata=_ID)
    was_running: bool


@dataclass
class StyleLoraChoice:
    """One style LoRA of a `set_lora` request: a file on the server's machine and its strength."""

    path: str
    scale: float = 1.0


@dataclass
class SetLoraRequest(Message):
    """Change the LoRAs of the loaded model without restarting the server (docs/protocol.md).

    It waits its turn in the job queue: jobs sent before it finish with the LoRAs they were sent to,
    jobs sent after it use the new ones. Answered with `accepted`, then `lora_set` (or `error`; the
    LoRAs in use then stay as they were). None keeps what is loaded.
    """

    TYPE: ClassVar[str] = "set_lora"
    lora: str | None = None  # the SeeThrough3D LoRA: a .safetensors file, a folder, a cached repo id
    lora_scale: float | None = None  # None: the current scale
    style_loras: list[StyleLoraChoice] | None = None  # the complete new list; [] removes them all
    request_id: str = field(default_factory=new_id, metadata=_REQUEST_ID)

    def validate(self) -> None:
        def bad(name: str, message: str) -> ProtocolError:
            return ProtocolError(ErrorCode.INVALID_FIELD, message, name, self.request_id or None)

        _check_id(self.request_id, "request_id", allow_empty=False)
        if self.lora is not None and (not isinstance(self.lora, str) or not self.lora.strip()):
            raise bad("lora", "must be the path of a LoRA file on the server's machine, or nil")
        if self.lora_scale is not None and not (is_number(self.lora_scale) and self.lora_scale >= 0):
            raise bad("lora_scale", f"must be a number >= 0, got {self.lora_scale!r}")
        for index, style in enumerate(self.style_loras or ()):
            if not isinstance(style.path, str) or not style.path.strip():
                raise bad(f"style_loras[{index}].path", "must be the path of a LoRA file")
            if not is_number(style.scale):
                raise bad(f"style_loras[{index}].scale", f"must be a finite number, got {style.scale!r}")
        if self.lora is None and self.lora_scale is None and self.style_loras is None:
            raise bad("lora", "nothing to change: give lora, lora_scale or style_loras")


@dataclass
class LoraSet(Message):
    """The LoRAs are changed; `model` and `lora` as in `info_reply` now say so."""

    TYPE: ClassVar[str] = "lora_set"
    request_id: str = field(metadata=_ID)
    job_id: str = field(metadata=_ID)
    model: dict[str, Any]
    lora: dict[str, Any] | None
    load_s: float


def describe_loras(model: dict[str, Any], lora: dict[str, Any] | None) -> list[str]:
    """The LoRAs a server holds, one line each, from the `model` and `lora` of `info_reply` or `lora_set`."""
    if lora is None:
        lines = ["SeeThrough3D LoRA: none"]
    else:
        sha = f", sha256 {lora['sha256']}" if lora.get("sha256") else ""
        scale = f", scale {lora['scale']:g}" if is_number(lora.get("scale")) else ""
        lines = [f"SeeThrough3D LoRA: {lora.get('name')}{sha}{scale}"]
    styles = model.get("style_loras") or []
    return lines + [
        f"style LoRA: {s.get('path')}, sha256 {s.get('sha256')}, scale {s.get('scale')}" for s in styles
    ]


@dataclass
class ErrorReply(Message):
    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    field: str = ""  # (this name hides dataclasses.field below it: hence the module prefix)
    request_id: str | None = dataclasses.field(default=None, metadata=_ID)
    job_id: str | None = dataclasses.field(default=None, metadata=_ID)

    @classmethod
    def from_exception(cls, exc: ProtocolError) -> ErrorReply:
        return cls(exc.code, exc.message, exc.field, exc.request_id, exc.job_id)


REQUESTS: dict[str, type[Message]] = {
    m.TYPE: m for m in (InfoRequest, GenerateRequest, CancelRequest, SetLoraRequest)
}
REPLIES: dict[str, type[Message]] = {
    m.TYPE: m for m in (InfoReply, Accepted, Progress, Result, Cancelled, LoraSet, ErrorReply)
}


def decode_request(
    frames: Sequence[Any], *, max_frames: int = MAX_FRAMES, max_bytes: int = MAX_MESSAGE_BYTES
) -> Message:
    """A client's message (info, generate, cancel, set_lora) from its frames; ProtocolError if malformed."""
    return _decode_frames(frames, REQUESTS, max_frames, max_bytes)


def decode_reply(frames: Sequence[Any]) -> Message:
    """A server's message from its frames; ProtocolError if malformed."""
    return _decode_frames(frames, REPLIES, MAX_FRAMES, MAX_MESSAGE_BYTES)


# --- decoding ---------------------------------------------------------------------------------------


def _decode_frames(
    frames: Sequence[Any], registry: dict[str, type[Message]], max_frames: int, max_bytes: int
) -> Message:
    views = [memoryview(f) for f in frames]  # zmq.Frame, bytes, ...: no copies
    if not views or views[0].nbytes == 0:
        raise ProtocolError(ErrorCode.NOT_MSGPACK, "frame 0 must be a msgpack map (the header); it is empty")
    if views[0].nbytes > MAX_HEADER_BYTES:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"the header is over {MAX_HEADER_BYTES} bytes", "header")
    try:
        header = msgpack.unpackb(views[0], raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for garbage; all mean the same
        raise ProtocolError(
            ErrorCode.NOT_MSGPACK, f"frame 0 is not msgpack ({type(exc).__name__}); see docs/protocol.md"
        ) from None
    if not isinstance(header, dict):
        raise ProtocolError(
            ErrorCode.NOT_MSGPACK, f"frame 0 must be a msgpack map, got a {type(header).__name__}"
        )
    request_id = header.get("request_id") if isinstance(header.get("request_id"), str) else None
    job_id = header.get("job_id") if isinstance(header.get("job_id"), str) else None

    def fail(code: ErrorCode, message: str, name: str) -> ProtocolError:
        return ProtocolError(code, message, name, request_id, job_id)

    if len(views) > max_frames:
        raise fail(ErrorCode.TOO_LARGE, f"{len(views)} frames; at most {max_frames} are accepted", "frames")
    total = sum(v.nbytes for v in views)
    if total > max_bytes:
        raise fail(
            ErrorCode.TOO_LARGE, f"{total} bytes; at most {max_bytes} per message are accepted", "frames"
        )
    if "protocol" not in header:
        raise fail(ErrorCode.MISSING_FIELD, f'every header needs "protocol": {PROTOCOL_VERSION}', "protocol")
    if not is_int(header["protocol"]) or header["protocol"] != PROTOCOL_VERSION:  # 1.0 is no version
        raise fail(
            ErrorCode.UNSUPPORTED_PROTOCOL,
            f"protocol {header['protocol']!r} is not supported; this side speaks protocol "
            f"{PROTOCOL_VERSION}. Update the add-on and the server to the same release.",
            "protocol",
        )
    kind = header.get("type")
    if kind is None:
        raise fail(ErrorCode.MISSING_FIELD, 'every header needs a "type"', "type")
    cls = registry.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise fail(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown message type {kind!r}; expected one of {sorted(registry)}",
            "type",
        )
    reader = _Reader(header, views, request_id, job_id)
    message = cls._decode(reader)
    reader.check_all_frames_used()
    return message


_MISSING: Any = object()


class _Reader:
    """Typed access to header keys; every failure names the key."""

    def __init__(
        self,
        header: dict[Any, Any],
        frames: list[memoryview],
        request_id: str | None,
        job_id: str | None,
        prefix: str = "",
    ) -> None:
        self.header = header
        self.frames = frames
        self.request_id = request_id
        self.job_id = job_id
        self.used_frames = {0}
        self.prefix = prefix  # "edit." inside a nested map: errors name the full path

    def fail(self, code: ErrorCode, name: str, message: str) -> ProtocolError:
        return ProtocolError(code, message, self.prefix + name, self.request_id, self.job_id)

    def nested(self, name: str) -> _Reader | None:
        """A reader of the optional map at ``name`` (None when absent), sharing this message's frames."""
        value = self.mapping(name, optional=True)
        if value is None:
            return None
        sub = _Reader(value, self.frames, self.request_id, self.job_id, f"{self.prefix}{name}.")
        sub.used_frames = self.used_frames  # one record of referenced frames for the whole message
        return sub

    def get(self, name: str, default: Any, optional: bool) -> Any:
        value = self.header.get(name, _MISSING)
        if value is _MISSING or (value is None and (optional or default is not _MISSING)):
            if default is not _MISSING:
                return default
            if optional:
                return None
            raise self.fail(ErrorCode.MISSING_FIELD, name, "missing")
        return value

    def invalid(self, name: str, expected: str, value: Any) -> ProtocolError:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        return self.fail(ErrorCode.INVALID_FIELD, name, f"must be {expected}, got {shown}")

    def text(self, name: str, *, default: Any = _MISSING, optional: bool = False) -> Any:
        value = self.get(name, default, optional)
        if value is not None and not isinstance(value, str):
            raise self.invalid(name, "a string", value)
        return value

    def choice(
        self, name: str, options: Sequence[str], *, default: Any = _MISSING, optional: bool = False
    ) -> Any:
        value = self.text(name, default=default, optional=optional)
        if value is not None and value not in options:
            raise self.invalid(name, "one of " + ", ".join(options), value)
        return value

    def integer(
        self, name: str, *, default: Any = _MISSING, optional: bool = False, lo: int | None = None
    ) -> Any:
        value = self.get(name, default, optional)
        if value is not None and (not is_int(value) or (lo is not None and value < lo)):
            raise self.invalid(name, "an integer" if lo is None else f"an integer >= {lo}", value)
        return value

    def number(self, name: str, *, default: Any = _MISSING, optional: bool = False) -> float | None:
        value = self.get(name, default, optional)
        if value is None and optional:
            return None
        if not is_number(value):
            raise self.invalid(name, "a finite number", value)
        return float(value)

    def dataclass_list(self, name: str, item_type: type, *, optional: bool = False) -> list[Any] | None:
        """A list of maps, each one ``item_type``'s fields (a missing one takes the field's default, or
        nil); the message's validate() checks the values."""
        value = self.get(name, _MISSING, optional)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            names = ", ".join(f'"{f.name}"' for f in fields(item_type))
            raise self.invalid(name, f"a list of maps {{{names}}}", value)
        defaults = {f.name: None if f.default is MISSING else f.default for f in fields(item_type)}
        return [
            item_type(**{key: item.get(key, default) for key, default in defaults.items()}) for item in value
        ]

    def boolean(self, name: str, *, default: Any = _MISSING, optional: bool = False) -> bool | None:
        value = self.get(name, default, optional)
        if value is None and optional:
            return None
        if not isinstance(value, bool):
            raise self.invalid(name, "true or false", value)
        return value

    def mapping(self, name: str, *, default: Any = _MISSING, optional: bool = False) -> Any:
        value = self.get(name, default, optional)
        if value is not None and (not isinstance(value, dict) or not all(isinstance(k, str) for k in value)):
            raise self.invalid(name, "a map with string keys", value)
        return value

    def float_map(self, name: str) -> dict[str, float]:
        value = self.mapping(name)
        if not all(is_number(v) for v in value.values()):
            raise self.invalid(name, "a map of numbers", value)
        return {k: float(v) for k, v in value.items()}

    def str_list(self, name: str) -> list[str]:
        value = self.get(name, _MISSING, False)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.invalid(name, "a list of strings", value)
        return value

    def int_lists(self, name: str) -> list[list[int]]:
        value = self.get(name, _MISSING, False)
        if not isinstance(value, list) or not all(
            isinstance(row, list) and all(is_int(v) for v in row) for row in value
        ):
            raise self.invalid(name, "a list of lists of integers", value)
        return value

    def frame(self, name: str, ref: dict[Any, Any]) -> memoryview:
        index = ref.get("frame")
        if not is_int(index) or not 1 <= index < len(self.frames):
            raise self.fail(
                ErrorCode.INVALID_FIELD,
                f"{name}.frame",
                f"must be the index of a frame after the header (1..{len(self.frames) - 1}), got {index!r}",
            )
        self.used_frames.add(index)
        return self.frames[index]

    def array(self, name: str, *, optional: bool = False) -> Any:
        """A raw array: {"frame": i, "dtype": "uint8"|"bool", "shape": [...]} (C order)."""
        ref = self.get(name, _MISSING, optional)
        if ref is None:
            return None
        if not isinstance(ref, dict):
            raise self.invalid(name, 'a map {"frame", "dtype", "shape"}', ref)
        encoding = ref.get("encoding", "raw")
        if encoding != "raw":
            raise self.invalid(f"{name}.encoding", '"raw" (this field takes raw arrays only)', encoding)
        data = self.frame(name, ref)
        dtype, shape = ref.get("dtype"), ref.get("shape")
        if dtype not in ARRAY_DTYPES:
            raise self.invalid(f"{name}.dtype", "one of " + ", ".join(ARRAY_DTYPES), dtype)
        if (
            not isinstance(shape, list)
            or not 1 <= len(shape) <= 4
            or not all(is_int(s) and 0 <= s <= 1 << 20 for s in shape)
        ):
            raise self.invalid(f"{name}.shape", "a list of 1 to 4 non-negative integers", shape)
        expected = math.prod(shape)  # both dtypes are one byte per element
        if data.nbytes != expected:
            raise self.fail(
                ErrorCode.BAD_IMAGE,
                name,
                f"frame {ref['frame']} has {data.nbytes} bytes but shape {shape} of {dtype} needs {expected}",
            )
        array = np.frombuffer(data, dtype=np.uint8).reshape(shape)
        # Any nonzero byte is "true": never reinterpret arbitrary bytes as numpy bools.
        return array != 0 if dtype == "bool" else array

    def image(self, name: str) -> np.ndarray | bytes:
        """An RGB image: a raw uint8 H x W x 3 array, or the bytes of a PNG/JPEG file, checked but
        kept encoded (see GenerateRequest.oscr_pixels)."""
        ref = self.get(name, _MISSING, False)
        if not isinstance(ref, dict):
            raise self.invalid(name, 'a map {"frame", "dtype", "shape"} or {"frame", "encoding": "png"}', ref)
        encoding = ref.get("encoding", "raw")
        if encoding not in ENCODINGS:
            raise self.invalid(f"{name}.encoding", "one of " + ", ".join(ENCODINGS), encoding)
        if encoding == "raw":
            image = self.array(name)
            _check_image(image, name, self.request_id)
            return image
        return check_image_file(self.frame(name, ref), name, self.request_id)

    def check_all_frames_used(self) -> None:
        unused = sorted(set(range(len(self.frames))) - self.used_frames)
        if unused:
            raise self.fail(
                ErrorCode.INVALID_FIELD,
                "frames",
                f"frames {unused} are not referenced by the header; send only the frames the header names",
            )


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0..SOF15: size inside


def image_file_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) from a PNG's or JPEG's header, without decoding anything; None if neither."""
    data = memoryview(data)
    if bytes(data[:8]) == _PNG_SIGNATURE and bytes(data[12:16]) == b"IHDR" and data.nbytes >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if bytes(data[:2]) != b"\xff\xd8":
        return None
    offset = 2
    while offset + 9 <= data.nbytes:  # JPEG segments: FF marker, 2-byte length, payload
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker in _JPEG_FRAME_MARKERS:
            height = int.from_bytes(data[offset + 5 : offset + 7], "big")
            return int.from_bytes(data[offset + 7 : offset + 9], "big"), height
        offset += 2 + int.from_bytes(data[offset + 2 : offset + 4], "big")
    return None


def check_image_file(data: memoryview, name: str, request_id: str | None) -> bytes:
    """A PNG/JPEG file's bytes once its header is checked: its size before any decoding (an image
    bomb never reaches the decoder) and, for a PNG, every chunk's checksum. Pixels are not decoded."""
    from PIL import Image  # only needed for the rare PNG/JPEG path

    size = image_file_size(data)
    if size is None:
        raise ProtocolError(
            ErrorCode.BAD_IMAGE, "the image file is not a PNG or JPEG file; send PNG, JPEG or a raw array",
            name, request_id,
        )  # fmt: skip
    if max(size) > MAX_IMAGE_SIDE:
        raise ProtocolError(
            ErrorCode.INVALID_FIELD,
            f"{size[0]}x{size[1]} is over {MAX_IMAGE_SIDE} px a side",
            name,
            request_id,
        )
    if min(size) < MIN_IMAGE_SIDE:
        raise ProtocolError(
            ErrorCode.INVALID_FIELD,
            f"{size[0]}x{size[1]} px; each side must be within {MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE}",
            name,
            request_id,
        )
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()  # a PNG's chunks and checksums; reads no pixels
    except Exception as exc:  # Pillow raises many types for corrupt files
        raise _undecodable(exc, name, request_id) from None
    return bytes(data)  # a copy: the message's frames are freed while the job waits


def decode_image_file(data: memoryview, name: str, request_id: str | None) -> np.ndarray:
    """The pixels of a PNG/JPEG file, uint8 H x W x 3; ProtocolError when it is not a usable image."""
    from PIL import Image

    size = image_file_size(data)
    if size is None or max(size) > MAX_IMAGE_SIDE:
        check_image_file(data, name, request_id)  # raises the error that says why
    try:
        with Image.open(io.BytesIO(data)) as img:
            image = np.asarray(img.convert("RGB"))
    except Exception as exc:
        raise _undecodable(exc, name, request_id) from None
    _check_image(image, name, request_id)
    return image


def _undecodable(exc: Exception, name: str, request_id: str | None) -> ProtocolError:
    return ProtocolError(
        ErrorCode.BAD_IMAGE,
        f"the image file does not decode ({exc}); send PNG, JPEG or a raw array",
        name,
        request_id,
    )


def _check_image(
    image: np.ndarray, name: str, request_id: str | None, min_side: int = MIN_IMAGE_SIDE
) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ProtocolError(
            ErrorCode.INVALID_FIELD,
            f"must be a uint8 H x W x 3 RGB array, got {image.dtype.name} {list(image.shape)}",
            name,
            request_id,
        )
    if not all(min_side <= side <= MAX_IMAGE_SIDE for side in image.shape[:2]):
        raise ProtocolError(
            ErrorCode.INVALID_FIELD,
            f"{image.shape[1]}x{image.shape[0]} px; each side must be within {min_side}..{MAX_IMAGE_SIDE}",
            name,
            request_id,
        )


def _check_id(value: Any, name: str, *, allow_empty: bool, request_id: str | None = None) -> None:
    if not isinstance(value, str) or len(value) > MAX_ID_CHARS or (not value and not allow_empty):
        raise ProtocolError(
            ErrorCode.INVALID_FIELD,
            f"must be a string of at most {MAX_ID_CHARS} characters",
            name,
            request_id,
        )


def _sniff_encoding(data: bytes | bytearray) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    raise ProtocolError(ErrorCode.INVALID_FIELD, "image bytes must be a PNG or JPEG file", "oscr_image")
