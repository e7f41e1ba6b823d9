"""The add-on's local server, its LoRA preferences, and scripting the add-on in background Blender.

Real bpy, a real `seethrough serve --tiny` process started by the add-on, real LoRA files. Blender's
timers never fire in the bpy module: the tests call the add-on's timer callbacks themselves, as
Blender would, or use the operators' wait=True mode, which is what a background script uses.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import bpy
import pytest
from addon_support import DrawSelf, RecordingLayout, configure, prefs
from conftest import BASE_LAYOUT, MAIN_PYTHON

from blender_addon import generation_jobs, images, ops_server, preferences
from blender_addon.generation_jobs import RUNNER
from blender_addon.server_launcher import SERVER
from seethrough_core.client import SeeThroughClient
from seethrough_core.server_process import free_loopback_port as free_port

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parents[1]


def draw_preferences() -> list[str]:
    log: list[str] = []
    preferences.SEETHROUGH_AP_preferences.draw(DrawSelf(RecordingLayout(log), prefs()), bpy.context)
    return log


def settle(callback, timeout_s: float = 120.0) -> None:
    """Call a main-thread timer callback as Blender would, until it has nothing more to wait for."""
    deadline = time.monotonic() + timeout_s
    while callback() is not None:
        assert time.monotonic() < deadline, SERVER.state
        time.sleep(0.05)


def write_tiny_lora_file(path: Path) -> subprocess.Popen:
    """Starts writing a SeeThrough3D LoRA with random weights that fits the tiny model (by the server's
    Python, which has torch); wait() for it."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[2]); from server_support import random_lora_for; "
        "from inference_server.lora import save_seethrough_lora; "
        "from inference_server.pipeline import SeeThroughPipeline; "
        "save_seethrough_lora(random_lora_for(SeeThroughPipeline.tiny(seed=0), seed=5), sys.argv[1])"
    )
    return subprocess.Popen([MAIN_PYTHON, "-c", script, str(path), str(TESTS)])


@pytest.fixture
def local_server(addon, tmp_path):
    """The add-on's Local Server preferences pointed at the tiny model on a free port."""
    configure(f"tcp://127.0.0.1:{free_port()}", tmp_path)
    p = prefs()
    p.server_executable, p.server_arguments = MAIN_PYTHON, "-m seethrough serve --tiny"
    p.server_log = str(tmp_path / "server.log")
    yield p
    SERVER.stop()


@pytest.mark.each_blender
def test_the_shipped_arguments_hold_no_relative_path_and_ask_for_the_lora_file(addon, tmp_path):
    configure("tcp://127.0.0.1:5555", tmp_path)
    p = prefs()
    assert p.server_arguments == preferences.DEFAULT_SERVER_ARGUMENTS and "--lora" not in p.server_arguments
    assert p.lora_file == ""
    p.server_executable = MAIN_PYTHON
    with pytest.raises(RuntimeError, match="Set the LoRA file first"):
        bpy.ops.seethrough.start_server()
    assert SERVER.process is None or not SERVER.running
    assert any("Set the LoRA file first" in line for line in draw_preferences())

    # A LoRA file relative to the .blend (Blender's //) goes to the server as an absolute path.
    p.lora_file = str(tmp_path / "lora.safetensors")
    argv = preferences.settings().server_command().argv()
    assert argv[argv.index("--lora") + 1] == str(tmp_path / "lora.safetensors")
    assert any(line.startswith("label:Runs: ") and "--lora" in line for line in draw_preferences())


def test_a_server_that_exits_is_reported_with_its_exit_code_and_log(local_server, tmp_path):
    local_server.server_arguments += " --max-queue 0"  # the server refuses it and exits
    assert bpy.ops.seethrough.start_server() == {"FINISHED"}  # at once: the UI never waits
    assert SERVER.state.phase == "starting"
    settle(ops_server.poll_local_server)
    state = SERVER.state
    assert state.phase == "exited" and state.exit_code == 2, state
    assert any("--max-queue must be at least 1" in line for line in state.log_lines), state.log_lines
    drawn = draw_preferences()
    assert any("exited with code 2" in line for line in drawn)
    assert any("--max-queue must be at least 1" in line for line in drawn)  # the log's end, in the panel
    with pytest.raises(RuntimeError, match="exited with code 2"):  # a script gets the same, as an error
        bpy.ops.seethrough.start_server(wait=True)


def test_a_background_script_starts_the_server_generates_and_changes_the_lora(local_server, tmp_path):
    lora = tmp_path / "mine.safetensors"
    writing = write_tiny_lora_file(lora)  # meanwhile
    # What a script run with `blender -b --python` does, with no timer and no internal call.
    assert bpy.ops.seethrough.start_server(wait=True) == {"FINISHED"}
    assert SERVER.state.answering and "Started" in SERVER.state.message
    assert any("Started" in line for line in draw_preferences())

    layout = tmp_path / "layout.json"
    layout.write_text(json.dumps(BASE_LAYOUT))
    assert bpy.ops.seethrough.import_layout(filepath=str(layout)) == {"FINISHED"}
    scene = bpy.context.scene
    scene.seethrough.random_seed, scene.seethrough.seed, scene.seethrough.steps = False, 3, 2
    assert bpy.ops.seethrough.render_oscr(wait=True) == {"FINISHED"}
    assert "SeeThrough OSCR" in bpy.data.images
    assert bpy.ops.seethrough.generate(wait=True) == {"FINISHED"}
    first = scene.seethrough.history[-1].image
    assert first.name == "Scene Camera seed 3" and first.packed_file is not None

    # Apply LoRAs, as the preferences' button does: a worker thread, a main-thread callback.
    assert writing.wait(300) == 0
    local_server.lora_file, local_server.lora_scale = str(lora), 0.5
    assert bpy.ops.seethrough.apply_loras() == {"FINISHED"}
    settle(ops_server.poll_lora_change)
    drawn = draw_preferences()
    assert any(f"SeeThrough3D LoRA: {lora}" in line and "scale 0.5" in line for line in drawn), drawn
    with SeeThroughClient(local_server.server_address, timeout_s=10) as client:
        assert client.info().lora["name"] == str(lora)
    scene.seethrough.seed = 4
    assert bpy.ops.seethrough.generate(wait=True) == {"FINISHED"}
    record = images.image_record(scene.seethrough.history[-1].image)["lora"]
    assert record["name"] == str(lora) and record["scale"] == 0.5  # the record names the file, absolute

    local_server.lora_file = str(tmp_path / "gone.safetensors")
    with pytest.raises(RuntimeError, match="gone.safetensors"):
        bpy.ops.seethrough.apply_loras(wait=True)
    with SeeThroughClient(local_server.server_address, timeout_s=10) as client:
        assert client.info().lora["name"] == str(lora)  # a refused change leaves the LoRA in use


@pytest.mark.each_blender
def test_wait_reports_a_failed_generation_as_an_error(addon, tmp_path):
    configure(f"tcp://127.0.0.1:{free_port()}", tmp_path, timeout_s=0.5)
    layout = tmp_path / "layout.json"
    layout.write_text(json.dumps(BASE_LAYOUT))
    assert bpy.ops.seethrough.import_layout(filepath=str(layout)) == {"FINISHED"}
    with pytest.raises(RuntimeError, match="seethrough serve"):
        bpy.ops.seethrough.generate(wait=True)


def test_the_local_server_that_exits_during_a_job_is_started_again_and_the_job_goes_on(
    local_server, tmp_path, monkeypatch
):
    """The add-on's own local server is killed (SIGKILL, as out of memory would) just as the job asks
    for its picture: the job waits for it, the add-on starts it again (same command, log and address)
    and the job goes on to its picture. A server the artist stopped is not started again."""
    local_server.timeout_s, local_server.retry_s = 3.0, 120.0
    assert bpy.ops.seethrough.start_server(wait=True) == {"FINISHED"}
    layout = tmp_path / "layout.json"
    layout.write_text(json.dumps(BASE_LAYOUT))
    assert bpy.ops.seethrough.import_layout(filepath=str(layout)) == {"FINISHED"}
    scene = bpy.context.scene
    scene.seethrough.random_seed, scene.seethrough.seed, scene.seethrough.steps = False, 3, 2
    send, killed = generation_jobs.generate_and_save, threading.Event()

    def killed_first(*args, **kwargs):
        if not killed.is_set():
            SERVER.process.kill()
            SERVER.process.wait()
            killed.set()
        return send(*args, **kwargs)

    monkeypatch.setattr(generation_jobs, "generate_and_save", killed_first)
    assert bpy.ops.seethrough.generate(wait=True) == {"FINISHED"}
    assert killed.is_set() and RUNNER.job.local_restarts == 1 and SERVER.running
    assert scene.seethrough.history[-1].image.name == "Scene Camera seed 3"
    assert Path(local_server.server_log).read_text().count(" starting: ") == 2

    endpoint = RUNNER.job.spec.endpoint
    SERVER.stop()
    assert SERVER.start_again_for(endpoint) is None and not SERVER.running
