"""Nothing an artist gives the command line is lost or silently ignored: render, batch and edit with a
real tiny server and real Blender renders (256 px, 2 steps)."""

from __future__ import annotations

import json

import bpy
import numpy as np
import pytest
from PIL import Image

from blender_addon.render_process import read_layout
from blender_addon.scene_io import add_camera, layout_to_scene
from seethrough.batch.inputs import CameraChoice, expand_inputs
from seethrough.batch.report import CAPTION_H, GAP, THUMB, SheetEntry
from seethrough.batch.runner import Outcome
from seethrough.batch.shots import read_shots
from seethrough.cli import main
from seethrough_core.layout import Camera, Layout, load_layout
from seethrough_core.record import GenerationRecord
from seethrough_core.server_process import ServerProcess

pytestmark = pytest.mark.slow  # renders with Blender and runs a server

STEPS = "2"


def small_layout(*, dog_behind_camera: bool = False) -> Layout:
    data = load_layout("assets/examples/street.json").to_dict()
    data["resolution"] = [384, 256]
    data["boxes"] = data["boxes"][:2]
    if dog_behind_camera:  # the camera looks along -X: +X of it is behind
        x, y, _ = data["camera"]["location"]
        data["boxes"].append(
            {"name": "dog", "description": "a brown dog", "center": [x + 6, y, 0.3], "size": [0.3, 0.8, 0.6]}
        )
    return Layout.from_dict(data)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess.tiny(tmp_path_factory.mktemp("logs") / "tiny.log") as server:
        yield server.endpoint


def record_of(png) -> GenerationRecord:
    return GenerationRecord.from_dict(json.loads(png.with_suffix(".json").read_text()))


def batch(inputs, out, server, *extra) -> int:
    return main(["batch", *map(str, inputs), "--out", str(out), "--server", server, "--seeds", "3"]
                + ["--steps", STEPS, "--engine", "eevee", *extra])  # fmt: skip


def test_a_box_out_of_view_leaves_the_prompt_and_the_record_says_so(server, tmp_path, capsys):
    small_layout(dog_behind_camera=True).save(tmp_path / "dog.json")
    assert batch([tmp_path / "dog.json"], tmp_path / "out", server) == 0
    err = capsys.readouterr().err
    assert "dog/Camera frame 1: not in view, left out of the prompt: 'a brown dog'" in err
    record = record_of(tmp_path / "out" / "dog" / "Camera" / "0001_3.png")
    assert record.boxes_out_of_view == [2]
    assert "a brown dog" not in record.prompt and "a brown dog" not in record.descriptions
    assert record.descriptions == small_layout().descriptions
    assert len(record.layout["boxes"]) == 3  # the whole layout is kept, to restore the scene

    # The contact sheet: the result beside its OSCR image, captioned, at the pictures' 3:2 aspect.
    image = tmp_path / "out" / "dog" / "Camera" / "0001_3.png"
    entry = SheetEntry.of(Outcome(tmp_path / "dog.json", "dog/Camera/0001_3.png", "done", image_path=image))
    assert entry.caption == "Camera  frame 1  seed 3" and entry.is_noise
    assert entry.oscr_path == tmp_path / "out" / "dog" / "Camera" / "conditions" / "0001" / "oscr.png"
    with Image.open(tmp_path / "out" / "dog" / "contact_sheet.png") as sheet:
        sheet = sheet.convert("RGB")
    tile_w, tile_h = THUMB, round(THUMB * 256 / 384)
    assert sheet.size == (2 * tile_w + 3 * GAP, tile_h + CAPTION_H + GAP)
    for left, source in ((GAP, entry.oscr_path), (2 * GAP + tile_w, image)):
        with Image.open(source) as picture:
            thumb = picture.convert("RGB")
            thumb.thumbnail((tile_w, tile_h))
        x, y = left + (tile_w - thumb.width) // 2, (tile_h - thumb.height) // 2
        shown = sheet.crop((x, y, x + thumb.width, y + thumb.height))
        assert np.array_equal(np.asarray(shown), np.asarray(thumb))


def test_a_misspelled_key_fails_the_input_with_the_closest_key(server, tmp_path, capsys):
    data = small_layout().to_dict()
    data["scene_promt"] = data.pop("scene_prompt")
    (tmp_path / "typo.json").write_text(json.dumps(data))
    assert batch([tmp_path / "typo.json"], tmp_path / "out", server) == 1
    out = capsys.readouterr()
    assert "unknown key 'scene_promt' in the layout; did you mean 'scene_prompt'?" in out.out + out.err
    assert main(["render", str(tmp_path / "typo.json"), "--out", str(tmp_path / "r")]) == 2
    assert "did you mean 'scene_prompt'?" in capsys.readouterr().err


def test_edit_keeps_an_earlier_result_and_restores_from_a_result_png(server, tmp_path, capsys):
    small_layout().save(tmp_path / "street.json")
    assert batch([tmp_path / "street.json"], tmp_path / "first", server) == 0
    previous = tmp_path / "first" / "street" / "Camera" / "0001_3.png"
    data = small_layout().to_dict()
    data["boxes"][1]["center"][1] -= 0.8
    Layout.from_dict(data).save(tmp_path / "moved.json")
    out = tmp_path / "edits"
    args = ["edit", str(tmp_path / "moved.json"), "--from", str(previous), "--out", str(out)]
    args += ["--server", server, "--engine", "eevee"]
    assert main([*args, "--seed", "5"]) == 0
    first = (out / "moved.png").read_bytes()
    capsys.readouterr()
    assert main([*args, "--seed", "6"]) == 0  # another seed: a new picture beside the first
    assert f"wrote {out / 'moved_2.png'}" in capsys.readouterr().err
    assert (out / "moved.png").read_bytes() == first
    assert record_of(out / "moved_2.png").seed == 6 and record_of(out / "moved.png").seed == 5
    assert main([*args, "--seed", "7", "--overwrite"]) == 0
    assert record_of(out / "moved.png").seed == 7 and not (out / "moved_3.png").exists()

    # A result PNG stands for its layout wherever a layout is read: render and edit (read_layout) and
    # batch (its inputs and shots).
    restored = Layout.from_dict(data)
    assert read_layout(out / "moved_2.png") == restored
    assert expand_inputs([str(out / "moved_2.png")]) == [out / "moved_2.png"]
    (shot,) = read_shots(out / "moved_2.png", "moved_2", CameraChoice("active"), None)
    assert shot.layout == restored and shot.frame == 1


def write_blend(path) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    car = layout_to_scene(small_layout(), scene)[0]
    add_camera(scene, Camera(location=(-0.36, 1.5, 2.05), rotation_euler_deg=(70.0, 0.0, 100.0), name="Side"))
    car.keyframe_insert("location", frame=1)
    car.location.x += 2.0
    car.keyframe_insert("location", frame=10)
    scene.frame_set(1)
    bpy.ops.wm.save_as_mainfile(filepath=str(path))


def rendered(folder) -> tuple[Layout, tuple[int, int]]:
    layout = Layout.from_dict(json.loads((folder / "layout.json").read_text()))
    with Image.open(folder / "oscr.png") as image:
        return layout, image.size


def test_preview_size_frame_and_camera_on_the_command_line(empty_blender, server, tmp_path, capsys):
    write_blend(tmp_path / "shot.blend")
    small_layout().save(tmp_path / "still.json")
    engine = ["--engine", "eevee"]
    out = tmp_path / "half"
    assert (
        main(["render", str(tmp_path / "still.json"), "--out", str(out), "--percentage", "50", *engine]) == 2
    )
    assert "50% of 384x256 is 192x128" in capsys.readouterr().err  # below the 256 px minimum: refused
    assert main(["render", str(tmp_path / "still.json"), "--out", str(out), "--resolution", "512x256"]
                + ["--frame", "4", *engine]) == 0  # fmt: skip
    assert "--frame is ignored for still.json" in capsys.readouterr().err
    assert rendered(out)[1] == (512, 256)

    shot = tmp_path / "frame10"
    args = ["render", str(tmp_path / "shot.blend"), "--out", str(shot), "--frame", "10", "--camera", "Side"]
    assert main([*args, "--resolution", "768x512", "--percentage", "50", *engine]) == 0
    layout, size = rendered(shot)
    assert size == (384, 256) and layout.camera.name == "Side"
    assert layout.boxes[0].center[0] == pytest.approx(small_layout().boxes[0].center[0] + 2.0, abs=1e-3)

    assert batch([tmp_path / "still.json"], tmp_path / "b", server, "--frames", "1-3", "--resolution",
                 "256x256") == 0  # fmt: skip
    assert "--frames is ignored for" in capsys.readouterr().err
    images = sorted((tmp_path / "b" / "still" / "Camera").glob("*.png"))
    assert [p.name for p in images] == ["0001_3.png"]
    with Image.open(images[0]) as image:
        assert image.size == (256, 256)
    assert np.asarray(Image.open(images[0])).shape == (256, 256, 3)
