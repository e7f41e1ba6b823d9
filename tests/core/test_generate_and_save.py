"""Saving a finished image with its record: atomic files, the sidecar, and the fallback folder."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from seethrough_core.generate_and_save import Destination, save_result, sidecar_path_for
from seethrough_core.layout import Layout
from seethrough_core.protocol import Result
from seethrough_core.record import PNG_KEY


def result() -> Result:
    image = np.zeros((256, 256, 3), dtype=np.uint8)
    image[10:20] = 200
    return Result("r", "j", image, 7, "a photo of a car", [[4]], 2, 3.5, {"total_s": 1.0}, {}, {"name": "m"},
                  None, True, {}, 90)  # fmt: skip


def test_the_png_carries_the_record_and_the_sidecar_repeats_it(layout_dict, tmp_path):
    layout = Layout.from_dict(layout_dict)
    saved = save_result(
        result(), layout, Destination(tmp_path / "out" / "a.png", {"input": "x"}, sidecar=True)
    )
    assert saved.image_path == tmp_path / "out" / "a.png" and saved.sidecar_path == sidecar_path_for(
        saved.image_path
    )
    with Image.open(saved.image_path) as png:
        embedded = json.loads(png.text[PNG_KEY])
        assert np.array_equal(np.asarray(png), result().image)
    sidecar = json.loads(saved.sidecar_path.read_text())
    assert embedded == sidecar and sidecar["seed"] == 7 and sidecar["oscr_jpeg_quality"] == 90
    assert sidecar["source"] == {"input": "x"} and not list(tmp_path.rglob(".*.partial"))


def test_an_image_that_arrived_goes_to_the_fallback_folder_when_its_own_cannot_be_written(
    layout_dict, tmp_path
):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    destination = Destination(blocked / "a.png", {}, fallback_dir=tmp_path / "fallback")
    saved = save_result(result(), Layout.from_dict(layout_dict), destination)
    assert saved.image_path == tmp_path / "fallback" / "a.png" and saved.image_path.is_file()
    assert saved.sidecar_path is None
