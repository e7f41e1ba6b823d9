"""The picture an edit starts from: a PNG saved by SeeThrough, its pixels and its generation record."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from seethrough_core.edit_plan import PreviousPicture
from seethrough_core.errors import LayoutError
from seethrough_core.layout import Layout
from seethrough_core.record import read_png_record


class EditInputError(ValueError):
    """An input an edit cannot use (`seethrough edit` exits 2); the message says why and what to do."""


def read_previous(path: Path) -> PreviousPicture:
    """The previous picture and its record; EditInputError when it cannot be the start of an edit."""
    from PIL import Image

    try:
        png = path.read_bytes()
    except OSError as exc:
        raise EditInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        record = read_png_record(png)
    except ValueError as exc:
        raise EditInputError(f"{path}: {exc}") from None
    if record is None:
        raise EditInputError(
            f"{path} has no SeeThrough generation record, so its layout and seed are unknown; "
            "edit a PNG that SeeThrough saved (seethrough batch, seethrough edit or the add-on)"
        )
    with Image.open(io.BytesIO(png)) as decoded:
        image = np.asarray(decoded.convert("RGB"))
    if image.shape[:2] != (record.height, record.width):
        raise EditInputError(
            f"{path} is {image.shape[1]}x{image.shape[0]} px but its record says "
            f"{record.width}x{record.height}: the picture was changed after it was generated"
        )
    try:
        layout = Layout.from_dict(record.layout)
    except LayoutError as exc:
        raise EditInputError(f"{path}: the layout in its record is not usable: {exc}") from None
    return PreviousPicture(path.name, {"file": str(path)}, png, image, record, layout)
