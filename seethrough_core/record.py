"""What was generated and how: one record, stored beside every image.

The batch command writes it as a JSON sidecar and into the PNG's metadata; the Blender add-on
stores it on the image datablock. One definition, so every finished image can be reproduced.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import LayoutError
from .layout import Layout, load_layout
from .png import read_png_file_text, read_png_text

RECORD_FORMAT = "seethrough.generation"
RECORD_VERSION = 1
PNG_KEY = "seethrough"  # iTXt key holding the whole record as JSON


@dataclass
class GenerationRecord:
    prompt: str  # the exact prompt the text encoders saw
    scene_prompt: str
    descriptions: list[str]
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    model: dict[str, Any]
    lora: dict[str, Any] | None
    is_noise: bool  # True when a random-weight model (seethrough serve --tiny) made it
    call_ids: list[list[int]]
    timings: dict[str, float]
    layout: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)  # input file, camera, frame, server
    oscr_jpeg_quality: int | None = None  # the JPEG round trip the server gave the OSCR image (None: none)
    # An edit's origin: the previous PNG's sha256 and record, and how it was changed (parent_entry)
    parent: dict[str, Any] | None = None
    # Indices of the layout's boxes with no pixel in the frame: left out of the prompt and the token
    # grids (seethrough_core.in_view); `descriptions` holds only the boxes that were sent.
    boxes_out_of_view: list[int] = field(default_factory=list)
    # A frame made in two stages (docs/upscale.md): the base's size and seed, the tile grid, overlap,
    # strength and each tile's rectangle, seed and boxes
    upscale: dict[str, Any] | None = None
    steps_computed: int | None = None  # steps whose blocks all ran (fewer than `steps` with the step cache)
    condition_cache: bool | None = None  # the speed options it was made with (docs/performance.md)
    step_cache: float | None = None  # None: the step cache was off (or an older record)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    @classmethod
    def from_result(
        cls,
        result: Any,
        layout: Layout,
        source: dict[str, Any] | None = None,
        parent: dict[str, Any] | None = None,
        out_of_view: tuple[int, ...] = (),
    ) -> GenerationRecord:
        """A record of a protocol `Result` for a layout (``parent``: what it is an edit of;
        ``out_of_view``: the boxes left out of the request because the frame does not show them)."""
        height, width = result.image.shape[:2]
        return cls(
            prompt=result.prompt,
            scene_prompt=layout.scene_prompt,
            descriptions=[d for i, d in enumerate(layout.descriptions) if i not in out_of_view],
            seed=result.seed,
            steps=result.steps,
            guidance=result.guidance,
            width=width,
            height=height,
            model=dict(result.model),
            lora=dict(result.lora) if result.lora is not None else None,
            is_noise=result.is_noise,
            call_ids=[list(ids) for ids in result.call_ids],
            timings={**result.timings, **{f"model_{k}": v for k, v in result.model_timings.items()}},
            layout=layout.to_dict(),
            source=dict(source or {}),
            oscr_jpeg_quality=result.oscr_jpeg_quality,
            parent=parent,
            boxes_out_of_view=sorted(out_of_view),
            steps_computed=result.steps_computed,
            condition_cache=result.condition_cache,
            step_cache=result.step_cache,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"format": RECORD_FORMAT, "version": RECORD_VERSION, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n"

    def png_text(self) -> dict[str, str]:
        """PNG text chunks: the whole record, plus the fields image viewers show."""
        comment = f"seed {self.seed}, {self.steps} steps, guidance {self.guidance}"
        if self.is_noise:
            comment += " (random tiny model: noise)"
        return {
            # ASCII-escaped: Blender rewrites PNG text as Latin-1 when it saves an image again.
            PNG_KEY: json.dumps(self.to_dict(), ensure_ascii=True),
            "Description": self.prompt,
            "Software": "SeeThrough Studio",
            "Comment": comment,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRecord:
        if data.get("format") != RECORD_FORMAT:
            raise ValueError(f"not a SeeThrough generation record (format {data.get('format')!r})")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def read_png_record(data: bytes) -> GenerationRecord | None:
    """The record stored in PNG file bytes; None when the PNG has none. ValueError: not a PNG, or a
    damaged record."""
    return _record_of_text(read_png_text(data).get(PNG_KEY))


def read_png_file_record(path: str | Path) -> GenerationRecord | None:
    """read_png_record of a file, reading its text chunks only; OSError when it cannot be read."""
    return _record_of_text(read_png_file_text(path).get(PNG_KEY))


def has_matching_sidecar(image_path: str | Path, sidecar_path: str | Path) -> bool:
    """True when the PNG and the JSON sidecar beside it hold the same record: the image is complete."""
    return matching_sidecar_record(image_path, sidecar_path) is not None


def matching_sidecar_record(image_path: str | Path, sidecar_path: str | Path) -> GenerationRecord | None:
    """The record of a complete image: the one its PNG and the JSON sidecar beside it both hold. None
    for a sidecar left from an earlier image (a run killed between the two renames), a missing or
    unreadable file, or a damaged record."""
    try:
        image_record = read_png_file_record(image_path)
        with open(sidecar_path, encoding="utf-8") as handle:
            sidecar_record = GenerationRecord.from_dict(json.load(handle))
    except Exception:  # unreadable, not a PNG, damaged chunks or JSON: in any case not complete
        return None
    if image_record is None or image_record.to_dict() != sidecar_record.to_dict():
        return None
    return image_record


def _record_of_text(text: str | None) -> GenerationRecord | None:
    if text is None:
        return None
    try:
        return GenerationRecord.from_dict(json.loads(text))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"the PNG's SeeThrough record is damaged: {exc}") from None


def parent_entry(png: bytes, record: GenerationRecord, **details: Any) -> dict[str, Any]:
    """The `parent` of an edit of the picture in ``png``: its sha256, its record and ``details`` (how
    it was changed). The parent's own parent keeps only its sha256, so chains of edits stay small."""
    previous = record.to_dict()
    if previous.get("parent"):
        previous["parent"] = {"sha256": previous["parent"].get("sha256")}
    return {"sha256": hashlib.sha256(png).hexdigest(), "record": previous, **details}


RESULT_SUFFIX = ".png"  # a result picture: its record holds the layout it was generated from


def read_result_record(path: str | Path) -> GenerationRecord:
    """The generation record of a result PNG; LayoutError (naming the file) when it has none."""
    path = Path(path)
    try:
        record = read_png_file_record(path)
    except FileNotFoundError:
        raise LayoutError("", f"file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise LayoutError("", f"cannot read {path}: {exc}") from None
    if record is None:
        raise LayoutError(
            "",
            f"{path} has no SeeThrough generation record, so its layout is unknown; give a layout .json, "
            "a .blend, or a PNG that SeeThrough saved",
        )
    return record


def load_layout_or_result(path: str | Path) -> Layout:
    """A layout from a layout .json, or from the record of a result PNG (the scene it was made from)."""
    path = Path(path)
    if path.suffix.lower() != RESULT_SUFFIX:
        return load_layout(path)
    record = read_result_record(path)
    try:
        return Layout.from_dict(record.layout)
    except LayoutError as exc:
        raise LayoutError(exc.field, f"{path}: the layout in its record: {exc.message}") from None
