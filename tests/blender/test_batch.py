"""`seethrough batch` against real tiny servers (subprocesses on loopback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import bpy
import pytest
from PIL import Image

from blender_addon.scene_io import add_camera, layout_to_scene
from seethrough.batch.inputs import CameraChoice, InputError, expand_inputs, parse_frames, parse_seeds
from seethrough.batch.report import summary_table
from seethrough.batch.runner import BatchOptions, BatchRunner
from seethrough.cli import main
from seethrough_core.layout import Camera, Layout, load_layout
from seethrough_core.limits import DRAFT_STEP_CACHE
from seethrough_core.record import PNG_KEY, GenerationRecord, read_png_record
from seethrough_core.server_process import ServerProcess
from seethrough_core.upscale_plan import frame_light_seed

pytestmark = pytest.mark.slow  # renders with Blender and runs servers

STEPS = 2


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    logs = tmp_path_factory.mktemp("server_logs")
    with ServerProcess.tiny(logs / "a.log") as first, ServerProcess.tiny(logs / "b.log") as second:
        yield [first.endpoint, second.endpoint]


def small_layout() -> Layout:
    data = load_layout("assets/examples/street.json").to_dict()
    data["resolution"] = [256, 256]
    data["boxes"] = data["boxes"][:2]
    return Layout.from_dict(data)


def write_blend(path: Path, *, second_camera: bool = False, animate: bool = False) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    layout = small_layout()
    boxes = layout_to_scene(layout, scene)
    if second_camera:
        add_camera(
            scene, Camera(location=(-0.36, 1.5, 2.05), rotation_euler_deg=(70.0, 0.0, 100.0), name="Side")
        )
    if animate:  # the car drives 2 m along X between frames 1 and 10
        car = boxes[0]
        car.keyframe_insert("location", frame=1)
        car.location.x += 2.0
        car.keyframe_insert("location", frame=10)
    scene.frame_set(1)
    bpy.ops.wm.save_as_mainfile(filepath=str(path))


def run_batch(inputs, out, servers, **options) -> object:
    options.setdefault("steps", STEPS)
    opts = BatchOptions(out_dir=out, servers=servers, seeds=options.pop("seeds", [1]), **options)
    return BatchRunner(opts).run(expand_inputs([str(p) for p in inputs]))


def test_good_inputs_generate_and_a_corrupt_one_is_reported(empty_blender, tmp_path, servers):
    write_blend(tmp_path / "street.blend")
    small_layout().save(tmp_path / "plain.json")
    (tmp_path / "broken.blend").write_bytes(b"BLENDER-v405" + b"\xff" * 500)
    out = tmp_path / "out"
    summary = run_batch(sorted(tmp_path.glob("*.*")), out, servers[:1])
    assert summary.count("done") == 2 and summary.count("failed") == 1 and not summary.ok
    failed = [o for o in summary.outcomes if o.status == "failed"][0]
    assert failed.input_path.name == "broken.blend" and "not a readable .blend" in failed.reason
    for name in ("street", "plain"):
        image = out / name / "Camera" / "0001_1.png"
        record = GenerationRecord.from_dict(json.loads(image.with_suffix(".json").read_text()))
        assert record.seed == 1 and record.steps == STEPS and record.is_noise
        assert record.descriptions == ["a red vintage car", "a woman in a yellow raincoat"]
        assert record.prompt.startswith("a photo of a red vintage car and a woman in a yellow raincoat ")
        with Image.open(image) as png:
            assert png.size == (256, 256)
            assert json.loads(png.text[PNG_KEY])["seed"] == 1
        assert (out / name / "Camera" / "conditions" / "0001" / "oscr.png").is_file()

    # A rerun finds everything complete: nothing is rendered or generated again.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("0001_1.*")}
    again = run_batch(sorted(tmp_path.glob("*.*")), out, servers[:1])
    assert again.count("done") == 0 and again.count("skipped") == 2 and again.render_s == 0.0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("0001_1.*")} == before
    assert all(o.reason == "" for o in again.outcomes if o.status == "skipped")
    assert "kept from before" not in summary_table(again, [])

    # With other options the complete images are still kept (never overwritten unasked), and that is said
    other = run_batch(sorted(tmp_path.glob("*.*")), out, servers[:1], steps=STEPS + 1)
    assert other.count("skipped") == 2 and {p: p.stat().st_mtime_ns for p in out.rglob("0001_1.*")} == before
    kept = {o.label: o.reason for o in other.outcomes if o.status == "skipped"}
    assert set(kept.values()) == {f"made with {STEPS} steps, not {STEPS + 1}"}
    table = summary_table(other, [])
    assert "kept from before, made with other options (2; --overwrite makes them again):" in table
    assert f"  street/Camera/0001_1.png: made with {STEPS} steps, not {STEPS + 1}" in table


def test_two_cameras_two_seeds_on_two_servers(empty_blender, tmp_path, servers):
    write_blend(tmp_path / "shot.blend", second_camera=True)
    out = tmp_path / "out"
    summary = run_batch([tmp_path / "shot.blend"], out, servers, seeds=[7, 8], cameras=CameraChoice("all"))
    assert summary.ok and summary.count("done") == 4
    images = sorted(p.relative_to(out).as_posix() for p in out.rglob("000*_*.png"))
    assert images == [
        "shot/Camera/0001_7.png",
        "shot/Camera/0001_8.png",
        "shot/Side/0001_7.png",
        "shot/Side/0001_8.png",
    ]
    assert {o.server for o in summary.outcomes} == set(servers)  # both servers received jobs
    # The two cameras really saw different OSCR images.
    oscr = [
        Image.open(out / "shot" / cam / "conditions" / "0001" / "oscr.png").tobytes()
        for cam in ("Camera", "Side")
    ]
    assert oscr[0] != oscr[1]


def test_frames_follow_the_animation(empty_blender, tmp_path, servers):
    write_blend(tmp_path / "drive.blend", animate=True)
    out = tmp_path / "out"
    summary = run_batch([tmp_path / "drive.blend"], out, servers[:1], frames=[1, 10])
    assert summary.ok and summary.count("done") == 2
    cars = [
        json.loads((out / "drive" / "Camera" / f"{frame:04d}_1.json").read_text())["layout"]["boxes"][0][
            "center"
        ][0]
        for frame in (1, 10)
    ]
    assert cars[1] - cars[0] == pytest.approx(2.0, abs=1e-5)


def test_cli_exit_code_and_summary(empty_blender, tmp_path, servers):
    small_layout().save(tmp_path / "ok.json")
    bad = json.loads((tmp_path / "ok.json").read_text())
    bad["boxes"][0]["size"] = [0, 1, 1]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "seethrough",
        "batch",
        str(tmp_path / "ok.json"),
        str(tmp_path / "bad.json"),
        "--out",
        str(out),
        "--server",
        servers[0],
        "--steps",
        str(STEPS),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "boxes[0].size[0]" in run.stdout + run.stderr
    assert (out / "ok" / "Camera" / "0001_42.png").is_file()
    assert (out / "ok" / "contact_sheet.png").is_file()
    assert "total" in run.stdout


def test_a_draft_batch_is_small_and_quick_in_a_folder_of_its_own(empty_blender, tmp_path, servers, capsys):
    """`--draft` on a 768 x 576 layout: rendered and generated at the draft size (512 x 384), one pass,
    with the draft speed options and the final frame's lights, under OUT/draft/; the final run into the
    same OUT then makes its own image and keeps nothing of the draft's."""
    data = small_layout().to_dict()
    data["resolution"] = [768, 576]
    full = Layout.from_dict(data)
    full.save(tmp_path / "shot.json")
    out = tmp_path / "out"
    common = [str(tmp_path / "shot.json"), "--out", str(out), "--server", servers[0], "--steps", str(STEPS)]
    assert main(["batch", *common, "--draft", "--upscale-strength", "0.5"]) == 0
    said = capsys.readouterr().err
    assert "note: --upscale-strength is ignored with --draft: every draft is made in one pass" in said
    draft = read_png_record((out / "draft" / "shot" / "Camera" / "0001_42.png").read_bytes())
    assert (draft.width, draft.height) == (512, 384) and draft.layout["resolution"] == [512, 384]
    assert draft.condition_cache is True and draft.step_cache == DRAFT_STEP_CACHE
    assert draft.upscale is None
    assert draft.layout["light_seed"] == frame_light_seed(full)  # the final frame's lights
    conditions = out / "draft" / "shot" / "Camera" / "conditions" / "0001" / "oscr.png"
    assert Image.open(conditions).size == (512, 384)  # rendered at the draft size, not scaled down
    assert (out / "draft" / "shot" / "contact_sheet.png").is_file() and not (out / "shot").exists()

    assert main(["batch", *common]) == 0, capsys.readouterr().err
    final = read_png_record((out / "shot" / "Camera" / "0001_42.png").read_bytes())
    assert (final.width, final.height) == (768, 576) and final.step_cache is None


def test_unreachable_server_fails_the_jobs_without_hanging(empty_blender, tmp_path):
    small_layout().save(tmp_path / "ok.json")
    from seethrough_core.server_process import free_loopback_port

    dead = f"tcp://127.0.0.1:{free_loopback_port()}"
    opts = BatchOptions(
        out_dir=tmp_path / "out", servers=[dead], seeds=[1], steps=STEPS, timeout_s=1.0, retry_s=1.0
    )
    summary = BatchRunner(opts).run([tmp_path / "ok.json"])
    assert summary.count("failed") == 1
    assert dead in summary.outcomes[0].reason or "seethrough serve" in summary.outcomes[0].reason
    assert not list((tmp_path / "out").rglob("0001_1.png"))


def test_a_bad_server_address_is_refused_before_any_render(tmp_path):
    small_layout().save(tmp_path / "ok.json")
    command = [
        sys.executable,
        "-m",
        "seethrough",
        "batch",
        str(tmp_path / "ok.json"),
        "--out",
        str(tmp_path / "out"),
        "--server",
        "http://localhost:5555",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "tcp://localhost:5555" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()


def test_curve_keys_are_checked_before_any_render(tmp_path):
    small_layout().save(tmp_path / "ok.json")
    base = [sys.executable, "-m", "seethrough", "batch", str(tmp_path / "ok.json"), "--out"]
    half = subprocess.run(
        [*base, str(tmp_path / "out"), "--client-key", str(tmp_path / "me.key_secret")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert half.returncode == 2 and "--server-public-key" in half.stderr and "Traceback" not in half.stderr
    missing = subprocess.run(
        [*base, str(tmp_path / "out"), "--server-public-key", str(tmp_path / "gpu.key"), "--client-key",
         str(tmp_path / "me.key_secret")],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2 and "seethrough keys create" in missing.stderr
    assert not (tmp_path / "out").exists()


def test_argument_parsing():
    assert parse_frames("1-3,7") == [1, 2, 3, 7]
    assert parse_frames(None) is None
    with pytest.raises(InputError, match="backwards"):
        parse_frames("5-2")
    with pytest.raises(InputError, match="frame number"):
        parse_frames("one")
    assert parse_seeds("3,1,3", None) == [3, 1]
    assert parse_seeds(None, 3) == [42, 43, 44]
    assert parse_seeds(None, None) == [42]
    with pytest.raises(InputError):
        parse_seeds("x", None)
    assert CameraChoice.parse("A, B") == CameraChoice("names", ("A", "B"))
    with pytest.raises(InputError, match="not found"):
        expand_inputs(["/nonexistent/file.blend"])


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])  # Ctrl-C; `kill` or a job scheduler
def test_ctrl_c_leaves_no_half_written_file_and_a_rerun_finishes(empty_blender, tmp_path, servers, stop):
    import signal

    small_layout().save(tmp_path / "shot.json")
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "seethrough",
        "batch",
        str(tmp_path / "shot.json"),
        "--out",
        str(out),
        "--server",
        servers[0],
        "--steps",
        "12",
        "--seeds",
        "1,2,3,4",
    ]
    # Ctrl-C as in a terminal: a test run started in the background (a CI step, `cmd &`) hands its
    # children SIGINT ignored, and Python then never raises KeyboardInterrupt
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        for line in process.stderr:  # wait until the first image is finished, then interrupt
            if line.startswith("[1/4] done"):
                break
        process.send_signal(getattr(signal, stop))
        stdout, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, stdout
    assert "interrupted" in stdout and "total" in stdout  # the summary
    assert not [p for p in out.rglob("*") if "partial" in p.name]
    finished = sorted(p.name for p in out.rglob("0001_*.png"))
    assert 1 <= len(finished) < 4
    for png in out.rglob("0001_*.png"):
        assert png.with_suffix(".json").is_file()

    rerun = subprocess.run(
        [*command[:-4], "--steps", "2", "--seeds", "1,2,3,4"], capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert sorted(p.name for p in out.rglob("0001_*.png")) == [f"0001_{s}.png" for s in (1, 2, 3, 4)]
    assert rerun.stderr.count("skipped") == len(finished)


def test_a_resumed_batch_reuses_the_complete_conditions_folder(empty_blender, tmp_path, servers):
    small_layout().save(tmp_path / "shot.json")
    out = tmp_path / "out"
    assert run_batch([tmp_path / "shot.json"], out, servers[:1], seeds=[1]).count("done") == 1
    oscr = out / "shot" / "Camera" / "conditions" / "0001" / "oscr.png"
    rendered_at = oscr.stat().st_mtime_ns
    more = run_batch([tmp_path / "shot.json"], out, servers[:1], seeds=[1, 2])
    assert more.count("done") == 1 and more.count("skipped") == 1
    assert oscr.stat().st_mtime_ns == rendered_at  # the frame's render was complete: not rendered again
