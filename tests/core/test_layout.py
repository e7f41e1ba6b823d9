import json
import math

import pytest

from seethrough_core.errors import LayoutError
from seethrough_core.layout import Layout, load_layout
from seethrough_core.limits import MAX_BOXES


def test_example_asset_loads():
    layout = load_layout("assets/examples/street.json")
    assert layout.resolution == (1024, 768)
    assert layout.descriptions[0] == "a red vintage car"
    assert layout.boxes[0].size == (1.8, 4.5, 1.5)
    assert layout.camera.lens_mm == 35.0


def test_round_trip_through_json(layout_dict, tmp_path):
    layout_dict["light_seed"] = 7
    layout_dict["extras"] = {"note": "kept"}
    first = Layout.from_dict(layout_dict)
    path = tmp_path / "layout.json"
    first.save(path)
    second = load_layout(path)
    assert second == first
    assert second.extras == {"note": "kept"}
    assert second.to_dict() == first.to_dict()


def test_defaults_are_filled(layout_dict):
    del layout_dict["camera"]["lens_mm"]
    del layout_dict["boxes"][0]["rotation_euler_deg"]
    layout = Layout.from_dict(layout_dict)
    assert layout.camera.lens_mm == 50.0
    assert layout.camera.sensor_width_mm == 36.0
    assert layout.boxes[0].rotation_euler_deg == (0.0, 0.0, 0.0)


def _set(data, path, value):
    keys = path.split(".")
    for key in keys[:-1]:
        data = data[int(key)] if key.isdigit() else data[key]
    last = keys[-1]
    if value is _DELETE:
        del data[last]
    elif last.isdigit():
        data[int(last)] = value
    else:
        data[last] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "field", "words"),
    [
        ("boxes.0.size", [1.0, -2.0, 1.0], "boxes[0].size[1]", "positive"),
        ("boxes.0.size", [1.0, 1.0, 0.0], "boxes[0].size[2]", "positive"),
        ("boxes.0.center", [math.nan, 0.0, 0.0], "boxes[0].center[0]", "finite"),
        ("boxes.0.center", [0.0, 0.0], "boxes[0].center", "3 numbers"),
        ("boxes.0.description", "   ", "boxes[0].description", "empty"),
        ("boxes.0.description", _DELETE, "boxes[0].description", "missing"),
        ("resolution", [8200, 768], "resolution", "outside"),
        ("resolution", [8, 8], "resolution", "outside"),
        ("resolution", [512.0, 512], "resolution", "integer"),
        ("version", 2, "version", "unknown layout version"),
        ("format", "something.else", "format", "seethrough.layout"),
        ("camera", _DELETE, "camera", "missing"),
        ("camera.lens_mm", 0.0, "camera.lens_mm", "outside"),
        ("camera.rotation_euler_deg", "30,0,0", "camera.rotation_euler_deg", "3 numbers"),
        ("boxes", [], "boxes", "no boxes"),
        ("light_seed", 1.5, "light_seed", "integer"),
        ("light_seed", 2**31, "light_seed", "0..2147483647"),
    ],
)
def test_bad_layouts_name_the_field(layout_dict, path, value, field, words):
    _set(layout_dict, path, value)
    with pytest.raises(LayoutError) as info:
        Layout.from_dict(layout_dict)
    assert info.value.field == field
    assert words in str(info.value)


def test_too_many_boxes(layout_dict):
    layout_dict["boxes"] = layout_dict["boxes"] * (MAX_BOXES + 1)
    with pytest.raises(LayoutError) as info:
        Layout.from_dict(layout_dict)
    assert info.value.field == "boxes"
    assert str(MAX_BOXES) in str(info.value)


def test_nan_in_a_file_is_rejected(layout_dict, tmp_path):
    path = tmp_path / "nan.json"
    text = json.dumps(layout_dict).replace('"size": [1.8, 2.0, 1.5]', '"size": [1.8, NaN, 1.5]')
    path.write_text(text)
    with pytest.raises(LayoutError) as info:
        load_layout(path)
    assert info.value.field == "boxes[0].size[1]"


def test_unreadable_files(tmp_path):
    with pytest.raises(LayoutError, match="not found"):
        load_layout(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(LayoutError, match="not valid JSON"):
        load_layout(broken)


@pytest.mark.parametrize(
    ("path", "typo", "field", "suggestion"),
    [
        ("", "scene_promt", "scene_promt", "scene_prompt"),
        ("boxes.0", "rotation", "boxes[0].rotation", "rotation_euler_deg"),
        ("camera", "lens", "camera.lens", "lens_mm"),
        ("", "light_sed", "light_sed", "light_seed"),
    ],
)
def test_a_misspelled_key_names_the_closest_known_one(layout_dict, path, typo, field, suggestion):
    """A typo in an optional key used to fall back to its default without a word."""
    target = layout_dict
    for key in path.split(".") if path else []:
        target = target[int(key)] if key.isdigit() else target[key]
    target[typo] = target.pop(suggestion, 1)
    with pytest.raises(LayoutError) as info:
        Layout.from_dict(layout_dict)
    assert info.value.field == field
    assert f"unknown key {typo!r}" in str(info.value)
    assert f"did you mean {suggestion!r}?" in str(info.value)


def test_an_unknown_key_in_a_file_is_refused_and_extras_stay_free_form(layout_dict, tmp_path):
    layout_dict["extras"] = {"anything": {"nested": [1, 2]}, "scene_promt": "not checked"}
    layout_dict["boxes"][0]["colour"] = "red"
    path = tmp_path / "layout.json"
    path.write_text(json.dumps(layout_dict))
    with pytest.raises(LayoutError, match=r"unknown key 'colour' in boxes\[0\]; the keys here are"):
        load_layout(path)
    del layout_dict["boxes"][0]["colour"]
    path.write_text(json.dumps(layout_dict))
    assert load_layout(path).extras["anything"] == {"nested": [1, 2]}
