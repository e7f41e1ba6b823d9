"""Saving a finished image with its record: atomic files, the sidecar, and the fallback folder."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from seethrough_core.errors import SeeThroughError
from seethrough_core.generate_and_save import (
    Destination,
    base_path_for,
    frame_path_for,
    region_path_for,
    save_result,
    sidecar_path_for,
    tiles_dir_for,
    unused_image_path,
)
from seethrough_core.layout import Layout
from seethrough_core.png import read_png_text
from seethrough_core.protocol import Result
from seethrough_core.record import PNG_KEY, parent_entry, read_png_record


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


def test_an_edit_is_saved_with_its_parent_and_region_and_read_back(layout_dict, tmp_path):
    layout = Layout.from_dict(layout_dict)
    first = save_result(result(), layout, Destination(tmp_path / "a.png", {}, sidecar=True))
    png = first.image_path.read_bytes()
    assert read_png_record(png) == first.record  # read back without Pillow, as the add-on does
    region = np.zeros((256, 256), np.uint8)
    region[40:80, 40:90] = 255
    parent = parent_entry(png, first.record, kind="edit", strength=0.5)
    destination = Destination(tmp_path / "b.png", {}, sidecar=True, parent=parent, region=region)
    second = save_result(result(), layout, destination)
    assert second.record.parent["sha256"] == hashlib.sha256(png).hexdigest()
    assert second.record.parent["record"]["seed"] == 7 and second.record.parent["strength"] == 0.5
    assert np.array_equal(np.asarray(Image.open(region_path_for(second.image_path))), region)
    # A chain of edits stays small: the grandparent is named by its sha256 only.
    third = parent_entry(second.image_path.read_bytes(), second.record)
    assert third["record"]["parent"] == {"sha256": hashlib.sha256(png).hexdigest()}


def test_png_text_written_by_other_tools_is_read(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("plain", "latin text")
    info.add_text("packed", "x" * 2000, zip=True)
    info.add_itxt("utf", "gr\u00fc\u00dfe", zip=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "p.png", pnginfo=info)
    text = read_png_text((tmp_path / "p.png").read_bytes())
    assert text == {"plain": "latin text", "packed": "x" * 2000, "utf": "gr\u00fc\u00dfe"}
    assert read_png_record((tmp_path / "p.png").read_bytes()) is None
    with pytest.raises(ValueError, match="not a PNG"):
        read_png_text(b"GIF89a")


def test_a_new_name_never_lands_on_an_earlier_frame_its_base_or_its_tiles(tmp_path):
    """NAME.png, NAME_base.png (a two-stage frame's base), NAME.tiles/ (an unfinished upscale) and the
    files an edit leaves beside a picture each make NAME taken; the base is always named after its frame."""
    frame = tmp_path / "shot.png"
    assert unused_image_path(frame) == frame
    for beside in ("shot_base.png", "shot_base.json", "shot_region.png", "shot_reprojected.png", "shot.json"):
        (tmp_path / beside).write_bytes(b"x")
        assert unused_image_path(frame) == tmp_path / "shot_2.png", beside
        (tmp_path / beside).unlink()
    tiles_dir_for(frame).mkdir()
    assert unused_image_path(frame) == tmp_path / "shot_2.png"
    (tmp_path / "shot_2.png").write_bytes(b"x")
    assert unused_image_path(frame) == tmp_path / "shot_3.png"

    assert base_path_for(tmp_path / "shot_2.png") == tmp_path / "shot_2_base.png"
    assert frame_path_for(tmp_path / "shot_2_base.png") == tmp_path / "shot_2.png"
    assert frame_path_for(tmp_path / "shot_2.png") is None and frame_path_for(tmp_path / "_base.png") is None


def test_an_edit_of_a_later_frame_finds_that_frames_own_base(tmp_path):
    from seethrough_core.edit_plan import base_picture_of

    for name in ("shot.png", "shot_base.png", "shot_2.png", "shot_2_base.png"):
        (tmp_path / name).write_bytes(b"x")
    assert base_picture_of(tmp_path / "shot_2.png", remedy="r") == tmp_path / "shot_2_base.png"
    assert base_picture_of(tmp_path / "shot_2_base.png", remedy="r") == tmp_path / "shot_2_base.png"
    (tmp_path / "shot_2_base.png").unlink()
    with pytest.raises(SeeThroughError, match="shot_2.png is a frame .* gone .*shot_2_base.png.*: put it"):
        base_picture_of(tmp_path / "shot_2.png", remedy="put it back")
