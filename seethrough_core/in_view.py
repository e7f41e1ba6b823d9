"""Which boxes a frame (or a region of it) shows: only those go into the prompt and the token grids.

A box with no pixel of its amodal mask in view has no condition token, so naming it in the prompt
asks the model for an object nothing places (a dog that walked out of the shot appears anyway).
Such boxes are left out of that frame's request, the record lists them (`boxes_out_of_view`) and
the command line and the add-on say so. Boxes in view keep the checkpoint's conventions exactly:
the same descriptions in the same order, the same token grids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .errors import SeeThroughError
from .generation_settings import GenerationSettings
from .token_grid import binarize

# A pixel region (rows, columns) of the frame, e.g. one tile of it; None: the whole frame.
Region = tuple[slice, slice]


class NothingInViewError(SeeThroughError):
    """No box of the layout shows in the frame: there is nothing to generate."""


@dataclass(frozen=True)
class BoxesInView:
    """The indices of a layout's boxes that show in view, and of those that do not."""

    shown: tuple[int, ...]
    left_out: tuple[int, ...]

    def note(self, descriptions: Sequence[str], where: str) -> str | None:
        """One line for the artist naming the boxes left out, or None when every box shows."""
        if not self.left_out:
            return None
        names = ", ".join(repr(descriptions[i]) for i in self.left_out)
        return f"{where}: not in view, left out of the prompt: {names}"

    def settings(self, settings: GenerationSettings) -> GenerationSettings:
        """The settings with only the boxes in view (unchanged when every box shows)."""
        if not self.shown:
            raise NothingInViewError(
                "no box is in view, so there is nothing to generate: move the camera or the boxes"
            )
        if not self.left_out:
            return settings
        return replace(settings, descriptions=[settings.descriptions[i] for i in self.shown])

    def token_grids(self, grids: np.ndarray) -> np.ndarray:
        """The token grids of the boxes in view, in layout order."""
        return grids if not self.left_out else grids[list(self.shown)]


def boxes_in_view(amodal: np.ndarray, region: Region | None = None) -> BoxesInView:
    """Which boxes have at least one pixel of their amodal mask (N x H x W, bool or 8-bit with 255
    inside, or their N x 32 x 32 token grids when ``region`` is None) inside ``region`` of the frame."""
    masks = binarize(amodal)
    if masks.ndim != 3:
        raise ValueError(f"expected N x H x W masks, got shape {masks.shape}")
    window = masks if region is None else masks[:, region[0], region[1]]
    present = window.reshape(len(masks), -1).any(axis=1)
    shown = tuple(int(i) for i in np.flatnonzero(present))
    left_out = tuple(int(i) for i in np.flatnonzero(~present))
    return BoxesInView(shown, left_out)
