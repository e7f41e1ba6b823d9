"""The training dataset on disk: `seethrough dataset make` writes it, `seethrough train` reads it.

A dataset is a folder::

    metadata.jsonl                  one JSON object per kept sample, one line each, in the order made
    samples/<id>/target.png         the image the model learns to make (RGB, width x height)
    samples/<id>/oscr.jpg           its OSCR condition, saved as JPEG like the checkpoint's own data
    samples/<id>/masks/amodal_NNN.png, visible_NNN.png   per box, 8-bit, 255 inside
    samples/<id>/masks.json         pixel counts, visibility ratios, 32 x 32 token grids

Paths inside a sample are relative to the dataset folder, so a dataset can be moved or copied whole.
The prompt is stored with the character span of each description in it; the trainer turns spans into
T5 token positions (`call_ids`) with the tokenizer of the model it trains, as the server does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import SeeThroughError
from .layout import Layout
from .oscr_spec import SEETHROUGH3D_V1

TARGET_NAME = "target.png"  # a sample's files, in samples/<id>/
OSCR_NAME = "oscr.jpg"
# The quality a sample's OSCR is saved at when its profile has no JPEG round trip of its own: the
# checkpoint's own data's (the reference profile always has one).
OSCR_JPEG_QUALITY: int = SEETHROUGH3D_V1.condition_jpeg_quality  # type: ignore[assignment]

METADATA_NAME = "metadata.jsonl"
SAMPLES_DIR = "samples"
SAMPLE_FORMAT = "seethrough.dataset-sample"
SAMPLE_VERSION = 1


class DatasetError(SeeThroughError):
    """A dataset folder or one of its samples cannot be used; the message names the file, line and field."""


@dataclass(frozen=True)
class DatasetSample:
    id: str  # unique in its dataset; also the sample's folder name under samples/
    target: str  # relative paths, from the dataset folder
    oscr: str
    amodal_masks: list[str]  # one per box, in layout order
    visible_masks: list[str]
    masks_json: str
    layout: dict[str, Any]  # the layout schema (docs/layout.md)
    prompt: str  # "a photo of " + descriptions joined by " and " + scene prompt
    descriptions: list[str]
    spans: list[list[int]]  # [start, end) of each description in the prompt
    visibility: list[float]  # visible / amodal pixels, per box
    width: int
    height: int
    seed: int  # the scene's own seed: the same seed makes the same scene
    scene: dict[str, Any] = field(default_factory=dict)  # how it was made: camera, lights, assets

    def to_json_line(self) -> str:
        return json.dumps({"format": SAMPLE_FORMAT, "version": SAMPLE_VERSION, **asdict(self)}) + "\n"

    def parsed_layout(self) -> Layout:
        return Layout.from_dict(self.layout)

    def path(self, root: str | Path, relative: str) -> Path:
        return Path(root) / relative


REQUIRED_FIELDS = tuple(f.name for f in fields(DatasetSample) if f.name != "scene")


def sample_from_dict(raw: Any, where: str) -> DatasetSample:
    """A sample from one parsed metadata line; ``where`` (file:line) starts every error message."""
    if not isinstance(raw, dict):
        raise DatasetError(f"{where}: a sample must be a JSON object")
    if raw.get("format", SAMPLE_FORMAT) != SAMPLE_FORMAT:
        raise DatasetError(f"{where}: not a SeeThrough dataset sample (format {raw.get('format')!r})")
    if int(raw.get("version", SAMPLE_VERSION)) > SAMPLE_VERSION:
        raise DatasetError(
            f"{where}: sample version {raw['version']} is newer than this program reads ({SAMPLE_VERSION}); "
            "update SeeThrough"
        )
    missing = [name for name in REQUIRED_FIELDS if name not in raw]
    if missing:
        raise DatasetError(f"{where}: the sample lacks the field(s) {', '.join(missing)}")
    boxes = len(raw["descriptions"])
    for name in ("amodal_masks", "visible_masks", "spans", "visibility"):
        if not isinstance(raw[name], list) or len(raw[name]) != boxes:
            raise DatasetError(f"{where}: field {name} must list one entry per box ({boxes})")
    return DatasetSample(**{f.name: raw[f.name] for f in fields(DatasetSample) if f.name in raw})


def iter_samples(root: str | Path) -> Iterator[DatasetSample]:
    """Every sample of a dataset folder, in the order they were written. Raises DatasetError."""
    metadata = Path(root) / METADATA_NAME
    if not metadata.is_file():
        raise DatasetError(
            f"{root} is not a dataset: it has no {METADATA_NAME} (make one with `seethrough dataset make`)"
        )
    with open(metadata, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            if not line.endswith("\n"):
                break  # a line cut short by a crash mid-write: the sample is redone on resume
            where = f"{metadata}:{number}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{where}: not valid JSON ({exc.msg})") from None
            yield sample_from_dict(raw, where)


def read_samples(root: str | Path) -> list[DatasetSample]:
    return list(iter_samples(root))


def append_sample(root: str | Path, sample: DatasetSample) -> None:
    """Add one sample line. Write the sample's files first: a line means a finished sample.

    One process writes a dataset's metadata (workers hand their samples to it). A crash mid-write
    leaves at most one unterminated last line: readers skip it, and the next append cuts it off.
    """
    data = sample.to_json_line().encode("utf-8")
    path = Path(root) / METADATA_NAME
    with open(path, "ab+") as metadata:
        size = metadata.seek(0, os.SEEK_END)
        if size:
            metadata.seek(max(0, size - 65536))
            tail = metadata.read()
            if not tail.endswith(b"\n"):
                cut = tail.rfind(b"\n")
                metadata.truncate(size - len(tail) + cut + 1 if cut >= 0 else (0 if size <= 65536 else size))
        metadata.write(data)
        metadata.flush()
        os.fsync(metadata.fileno())


def sample_dir(root: str | Path, sample_id: str) -> Path:
    return Path(root) / SAMPLES_DIR / sample_id
