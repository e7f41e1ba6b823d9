"""The picture an edit starts from: a PNG file saved by SeeThrough (`seethrough edit`, `batch
--consistent`), read by the core's one loader (seethrough_core.edit_plan.read_previous_file)."""

from __future__ import annotations

from pathlib import Path

from seethrough_core.edit_plan import PreviousPicture, read_previous_file


def read_previous(path: Path) -> PreviousPicture:
    """The previous picture and its record; PreviousPictureError when it cannot start an edit."""
    remedy = "edit a PNG that SeeThrough saved (seethrough batch, seethrough edit or the add-on)"
    return read_previous_file(path, remedy)
