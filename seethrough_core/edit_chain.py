"""A saved picture's chain of edits: the pictures it was made from, one `parent` link after another.

Every edit's record names the picture it started from (its ``parent``: the file and its sha256). Walking
those links back rebuilds where each pixel of the picture was generated (pixel_sources.py), so the next
camera move samples a kept pixel once, from the picture that generated it, and not from a picture that
already resampled it: for `seethrough edit`, the add-on's Regenerate Changed and `seethrough batch
--consistent` alike. A link whose file is gone, changed since, or unreadable ends the walk: the last
picture reached then counts as generated in full, as a picture without a parent does.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .generate_and_save import region_path_for
from .layout import Layout
from .limits import KNOWN_SOURCES_KEPT, RESUME_SOURCES_FRAMES
from .pixel_sources import FULL_KINDS, PixelSources, ShotFrame, replay_sources
from .png import read_png_rgb
from .record import read_png_record


@dataclass(frozen=True)
class EditChain:
    """A saved picture, its pixels decoded, and the way to the pictures before it."""

    name: str  # how people know it (an image's name in Blender)
    file: Path | None  # where it is saved (None: nowhere known, so no picture before it is reachable)
    sha256: str  # of its PNG bytes: the file must still hold them
    image: np.ndarray  # its pixels, uint8 H x W x 3

    @property
    def label(self) -> str:
        """Its name in pixel sources: its file, as the records of its edits name it (else its name)."""
        return str(self.file) if self.file is not None else self.name

    def picture_of(self, label: str) -> np.ndarray:
        """A picture of the chain by its label (pixel_sources.PictureOf); this one is decoded already."""
        return self.image if label == self.label else read_png_rgb(label)

    def sources(self, limit: int = RESUME_SOURCES_FRAMES) -> PixelSources:
        """Where each pixel of this picture was generated, rebuilt from it and up to ``limit`` pictures
        before it, back to the last one generated in full: their records' layouts and kinds, and the
        regions saved beside them. All its own when its file cannot be read."""
        if self.file is None:
            return PixelSources.generated(self.label, *self.image.shape[:2])
        known = _known_sources(self.file, self.sha256, self.image.shape[:2])
        if known is not None:
            return known
        frames: list[ShotFrame] = []
        link: dict[str, Any] | None = {"file": str(self.file), "sha256": self.sha256}
        beside: Path | None = None
        while link is not None and len(frames) <= limit:
            found = _linked(link, beside)
            if found is None:
                break
            path, layout, parent = found
            frame, link = self._frame(path, layout, parent)
            frames.append(frame)
            beside = path.parent
        if not frames:
            return PixelSources.generated(self.label, *self.image.shape[:2])
        return replay_sources(frames[::-1])

    def _frame(
        self, path: Path, layout: Layout, parent: dict[str, Any]
    ) -> tuple[ShotFrame, dict[str, Any] | None]:
        """The picture at ``path`` as a frame of the chain, and the link to the picture before it (None:
        the walk ends here)."""
        kind = parent.get("kind")
        full = ShotFrame(str(path), layout, None, None)
        if kind in FULL_KINDS:
            return full, None
        generated = None
        if "strength" in parent:  # an edit was made (edit_plan records its strength): its region is saved
            generated = self._region(path, (layout.height, layout.width))
            if generated is None:  # the region is gone: the picture counts as generated in full
                return full, None
        return ShotFrame(str(path), layout, kind, generated), parent

    def _region(self, path: Path, shape: tuple[int, int]) -> np.ndarray | None:
        region_path = region_path_for(path)
        if not region_path.is_file():
            return None
        try:
            region = read_png_rgb(region_path)[..., 0] > 0
        except (OSError, ValueError):
            return None
        return region if region.shape == shape else None


def _linked(link: dict[str, Any], beside: Path | None) -> tuple[Path, Layout, dict[str, Any]] | None:
    """The picture a link names: its file, its record's layout and parent. Looked for at the path the link
    names, else under the same name in ``beside`` (the folder of the picture that links to it: pictures
    moved together). None when neither holds the linked PNG with a usable record."""
    if not link.get("file"):
        return None
    named = Path(str(link["file"]))
    for path in dict.fromkeys([named] + ([beside / named.name] if beside is not None else [])):
        try:
            png = path.read_bytes()
        except OSError:
            continue
        if link.get("sha256") and hashlib.sha256(png).hexdigest() != link["sha256"]:
            continue  # another picture, or this one changed since
        try:
            record = read_png_record(png)
            if record is not None:
                return path, Layout.from_dict(record.layout), record.parent or {}
        except (ValueError, KeyError, TypeError):  # not a PNG, a damaged record, an unusable layout
            pass
    return None


# Sources planned in this process: path -> (sha256 of the picture it was edited from, its sources).
_known: OrderedDict[str, tuple[str, PixelSources]] = OrderedDict()
_known_lock = threading.Lock()


def remember_sources(sources: PixelSources, parent_sha256: str) -> None:
    """Keep the sources of a picture about to be saved at ``sources.label``, an edit of the picture
    whose PNG has ``parent_sha256``: the next edit of it (the add-on's Regenerate Changed after
    another camera move) finds them here instead of replaying its chain, one reprojection per
    earlier camera move, on Blender's main thread. The newest KNOWN_SOURCES_KEPT are kept."""
    key = _known_key(sources.label)
    with _known_lock:
        _known[key] = (parent_sha256, sources)
        _known.move_to_end(key)
        while len(_known) > KNOWN_SOURCES_KEPT:
            _known.popitem(last=False)


def _known_sources(file: Path, sha256: str, shape: tuple[int, ...]) -> PixelSources | None:
    """The remembered sources of the picture at ``file``, if that file is still the picture they were
    planned for: its bytes are ``sha256`` and its record names the same parent."""
    with _known_lock:
        entry = _known.get(_known_key(file))
    if entry is None:
        return None
    parent_sha256, sources = entry
    try:
        png = file.read_bytes()
        record = read_png_record(png)
    except (OSError, ValueError):
        return None
    if hashlib.sha256(png).hexdigest() != sha256 or record is None or sources.index.shape != tuple(shape):
        return None
    return sources if (record.parent or {}).get("sha256") == parent_sha256 else None


def _known_key(path: str | Path) -> str:
    """One spelling of a path (Blender gives a result's file back through its own path handling)."""
    return str(Path(path).resolve())
