"""Generate one image on a server and save it with its record: the one path the add-on and the batch share.

Submit the request, stream its progress to the caller, and when the image arrives write it at once as a
PNG carrying its generation record (and, if asked, the record as a JSON sidecar), each file written
atomically. An image that arrived is never lost: if its folder cannot be written, it goes to the
fallback folder instead.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .client import Job, SeeThroughClient
from .errors import SeeThroughError
from .layout import Layout
from .png import write_bytes_atomic, write_png
from .protocol import GenerateRequest, Progress, Result
from .record import GenerationRecord

log = logging.getLogger(__name__)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
BASE_SUFFIX = "_base"  # NAME_base.png: the base picture of the frame NAME.png (docs/upscale.md)


def safe_name(text: str) -> str:
    """A file-name-safe version of a scene, camera or file name."""
    return _UNSAFE.sub("_", text).strip("._") or "unnamed"


def sidecar_path_for(image_path: Path) -> Path:
    """Where an image's record is written as JSON: beside it, same name."""
    return image_path.with_suffix(".json")


def unused_image_path(image_path: Path) -> Path:
    """``image_path`` if nothing is saved there yet, else the first free NAME_2.png, NAME_3.png ...: a
    finished image (or its record, region, reprojection or base picture) is never replaced by a new
    result, and a frame made in two stages gets a base name that is free too."""

    def taken(path: Path) -> bool:
        kept = (path, sidecar_path_for(path), region_path_for(path), reprojected_path_for(path))
        base = base_path_for(path)
        return any(p.exists() for p in (*kept, base, sidecar_path_for(base), tiles_dir_for(path)))

    candidate, number = image_path, 1
    while taken(candidate):
        number += 1
        candidate = image_path.with_name(f"{image_path.stem}_{number}{image_path.suffix}")
    return candidate


def region_path_for(image_path: Path) -> Path:
    """Where an edit's region mask is written: beside the image, NAME_region.png."""
    return image_path.with_name(f"{image_path.stem}_region.png")


def tiles_dir_for(frame_path: Path) -> Path:
    """Where an upscale keeps its finished tiles until the frame is written: beside it, NAME.tiles/."""
    return frame_path.with_name(f"{frame_path.stem}.tiles")


def base_path_for(frame_path: Path) -> Path:
    """Where the base picture of a frame made in two stages is kept (docs/upscale.md): beside the
    frame, NAME_base.png."""
    return frame_path.with_name(f"{frame_path.stem}{BASE_SUFFIX}{frame_path.suffix}")


def frame_path_for(base_path: Path) -> Path | None:
    """The frame a base picture (NAME_base.png) is made into, NAME.png; None for any other name."""
    stem = base_path.stem
    if not stem.endswith(BASE_SUFFIX) or stem == BASE_SUFFIX:
        return None
    return base_path.with_name(f"{stem.removesuffix(BASE_SUFFIX)}{base_path.suffix}")


def upscaled_path_for(picture: Path, size: tuple[int, int]) -> Path:
    """The frame a saved picture is upscaled into, unless said otherwise: NAME_WxH.png beside it
    (`seethrough upscale` writes that name into its output folder)."""
    return picture.with_name(f"{safe_name(picture.stem)}_{size[0]}x{size[1]}{picture.suffix}")


def reprojected_path_for(image_path: Path) -> Path:
    """Where a camera move's reprojected picture (what its edit started from) is written, beside the image:
    NAME_reprojected.png."""
    return image_path.with_name(f"{image_path.stem}_reprojected.png")


@dataclass(frozen=True)
class Destination:
    """Where and how an image is saved."""

    image_path: Path
    source: dict[str, Any]  # the record's "source": input file, scene, camera, frame, server
    sidecar: bool = False  # also write the record as JSON beside the image (same name, .json)
    fallback_dir: Path | None = None  # where the image goes if its own folder cannot be written
    parent: dict[str, Any] | None = None  # an edit's origin, for the record (record.parent_entry)
    region: np.ndarray | None = None  # an edit's mask (uint8, 255 = may change), saved beside the image
    reprojected: np.ndarray | None = None  # a camera move's reprojected picture, saved beside the image
    out_of_view: tuple[int, ...] = ()  # boxes left out of the request: not in the frame (in_view.py)


@dataclass(frozen=True)
class SavedImage:
    image_path: Path
    sidecar_path: Path | None
    record: GenerationRecord
    result: Result | None  # None: saved without generating (an unchanged frame of a consistent batch)


def generate_and_save(
    client: SeeThroughClient,
    request: GenerateRequest,
    layout: Layout,
    destination: Destination,
    *,
    on_accepted: Callable[[Job], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> SavedImage | None:
    """Run ``request`` on ``client`` and save its image at ``destination``; None if it was cancelled.

    ``on_accepted`` gets the accepted job (to cancel it from another thread, or to report its queue
    position); ``on_progress`` every progress message. Server failures raise the client's errors.
    """
    job = client.submit(request)
    if on_accepted is not None:
        on_accepted(job)
    for event in job.events():
        if isinstance(event, Progress):
            if on_progress is not None:
                on_progress(event)
        elif isinstance(event, Result):
            return save_result(event, layout, destination)
        else:
            return None
    raise SeeThroughError(f"job {job.id} ended without a result or a cancellation")


def save_result(result: Result, layout: Layout, destination: Destination) -> SavedImage:
    """Write ``result`` as a PNG with its record (and the record beside it as JSON if asked)."""
    record = GenerationRecord.from_result(
        result, layout, destination.source, destination.parent, destination.out_of_view
    )
    return save_image(result.image, record, destination, result)


def save_image(
    image: np.ndarray, record: GenerationRecord, destination: Destination, result: Result | None = None
) -> SavedImage:
    """Write ``image`` as a PNG carrying ``record`` (and the sidecar, and an edit's region, if asked)."""
    folders = [destination.image_path.parent]
    if destination.fallback_dir is not None:
        folders.append(destination.fallback_dir)
    for folder in folders:
        path = folder / destination.image_path.name
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_png(path, image, text=record.png_text())
            if destination.region is not None:
                write_png(region_path_for(path), destination.region)
            if destination.reprojected is not None:
                write_png(reprojected_path_for(path), destination.reprojected)
            sidecar_path = sidecar_path_for(path) if destination.sidecar else None
            if sidecar_path is not None:
                write_bytes_atomic(sidecar_path, record.to_json().encode("utf-8"))
            return SavedImage(path, sidecar_path, record, result)
        except OSError as exc:
            log.warning("cannot write %s: %s", path, exc)
    raise SeeThroughError(
        f"the image arrived but could not be written to {' nor '.join(str(f) for f in folders)}"
    )
