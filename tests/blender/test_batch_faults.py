"""`seethrough batch` under faults: servers killed, restarted or gone for good, read-only and full
output folders, a kill between an --overwrite's two renames, SIGTERM. Real tiny servers (subprocesses
on loopback), real Blender renders, real files; a fault happens on an event (a server's log line, a
progress line), never after a sleep."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from seethrough.batch.plan import Task
from seethrough.batch.runner import BatchOptions, BatchRunner
from seethrough.cli import main
from seethrough_core.generate_and_save import Destination, save_image
from seethrough_core.layout import Layout, load_layout
from seethrough_core.png import write_png
from seethrough_core.record import GenerationRecord, read_png_record
from seethrough_core.server_process import ServerProcess
from seethrough_core.upscale_run import UpscaleRunner

pytestmark = pytest.mark.slow  # renders with Blender and runs servers

STEPS = 2
WAIT_S = 120.0


def small_layout(prompt: str = "on a quiet street") -> Layout:
    data = load_layout("assets/examples/street.json").to_dict()
    data["resolution"] = [256, 256]
    data["boxes"] = data["boxes"][:2]
    data["scene_prompt"] = prompt
    return Layout.from_dict(data)


class WatchedStream(io.StringIO):
    """The batch's progress stream, which a test can wait on for a line."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = threading.Condition()

    def write(self, text: str) -> int:
        with self._changed:
            count = super().write(text)
            self._changed.notify_all()
            return count

    def wait_for(self, text: str, timeout_s: float = WAIT_S) -> None:
        with self._changed:
            found = self._changed.wait_for(lambda: text in self.getvalue(), timeout_s)
        assert found, f"never saw {text!r} in:\n{self.getvalue()}"


def wait_for_log(server: ServerProcess, text: str, count: int, timeout_s: float = WAIT_S) -> None:
    """Block until the server's log holds ``text`` ``count`` times (the server logs each job it starts)."""
    deadline = time.monotonic() + timeout_s
    while server.log_path.read_text(errors="replace").count(text) < count:
        assert server.running, "the server died before the event"
        assert time.monotonic() < deadline, f"the server never logged {text!r} {count} times"
        time.sleep(0.02)  # polling the log file for the event, not waiting in place of it


def in_background(work) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def kill_at_job(server: ServerProcess, nth: int) -> threading.Thread:
    """A thread that kills the server (SIGKILL) as soon as it has started its nth job."""

    def watch() -> None:
        wait_for_log(server, " started: ", nth)
        server.process.kill()
        server.process.wait()

    return in_background(watch)


def restart_at_job(server: ServerProcess, nth: int, stream: WatchedStream | None = None) -> threading.Thread:
    """A thread that kills the server at its nth job and starts it again at the same address at once,
    or, with ``stream``, once the batch has said that the server went away (after --timeout of silence)."""

    def kill_then_restart() -> None:
        kill_at_job(server, nth).join(WAIT_S)
        if stream is not None:
            stream.wait_for(f"server {server.endpoint} went away")
        server.start()  # it answers within about two seconds

    return in_background(kill_then_restart)


def hold_tiles_until_other_server_starts(monkeypatch, held: ServerProcess, other: ServerProcess) -> None:
    """Tiles sent to ``held`` wait (bounded) until ``other`` has started a job or died: otherwise a fast
    ``held`` can take every tile of a small frame and ``other`` never gets a job to be killed at."""
    send = UpscaleRunner._run_tile_sent_again

    def held_send(self, client, tile, request, boxes) -> None:
        if client.endpoint == held.endpoint:
            deadline = time.monotonic() + WAIT_S
            while other.running and " started: " not in other.log_path.read_text(errors="replace"):
                if time.monotonic() > deadline:
                    break  # the test then fails on its own check that the other server was killed
                time.sleep(0.02)  # polling the other server's log for the event
        send(self, client, tile, request, boxes)

    monkeypatch.setattr(UpscaleRunner, "_run_tile_sent_again", held_send)


def run(inputs: list[Path], out: Path, servers: list[str], stream=None, **options) -> object:
    options.setdefault("steps", STEPS)
    opts = BatchOptions(out_dir=out, servers=servers, **options)
    return BatchRunner(opts, stream).run(inputs)


def task_at(png: Path) -> Task:
    """The task of an image file, for its completion check (which reads only the two files)."""
    return Task(None, 0, png, png.with_suffix(".json"))  # type: ignore[arg-type]


def assert_every_image_complete(summary, out: Path, seeds: list[int], names: list[str]) -> None:
    assert summary.count("failed") == 0, [o.reason for o in summary.outcomes if o.status == "failed"]
    assert summary.ok and summary.count("done") == len(seeds) * len(names)
    for name in names:
        for seed in seeds:
            png = out / name / "Camera" / f"0001_{seed}.png"
            assert task_at(png).is_complete(), png
    assert not [p for p in out.rglob("*") if "partial" in p.name]


@contextmanager
def tiny_server(log: Path, endpoint: str | None = None):
    server = ServerProcess.tiny(log)
    if endpoint is not None:  # a fixed address, so a restarted server is the same server to the batch
        server = ServerProcess([*server.argv[:-1], endpoint], log, endpoint)
    with server:
        yield server


# --- servers that die, restart or stay away ---------------------------------------------------------


def test_a_server_killed_mid_job_loses_no_image(empty_blender, tmp_path):
    """Two servers, one job each; B is killed (SIGKILL) as soon as it has started its job. A finishes
    first and has nothing left to take: it must stay until B's job is given back, and run it. (Before,
    A left, B's job was put back after 2 x --timeout with nobody to take it, and the batch ended with
    exit code 0 and one image missing.)"""
    small_layout().save(tmp_path / "shot.json")
    seeds = [1, 2]
    out = tmp_path / "out"
    stream = WatchedStream()
    with tiny_server(tmp_path / "a.log") as a, tiny_server(tmp_path / "b.log") as b:
        killer = kill_at_job(b, 1)
        summary = run([tmp_path / "shot.json"], out, [a.endpoint, b.endpoint], stream, seeds=seeds,
                      timeout_s=10.0, retry_s=2.0)  # fmt: skip
        killer.join(1)
        assert not b.running, "the test never killed server B mid-job"
    assert_every_image_complete(summary, out, seeds, ["shot"])
    assert {o.server for o in summary.outcomes} == {a.endpoint}  # B's job was run by A
    assert f"server {b.endpoint} went away" in stream.getvalue()


def test_a_server_restarted_within_the_timeout_gets_its_lost_job_again(empty_blender, tmp_path):
    """The only server is killed mid-job and is back before the batch asks about the job: the
    restarted server no longer knows it, and the batch sends it again instead of failing it."""
    small_layout().save(tmp_path / "shot.json")
    seeds = [1, 2, 3]
    out = tmp_path / "out"
    stream = WatchedStream()
    with tiny_server(tmp_path / "s.log") as server:
        thread = restart_at_job(server, 2)
        # timeout 20 s: the batch asks about its silent job after 10 s, when the server is back
        summary = run([tmp_path / "shot.json"], out, [server.endpoint], stream, seeds=seeds,
                      timeout_s=20.0, retry_s=30.0)  # fmt: skip
        thread.join(WAIT_S)
    assert_every_image_complete(summary, out, seeds, ["shot"])
    assert "(restarted?); sending it again" in stream.getvalue()


def test_a_server_back_after_the_timeout_is_tried_again_and_finishes_the_batch(empty_blender, tmp_path):
    """The only server is killed mid-job and stays down past --timeout: the batch keeps trying it
    (--retry-for) instead of failing what is left, and finishes once it is back."""
    small_layout().save(tmp_path / "shot.json")
    seeds = [1, 2, 3]
    out = tmp_path / "out"
    stream = WatchedStream()
    with tiny_server(tmp_path / "s.log") as server:
        restarter = restart_at_job(server, 2, stream)
        summary = run([tmp_path / "shot.json"], out, [server.endpoint], stream, seeds=seeds,
                      timeout_s=3.0, retry_s=120.0)  # fmt: skip
        restarter.join(WAIT_S)
    assert_every_image_complete(summary, out, seeds, ["shot"])
    assert f"server {server.endpoint} is back" in stream.getvalue()


def test_a_server_that_never_comes_back_fails_what_is_left_by_name(empty_blender, tmp_path):
    """Killed at its 1st job and never restarted: after --retry-for every image left fails with its
    name and a reason, and the summary is not ok (the CLI's exit code is 1)."""
    small_layout().save(tmp_path / "shot.json")
    out = tmp_path / "out"
    stream = WatchedStream()
    with tiny_server(tmp_path / "s.log") as server:
        killer = kill_at_job(server, 1)
        started = time.monotonic()
        summary = run([tmp_path / "shot.json"], out, [server.endpoint], stream, seeds=[1, 2, 3],
                      timeout_s=2.0, retry_s=2.0)  # fmt: skip
        elapsed = time.monotonic() - started
        killer.join(1)
    assert not summary.ok and summary.count("failed") == 3
    assert sorted(o.label for o in summary.outcomes) == [f"shot/Camera/0001_{s}.png" for s in (1, 2, 3)]
    for outcome in summary.outcomes:
        assert "no server could be reached" in outcome.reason and "--retry-for" in outcome.reason
    assert "trying it again for up to 2 s" in stream.getvalue()
    assert elapsed < 60  # a timeout, a retry window and a render: no hang


def wide_layout() -> Layout:
    """A frame of 480 x 240: not a size the model takes, so a base (368 x 256 at --base-megapixels
    0.0625) and two tiles: the base is the server's 1st job, the first tile its 2nd."""
    data = small_layout().to_dict()
    data["resolution"] = [480, 240]
    return Layout.from_dict(data)


def test_a_server_back_during_a_frames_tiles_finishes_the_frame(empty_blender, tmp_path):
    """The only server is killed at the frame's first tile and restarted once the batch notices: the
    tile is asked of it again, and the frame is written whole (before, the frame failed with the
    server's error and waited for a rerun)."""
    wide_layout().save(tmp_path / "wide.json")
    out = tmp_path / "out"
    stream = WatchedStream()
    with tiny_server(tmp_path / "s.log") as server:
        restarter = restart_at_job(server, 2, stream)
        summary = run([tmp_path / "wide.json"], out, [server.endpoint], stream, seeds=[1],
                      timeout_s=3.0, retry_s=120.0, base_megapixels=0.0625)  # fmt: skip
        restarter.join(WAIT_S)
    assert_every_image_complete(summary, out, [1], ["wide"])
    assert f"server {server.endpoint} is back" in stream.getvalue()
    frame = out / "wide" / "Camera" / "0001_1.png"
    assert [t["kept"] for t in read_png_record(frame.read_bytes()).upscale["tiles"]] == [False, False]


def test_a_tile_lost_by_a_restarted_server_is_sent_again(empty_blender, tmp_path):
    """The only server is killed at the frame's first tile and is back before the batch asks about the
    job: the restarted server no longer knows it, and the tile is sent again instead of failing."""
    wide_layout().save(tmp_path / "wide.json")
    out = tmp_path / "out"
    with tiny_server(tmp_path / "s.log") as server:
        thread = restart_at_job(server, 2)
        # timeout 20 s: the batch asks about its silent tile after 10 s, when the server is back
        stream = WatchedStream()
        summary = run([tmp_path / "wide.json"], out, [server.endpoint], stream, seeds=[1],
                      timeout_s=20.0, retry_s=30.0, base_megapixels=0.0625)  # fmt: skip
        thread.join(WAIT_S)
    assert_every_image_complete(summary, out, [1], ["wide"])
    assert "wide/Camera/0001_1.png: the server lost " in stream.getvalue()
    assert "(restarted?); sending it again" in stream.getvalue()


def test_a_server_that_dies_during_the_upscale_does_not_hold_the_batch(empty_blender, tmp_path, monkeypatch):
    """Two servers; B is killed at its first job (a base or a tile) and never comes back. A makes
    everything, B's job included, and the batch ends once the frames are written: it does not wait out
    --retry-for asking B again, though B is still being retried when the last frame is written. A's
    tiles wait for B's first job, so B always gets one."""
    wide_layout().save(tmp_path / "wide.json")
    out = tmp_path / "out"
    stream = WatchedStream()
    retry_s = 240.0
    with tiny_server(tmp_path / "a.log") as a, tiny_server(tmp_path / "b.log") as b:
        hold_tiles_until_other_server_starts(monkeypatch, a, b)
        killer = kill_at_job(b, 1)
        started = time.monotonic()
        summary = run([tmp_path / "wide.json"], out, [a.endpoint, b.endpoint], stream, seeds=[1],
                      timeout_s=3.0, retry_s=retry_s, base_megapixels=0.0625)  # fmt: skip
        elapsed = time.monotonic() - started
        killer.join(1)
        assert not b.running, "the test never killed server B"
    assert_every_image_complete(summary, out, [1], ["wide"])
    assert f"server {b.endpoint} went away" in stream.getvalue()
    assert elapsed < retry_s / 2, elapsed


def command_on_a_restarted_server(tmp_path: Path, monkeypatch, command) -> tuple[int, str, str, Path]:
    """A picture made by `seethrough batch` (the server's job 1), then ``command(picture, endpoint)`` run
    through the CLI, its server killed at its 2nd job and restarted once the command says it went away:
    the exit code, what the command said, the server's address and the picture."""
    small_layout().save(tmp_path / "shot.json")
    stream = WatchedStream()
    with tiny_server(tmp_path / "s.log") as server:
        run([tmp_path / "shot.json"], tmp_path / "base", [server.endpoint], seeds=[1])
        picture = tmp_path / "base" / "shot" / "Camera" / "0001_1.png"
        restarter = restart_at_job(server, 2, stream)
        monkeypatch.setattr(sys, "stderr", stream)
        code = main(command(picture, server.endpoint))
        restarter.join(WAIT_S)
    return code, stream.getvalue(), server.endpoint, picture


def test_seethrough_upscale_asks_a_server_that_went_away_again(empty_blender, tmp_path, monkeypatch):
    """`seethrough upscale` on one server killed at its first tile and restarted once the command says it
    went away: the tile is asked of it again and the frame is written (before, the command failed with
    the server's error, and only a rerun resumed it)."""
    code, said, endpoint, _ = command_on_a_restarted_server(tmp_path, monkeypatch, lambda base, server: [
        "upscale", str(base), "--to", "480x240", "--out", str(tmp_path / "frame"), "--steps", "2",
        "--server", server, "--base-megapixels", "0.0625", "--timeout", "3", "--retry-for", "120",
    ])  # fmt: skip
    assert code == 0, said
    assert f"server {endpoint} is back; sending it tiles again" in said
    assert task_at(tmp_path / "frame" / "0001_1_480x240.png").is_complete()


def test_seethrough_edit_asks_a_server_that_went_away_again(empty_blender, tmp_path, monkeypatch):
    """`seethrough edit` on one server killed as the edit starts and restarted once the command says it
    went away: the edit is sent again and written (before, the command failed with the server's error)."""
    moved = small_layout().to_dict()
    moved["boxes"][1]["center"][1] -= 0.8
    Layout.from_dict(moved).save(tmp_path / "moved.json")
    code, said, endpoint, previous = command_on_a_restarted_server(tmp_path, monkeypatch, lambda pic, at: [
        "edit", str(tmp_path / "moved.json"), "--from", str(pic), "--out", str(tmp_path / "edit"),
        "--server", at, "--timeout", "3", "--retry-for", "120",
    ])  # fmt: skip
    assert code == 0, said
    assert f"server {endpoint} is back; sending it the job again" in said
    edited = tmp_path / "edit" / "moved.png"
    assert task_at(edited).is_complete()
    parent = read_png_record(edited.read_bytes()).parent
    assert parent["sha256"] == hashlib.sha256(previous.read_bytes()).hexdigest()


def test_a_frames_tiles_fail_by_name_once_no_server_is_left(empty_blender, tmp_path):
    """Killed at the frame's first tile and never restarted: after --retry-for the frame fails with its
    name and why, its finished tiles kept for a rerun; no hang."""
    wide_layout().save(tmp_path / "wide.json")
    out = tmp_path / "out"
    stream = WatchedStream()
    with tiny_server(tmp_path / "s.log") as server:
        killer = kill_at_job(server, 2)
        summary = run([tmp_path / "wide.json"], out, [server.endpoint], stream, seeds=[1],
                      timeout_s=2.0, retry_s=2.0, base_megapixels=0.0625)  # fmt: skip
        killer.join(1)
    [failed] = [o for o in summary.outcomes if o.status == "failed"]
    assert not summary.ok and failed.label == "wide/Camera/0001_1.png"
    assert "not generated: no server is left" in failed.reason, failed.reason
    assert (out / "wide" / "Camera" / "0001_1_base.png").is_file()  # the rerun starts at the upscale


# --- the output folder ----------------------------------------------------------------------------


@contextmanager
def tmpfs(path: Path, size: str, *options: str):
    """A small tmpfs at ``path`` (a full disk, a read-only folder); skipped where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount_read_only(path: Path) -> None:
    """Remount a tmpfs read-only; the batch may hold a file open for writing that moment (EBUSY)."""
    for _ in range(500):
        if subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.01)  # until the batch's current write is closed
    raise AssertionError(f"could not remount {path} read-only")


def batch_command(inputs: list[Path], out: Path, server: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "seethrough", "batch", *map(str, inputs), "--out", str(out),
            "--server", server, "--steps", str(STEPS), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with tiny_server(tmp_path_factory.mktemp("logs") / "s.log") as running:
        yield running.endpoint


def test_a_read_only_output_folder_is_one_clear_error_before_any_work(tmp_path, server):
    small_layout().save(tmp_path / "shot.json")
    with tmpfs(tmp_path / "out", "1m", "ro") as out:
        run_ = subprocess.run(batch_command([tmp_path / "shot.json"], out, server), capture_output=True,
                              text=True, timeout=300)  # fmt: skip
    assert run_.returncode == 2, run_.stderr[-2000:]
    assert "cannot write to the output folder" in run_.stderr and "Read-only file system" in run_.stderr
    assert "Traceback" not in run_.stderr


def test_a_folder_that_turns_read_only_mid_run_fails_each_task_by_name(empty_blender, tmp_path, server):
    """After the first image the folder turns read-only: every later image (and the second input's
    render) fails with a reason; the summary prints; nothing half-written is left."""
    for name in ("one", "two"):
        small_layout(f"on a quiet street {name}").save(tmp_path / f"{name}.json")
    inputs = [tmp_path / "one.json", tmp_path / "two.json"]
    with tmpfs(tmp_path / "out", "8m") as out:
        process = subprocess.Popen(
            batch_command(inputs, out, server, "--num-seeds", "3"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            for line in process.stderr:
                if line.startswith("[1/6] done"):
                    break
            remount_read_only(out)
            stdout, stderr = process.communicate(timeout=300)
        finally:
            process.kill()
        leftovers = [p for p in out.rglob("*") if "partial" in p.name]
    assert process.returncode == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    table = stdout.splitlines()
    total = next(line for line in table if line.startswith("total")).split()
    done, skipped, failed = int(total[1]), int(total[2]), int(total[3])
    assert done + skipped + failed == 6 and done >= 1 and failed >= 3  # two.json cannot even render
    assert "two/Camera/0001_42.png: rendering failed" in stdout and "Read-only file system" in stdout
    assert not leftovers


def test_a_full_disk_fails_tasks_by_name_removes_temporaries_and_prints_the_summary(
    empty_blender, tmp_path, server
):
    small_layout().save(tmp_path / "shot.json")
    with tmpfs(tmp_path / "out", "700k") as out:
        run_ = subprocess.run(batch_command([tmp_path / "shot.json"], out, server, "--num-seeds", "6"),
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        leftovers = [p for p in out.rglob("*") if "partial" in p.name]
        complete = [p for p in out.rglob("0001_*.png") if p.with_suffix(".json").is_file()]
    assert run_.returncode == 1, run_.stderr[-3000:]
    assert "Traceback" not in run_.stderr
    total = next(line for line in run_.stdout.splitlines() if line.startswith("total")).split()
    done, failed = int(total[1]), int(total[3])
    assert done + failed == 6 and failed >= 1 and done == len(complete)
    assert "No space left on device" in run_.stdout
    assert not leftovers, leftovers


# --- resuming after a kill between the two renames (SIGTERM: test_batch.py, the Ctrl-C test) ---


def record_with(steps: int) -> GenerationRecord:
    return GenerationRecord(
        prompt="a photo of a red car", scene_prompt="", descriptions=["a red car"], seed=1, steps=steps,
        guidance=3.5, width=32, height=32, model={"name": "tiny"}, lora=None, is_noise=True,
        call_ids=[[3, 4, 5]], timings={}, layout={},
    )  # fmt: skip


def test_a_png_whose_sidecar_belongs_to_the_old_image_is_not_complete(tmp_path):
    """--overwrite killed between its two renames leaves the new PNG beside the old sidecar."""
    image = tmp_path / "0001_1.png"
    task = task_at(image)
    pixels = np.zeros((32, 32, 3), np.uint8)
    save_image(pixels, record_with(3), Destination(image, {}, sidecar=True))  # the old image, complete
    assert task.is_complete()
    write_png(image, pixels + 1, text=record_with(2).png_text())  # the new PNG; its sidecar never came
    assert not task.is_complete()
    image.with_suffix(".json").write_text("{not json")
    assert not task.is_complete()


def test_a_rerun_regenerates_an_image_left_with_a_stale_sidecar(empty_blender, tmp_path, server):
    small_layout().save(tmp_path / "shot.json")
    out = tmp_path / "out"
    first = run([tmp_path / "shot.json"], out, [server], seeds=[1], steps=3)
    assert first.count("done") == 1
    png = out / "shot" / "Camera" / "0001_1.png"
    newer = out / "newer"
    run([tmp_path / "shot.json"], newer, [server], seeds=[1], steps=2)
    os.replace(newer / "shot" / "Camera" / "0001_1.png", png)  # the state a kill mid --overwrite leaves
    assert read_png_record(png.read_bytes()).steps == 2
    assert json.loads(png.with_suffix(".json").read_text())["steps"] == 3
    rerun = run([tmp_path / "shot.json"], out, [server], seeds=[1], steps=3)
    assert rerun.count("skipped") == 0 and rerun.count("done") == 1
    assert read_png_record(png.read_bytes()).steps == 3 and task_at(png).is_complete()
