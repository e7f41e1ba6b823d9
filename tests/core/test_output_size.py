"""--resolution WxH and --percentage P, applied to a layout (seethrough_core/output_size.py)."""

from __future__ import annotations

import pytest

from seethrough_core.errors import LayoutError
from seethrough_core.layout import Layout, load_layout
from seethrough_core.output_size import OutputSize, parse_percentage, parse_resolution


def street() -> Layout:
    return load_layout("assets/examples/street.json")  # 1024 x 768


def test_resolution_and_percentage_as_blender_has_them():
    assert OutputSize().apply(street()) == street()
    assert OutputSize(percentage=50).apply(street()).resolution == (512, 384)
    assert OutputSize((768, 512)).apply(street()).resolution == (768, 512)
    assert OutputSize((768, 512), 50).apply(street()).resolution == (384, 256)
    # 30 % of 1024 x 768 is 307.2 x 230.4: each side to the nearest multiple of 16, then checked
    with pytest.raises(LayoutError, match=r"30% of 1024x768 is 304x224: the height 224 px is under 256"):
        OutputSize(percentage=30).apply(street())
    assert OutputSize(percentage=40).apply(street()).resolution == (416, 304)
    assert OutputSize(percentage=300).apply(street()).resolution == (3072, 2304)  # in two stages
    # the frame's own size, as a layout may have it: 1080p and 4K are made in two stages
    assert OutputSize((1920, 1080)).apply(street()).resolution == (1920, 1080)
    assert OutputSize((3840, 2160), 50).apply(street()).resolution == (1920, 1088)
    changed = OutputSize(percentage=50).apply(street())
    assert changed.boxes == street().boxes and changed.camera == street().camera


@pytest.mark.parametrize(
    ("text", "words"),
    [("768", "not WIDTHxHEIGHT"), ("10x512", "outside 16..8192"), ("1920x9000", "height 9000 px is outside")],
)
def test_a_bad_resolution_says_what_is_wrong(text, words):
    with pytest.raises(ValueError, match=words):
        parse_resolution(text)


def test_percentages():
    assert parse_percentage("50") == 50 and parse_percentage("25%") == 25
    for bad in ("0", "401", "half"):
        with pytest.raises(ValueError):
            parse_percentage(bad)
    assert parse_resolution("1280X720") == (1280, 720) and parse_resolution("1920x1080") == (1920, 1080)
