"""The picture an edit starts from: a PNG file saved by SeeThrough (`seethrough edit`, `batch
--consistent`), read by the core's one loader (seethrough_core.edit_plan.read_previous_file)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from seethrough_core.edit_plan import PreviousPicture, read_previous_file


def read_pixels(png: bytes) -> np.ndarray:
    """A PNG's pixels: uint8 H x W x 3."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as decoded:
        return np.asarray(decoded.convert("RGB"))


def read_file_pixels(path: Path) -> np.ndarray:
    """A saved PNG file's pixels (seethrough_core.edit_chain.ReadPixels)."""
    return read_pixels(path.read_bytes())


def read_previous(path: Path) -> PreviousPicture:
    """The previous picture and its record; PreviousPictureError when it cannot start an edit."""
    remedy = "edit a PNG that SeeThrough saved (seethrough batch, seethrough edit or the add-on)"
    return read_previous_file(path, read_pixels, remedy)
