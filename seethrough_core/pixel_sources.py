"""Where each pixel of a consistent shot's frame was generated, so a long camera move stays sharp.

After a camera move a frame keeps most of the frame before it, reprojected (reprojection.py). Chained
frame after frame, a kept pixel would be resampled once per frame, and a long shot would soften a little
with every frame. Instead each frame remembers, for every pixel, the frame that generated it and where
in that frame's picture; a camera move composes its sampling positions with those, so a kept pixel is
sampled once, from the picture that generated it, however many frames ago (docs/batch.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .layout import Layout
from .reprojection import REPROJECTED, source_positions
from .resample import bilinear_taps

FULL_KINDS = (None, "regeneration")  # a frame's parent kind when every pixel was generated there

# A frame's picture by its label (the path it was saved at): uint8 H x W x 3.
PictureOf = Callable[[str], np.ndarray]


@dataclass(frozen=True)
class PixelSources:
    """For every pixel of one frame (``label``): which frame generated it, and where in its picture."""

    label: str  # the frame these sources describe (the path its picture was saved at)
    labels: tuple[str, ...]  # the frames its pixels come from
    index: np.ndarray  # int32 H x W: which of ``labels``
    xy: np.ndarray  # float64 H x W x 2: where in that frame's picture (x, y; a pixel centre is its index)

    @classmethod
    def generated(cls, label: str, height: int, width: int) -> PixelSources:
        """A frame generated in full: every pixel its own."""
        return cls(label, (label,), np.zeros((height, width), np.int32), _grid(height, width))

    def moved(self, source_xy: np.ndarray, generated: np.ndarray, label: str) -> PixelSources:
        """The sources of the next frame, ``label``, after a camera move: a pixel in ``generated`` is its
        own; any other was sampled at ``source_xy`` in this frame's picture, so it comes from wherever
        that spot came from. A spot between pixels of different sources (at the edge of a region that
        was generated) takes this frame's picture as its source, as a single reprojection does."""
        height, width = self.index.shape
        x = np.clip(source_xy[..., 0], 0, width - 1)
        y = np.clip(source_xy[..., 1], 0, height - 1)
        taps = bilinear_taps(x, y, width, height)
        first = self.index[taps[0][0], taps[0][1]]
        agree = np.ones(first.shape, dtype=bool)
        xy = np.zeros((*first.shape, 2), dtype=np.float64)
        for rows, cols, weight in taps:
            agree &= (self.index[rows, cols] == first) | (weight == 0)
            xy += weight[..., None] * self.xy[rows, cols]
        labels, previous = _with_label(list(self.labels), self.label)
        index = np.where(agree, first, previous)
        xy = np.where(agree[..., None], xy, np.stack([x, y], axis=-1))
        return _with_generated(label, labels, index, xy, generated)

    def edited(self, generated: np.ndarray, label: str) -> PixelSources:
        """The sources of the next frame, ``label``, when the camera stayed: a kept pixel is this
        frame's pixel as it is, so it comes from where that one came from."""
        return _with_generated(label, list(self.labels), self.index, self.xy, generated)

    def renamed(self, label: str) -> PixelSources:
        """These sources with their frame called ``label`` (its picture's path, once it is chosen)."""
        return replace(self, label=label, labels=tuple(label if n == self.label else n for n in self.labels))

    def sample(self, picture_of: PictureOf, keep: np.ndarray, start: np.ndarray) -> np.ndarray:
        """``start`` (uint8 H x W x 3) with every ``keep`` pixel sampled once, bilinearly, from the
        picture of the frame that generated it."""
        out = start.copy()
        for i, label in enumerate(self.labels):
            where = keep & (self.index == i)
            if not where.any():
                continue
            picture = picture_of(label)
            if picture.shape != (*self.index.shape, 3):
                raise ValueError(f"{label} is {list(picture.shape)}, not the shot's {list(self.index.shape)}")
            out[where] = _bilinear(picture, self.xy[where])
        return out

    def shares(self) -> dict[str, float]:
        """The share of the frame's pixels each frame generated, largest first."""
        counts = np.bincount(self.index.ravel(), minlength=len(self.labels)) / self.index.size
        order = np.argsort(-counts, kind="stable")
        return {self.labels[i]: float(counts[i]) for i in order if counts[i] > 0}


@dataclass(frozen=True)
class ShotFrame:
    """A frame of a shot as saved: what ``replay_sources`` needs to rebuild its sources."""

    label: str
    layout: Layout
    kind: str | None  # its record's parent kind (None: no parent, generated in full)
    generated: np.ndarray | None  # bool H x W: the region generated in it (None: none, or all of it)


def replay_sources(frames: Sequence[ShotFrame]) -> PixelSources:
    """The sources of the last of ``frames`` (oldest first; the first is taken as generated in full),
    rebuilt from their layouts and regions: where a resumed shot goes on from. The same as the sources
    kept while the shot ran, for they are made by the same steps from the same geometry."""
    first = frames[0]
    sources = PixelSources.generated(first.label, first.layout.height, first.layout.width)
    for before, frame in zip(frames, frames[1:], strict=False):
        shape = (frame.layout.height, frame.layout.width)
        generated = frame.generated if frame.generated is not None else np.zeros(shape, dtype=bool)
        if frame.kind in FULL_KINDS or shape != sources.index.shape:
            sources = PixelSources.generated(frame.label, *shape)
        elif frame.kind == REPROJECTED:
            where = source_positions(before.layout, frame.layout)  # the move's sampling alone
            sources = sources.moved(where, generated, frame.label)
        else:
            sources = sources.edited(generated, frame.label)
    return sources


def _with_generated(
    label: str, labels: list[str], index: np.ndarray, xy: np.ndarray, generated: np.ndarray
) -> PixelSources:
    """Sources with the ``generated`` pixels the frame ``label``'s own, and only the frames still used."""
    if generated.shape != index.shape:
        raise ValueError(f"the region is {list(generated.shape)}, the frame {list(index.shape)}")
    labels, own = _with_label(labels, label)
    index = np.where(generated, own, index)
    xy = np.where(generated[..., None], _grid(*index.shape), xy)
    used = np.flatnonzero(np.bincount(index.ravel(), minlength=len(labels)))
    renumber = np.zeros(len(labels), dtype=np.int32)
    renumber[used] = np.arange(len(used), dtype=np.int32)
    return PixelSources(label, tuple(labels[i] for i in used), renumber[index], xy)


def _with_label(labels: list[str], label: str) -> tuple[list[str], int]:
    """``labels`` holding ``label`` once, and its index."""
    if label in labels:
        return labels, labels.index(label)
    return [*labels, label], len(labels)


def _grid(height: int, width: int) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.stack([cols, rows], axis=-1)


def _bilinear(picture: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """``picture`` sampled at the points ``xy`` (N x 2), rounded to 8 bits."""
    height, width = picture.shape[:2]
    x, y = np.clip(xy[:, 0], 0, width - 1), np.clip(xy[:, 1], 0, height - 1)
    value = np.zeros((len(xy), picture.shape[2]), dtype=np.float64)
    for rows, cols, weight in bilinear_taps(x, y, width, height):
        value += weight[:, None] * picture[rows, cols]  # as reproject() sums them
    return np.clip(np.rint(value), 0, 255).astype(np.uint8)
