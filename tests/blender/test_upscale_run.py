"""`seethrough upscale` end to end: real Blender tile views, a real tiny server, real files.

The sizes are small for speed, the geometry is the one of a 4K frame: a base picture of another aspect
(it shows more than the frame), enlarged and refined in overlapping tiles of the model's size, one tile
row reaching past both edges of the frame.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from batch_support import hold_base_until_frame
from bpy_helpers import read_rgb
from conftest import BASE_LAYOUT
from process_support import run_command

from blender_addon.render import TileViews, render_layout
from seethrough.previous_picture import read_previous
from seethrough_core.client import SeeThroughClient
from seethrough_core.frame_reuse import frame_reuse
from seethrough_core.generate_and_save import Destination, generate_and_save
from seethrough_core.generation_settings import GenerationSettings
from seethrough_core.layout import Layout
from seethrough_core.protocol import GenerateRequest
from seethrough_core.record import read_png_record
from seethrough_core.rendered_layout import reusable
from seethrough_core.resample import sample_view
from seethrough_core.server_process import ServerProcess
from seethrough_core.upscale_plan import frame_layout_at, plan_upscale
from seethrough_core.upscale_run import PLAN_FILE, TilePool, Upscale, UpscaleRunner

pytestmark = pytest.mark.slow  # renders with Blender and runs a server

BASE = (448, 256)
FRAME = (480, 240)  # a wider aspect than the base: cut from it; 2 tiles of 256 x 256
STEPS = 2


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess.tiny(tmp_path_factory.mktemp("logs") / "server.log") as process:
        yield process


@pytest.fixture(scope="module")
def base_png(tmp_path_factory, server) -> Path:
    """A picture saved by SeeThrough at the base size (a plain generation)."""
    out = tmp_path_factory.mktemp("base")
    data = copy.deepcopy(BASE_LAYOUT)
    data["resolution"] = list(BASE)
    data["boxes"].append({"description": "a bench", "center": [-4.5, 1.6, 0.4], "size": [1.6, 0.6, 0.8]})
    layout = Layout.from_dict(data)
    rendered = render_layout(layout, out / "conditions", quiet=True)
    settings = GenerationSettings.for_layout(layout, seed=5, steps=STEPS)
    request = GenerateRequest.for_settings(
        settings, rendered.oscr_path.read_bytes(), rendered.masks.token_grids()
    )
    with SeeThroughClient(server.endpoint, 60.0) as client:
        saved = generate_and_save(client, request, layout, Destination(out / "shot.png", {"input": "test"}))
    return saved.image_path


def _upscale(base: Path, out: Path, server, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "seethrough", "upscale", str(base), "--to", f"{FRAME[0]}x{FRAME[1]}",
        "--out", str(out), "--server", server.endpoint, "--base-megapixels", "0.0625", *extra,
    ]  # fmt: skip


def test_upscale_reaches_the_frame_and_resumes_after_a_kill(tmp_path, base_png, server):
    peak_before = _peak_rss_mb(server.pid)
    whole = run_command(_upscale(base_png, tmp_path / "whole", server), timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]
    result = tmp_path / "whole" / f"shot_{FRAME[0]}x{FRAME[1]}.png"
    assert whole.stdout.strip() == str(result)
    image = read_rgb(result)
    assert image.shape == (FRAME[1], FRAME[0], 3)
    assert not (tmp_path / "whole" / f"shot_{FRAME[0]}x{FRAME[1]}.tiles").exists()  # removed once written

    # the record keeps both stages: the base's size and seed, the grid, each tile's seed and boxes
    record = read_png_record(result.read_bytes())
    base_record = read_png_record(base_png.read_bytes())
    assert (record.width, record.height) == FRAME and record.seed == base_record.seed == 5
    stage = record.upscale
    assert stage["base"]["size"] == list(BASE) and stage["grid"] == [2, 1] and stage["strength"] == 0.35
    assert [t["rect"] for t in stage["tiles"]] == [[0, -8, 256, 256], [224, -8, 256, 256]]
    assert len({t["seed"] for t in stage["tiles"]}) == 2
    for tile in stage["tiles"]:
        assert tile["boxes"] and set(tile["boxes"]) <= {0, 1}
        for i in tile["boxes"]:
            assert base_record.descriptions[i] in tile["prompt"]
    assert (tmp_path / "whole" / f"shot_{FRAME[0]}x{FRAME[1]}.json").is_file()

    # killed (SIGKILL, no chance to clean up) once the first tile is finished
    out = tmp_path / "resumed"
    process = subprocess.Popen(
        _upscale(base_png, out, server), stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        for line in process.stderr:
            if "generated (1/2 done)" in line:
                os.killpg(process.pid, signal.SIGKILL)
                break
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.stderr.close()
    tiles_dir = out / f"shot_{FRAME[0]}x{FRAME[1]}.tiles"
    assert sorted(p.name for p in tiles_dir.glob("*.npy")) == ["tile_r00_c00.npy"]
    assert not (out / f"shot_{FRAME[0]}x{FRAME[1]}.png").exists()

    rerun = run_command(_upscale(base_png, out, server), timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "tile_r00_c00: kept from an earlier run" in rerun.stderr
    assert rerun.stderr.count(": generated") == 1  # only the missing tile
    resumed = read_rgb(out / f"shot_{FRAME[0]}x{FRAME[1]}.png")
    # the same jobs on the same server: equal up to the pipeline's float tolerance (1 level)
    assert np.abs(resumed.astype(int) - image.astype(int)).max() <= 1

    # the server only ever held tile-sized jobs: its peak memory did not grow with the frame
    assert _peak_rss_mb(server.pid) <= peak_before * 1.05 + 64


def test_settings_out_of_range_are_refused_before_any_work(tmp_path, base_png, server):
    for extra, field in (
        (["--strength", "0"], "--strength"),
        (["--strength", "1.5"], "--strength"),
        (["--base-megapixels", "9"], "--base-megapixels"),
    ):
        run = run_command(_upscale(base_png, tmp_path / "bad", server, *extra), timeout=120)
        assert run.returncode == 2 and f"error: {field}:" in run.stderr, run.stderr
    too_big = _upscale(base_png, tmp_path / "bad", server)
    too_big[too_big.index("--to") + 1] = "9000x5143"
    run = run_command(too_big, timeout=120)
    assert run.returncode == 2 and "error: --to: width 9000 px is outside 16..8192" in run.stderr, run.stderr
    taller = _upscale(base_png, tmp_path / "bad", server)
    taller[taller.index("--to") + 1] = "480x480"  # shows more than the picture: refused, not stretched
    run = run_command(taller, timeout=120)
    assert run.returncode == 2 and "error: --to:" in run.stderr, run.stderr
    assert not (tmp_path / "bad").exists()


def test_batch_gives_the_frame_at_the_layouts_resolution(tmp_path, server):
    """A layout of 480 x 240 (not a size the model takes): a base near --base-megapixels, then tiles."""
    data = copy.deepcopy(BASE_LAYOUT)
    data["resolution"] = list(FRAME)
    (tmp_path / "shot.json").write_text(Layout.from_dict(data).to_json())
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "seethrough", "batch", str(tmp_path / "shot.json"), "--out", str(out),
        "--server", server.endpoint, "--steps", str(STEPS), "--seeds", "3", "--base-megapixels", "0.0625",
    ]  # fmt: skip
    run = run_command(command, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    [final] = out.rglob("0001_3.png")
    assert read_rgb(final).shape == (FRAME[1], FRAME[0], 3)
    record = read_png_record(final.read_bytes())
    assert record.upscale["base"]["size"] == [368, 256] and record.seed == 3
    assert Layout.from_dict(record.layout).resolution == FRAME
    assert read_rgb(final.with_name("0001_3_base.png")).shape == (256, 368, 3)
    rerun = run_command(command, timeout=300)
    assert rerun.returncode == 0 and "skipped" in rerun.stderr + rerun.stdout

    # seethrough edit of that frame: the base is edited (a box moved), then upscaled to the frame again
    data["boxes"][0]["center"] = [-5.6, 0.3, 0.75]
    (tmp_path / "moved.json").write_text(Layout.from_dict(data).to_json())
    edit = run_command(
        [sys.executable, "-m", "seethrough", "edit", str(tmp_path / "moved.json"), "--from", str(final),
         "--out", str(tmp_path / "edited"), "--server", server.endpoint, "--base-megapixels", "0.0625"],
        timeout=600,
    )  # fmt: skip
    assert edit.returncode == 0, edit.stderr[-3000:]
    assert edit.stdout.strip() == str(tmp_path / "edited" / "moved.png")
    assert read_rgb(tmp_path / "edited" / "moved.png").shape == (FRAME[1], FRAME[0], 3)
    edited_base = read_png_record((tmp_path / "edited" / "moved_base.png").read_bytes())
    assert edited_base.parent["record"]["width"] == 368  # an edit of the base picture
    # only the tiles the edit reaches are refined; the rest is the frame edited (frame_reuse.py)
    stage = read_png_record((tmp_path / "edited" / "moved.png").read_bytes()).upscale
    assert stage["reuses"] == {"file": str(final), "sha256": hashlib.sha256(final.read_bytes()).hexdigest()}
    assert "of 2 tiles refined, the rest of 0001_3.png kept" in edit.stderr

    # editing that edit into the same folder keeps it: the new frame and its base are moved_2*.png
    kept = {p.name: p.read_bytes() for p in (tmp_path / "edited").glob("moved*.png")}
    data["boxes"][0]["center"] = [-5.2, 0.6, 0.75]
    (tmp_path / "moved.json").write_text(Layout.from_dict(data).to_json())
    again = run_command(
        [sys.executable, "-m", "seethrough", "edit", str(tmp_path / "moved.json"),
         "--from", str(tmp_path / "edited" / "moved.png"), "--out", str(tmp_path / "edited"),
         "--server", server.endpoint, "--base-megapixels", "0.0625"],
        timeout=600,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.strip() == str(tmp_path / "edited" / "moved_2.png")
    assert "moved.png is kept" in again.stderr
    assert {name: (tmp_path / "edited" / name).read_bytes() for name in kept} == kept
    second = read_png_record((tmp_path / "edited" / "moved_2.png").read_bytes())
    assert second.source["base"] == str(tmp_path / "edited" / "moved_2_base.png")
    second_base = read_png_record((tmp_path / "edited" / "moved_2_base.png").read_bytes())
    first_base_png = kept["moved_base.png"]
    assert second_base.parent["sha256"] == hashlib.sha256(first_base_png).hexdigest()  # the base edited


def test_a_batch_writes_each_frame_while_later_bases_are_still_generated(tmp_path, server, monkeypatch):
    """Three frames in two stages on one server: the last base waits until the first frame is written.
    Frame 2 meets the tiles another run left for other settings, and starts over.
    Upscaled only after every base, the first frame never comes while it waits (a bounded wait on an
    event, so that order fails the test instead of hanging it); upscaled as its base is ready (the main
    thread renders its tile views between shots and while it waits to queue a base), it does."""
    from seethrough.batch.runner import BatchOptions, BatchRunner

    data = copy.deepcopy(BASE_LAYOUT)
    data["resolution"] = list(FRAME)
    (tmp_path / "wide.json").write_text(Layout.from_dict(data).to_json())
    out = tmp_path / "out"
    options = BatchOptions(
        out_dir=out, servers=[server.endpoint], seeds=[1, 2, 3], steps=STEPS, base_megapixels=0.0625
    )
    # an interrupted run with other settings left tiles for frame 2: they go, and its frame starts over
    stale = out / "wide" / "Camera" / "0001_2.tiles"
    stale.mkdir(parents=True)
    (stale / PLAN_FILE).write_text(json.dumps({"plan": "another strength"}))
    np.save(stale / "r0c0.npy", np.zeros((4, 4, 3), np.uint8))
    order = hold_base_until_frame(monkeypatch, BatchRunner, 3, "wide/Camera/0001_1.png")
    stream = io.StringIO()
    summary = BatchRunner(options, stream).run([tmp_path / "wide.json"])
    events = order.events
    assert summary.ok and order.waited == [True], events
    assert (
        "wide/Camera/0001_2.png: the tiles kept in 0001_2.tiles were for another picture, size or settings: "
        "started over" in stream.getvalue()
    )
    assert events.index("done wide/Camera/0001_1.png") < events.index("base 3")
    assert sorted(e for e in events if e.startswith("done")) == [
        f"done wide/Camera/0001_{seed}.png" for seed in (1, 2, 3)
    ]
    for seed in (1, 2, 3):
        final = out / "wide" / "Camera" / f"0001_{seed}.png"
        assert read_rgb(final).shape == (FRAME[1], FRAME[0], 3)
        assert len(read_png_record(final.read_bytes()).upscale["tiles"]) == 2
        assert not final.with_name(f"0001_{seed}.tiles").exists()


class CountedViews(TileViews):
    """The command line's tile views, noting which tile views were cut from the shared render."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, object]] = []

    def view(self, layout, folder):
        rendered = reusable(folder, layout)
        self.calls.append((folder.name, rendered is not None and "cut_from" in rendered.report["render"]))
        return super().view(layout, folder)

    def shared(self, whole, folder, crops):
        self.calls.append(("shared", [crop.folder.name for crop in crops]))
        return super().shared(whole, folder, crops)


def test_the_views_of_all_tiles_but_the_first_come_from_one_render(tmp_path, base_png, server):
    """Three tiles: the first tile's view renders alone (its job starts at once), the other two are cut
    from one render made while it runs; the frame is whole and its record lists the three tiles."""
    previous = read_previous(base_png)
    size = (640, 240)  # a wider cut of the 448 x 256 base: one row of three tiles
    plan = plan_upscale(*size, seed=5, base_megapixels=0.0625, base_size=BASE)
    assert len(plan.tiles) == 3
    upscale = Upscale(
        plan, frame_layout_at(previous.layout, size), previous.image, previous.record, tmp_path / "frame.png",
        STEPS, previous.record.guidance, {"upscale_of": str(base_png)},
    )  # fmt: skip
    views = CountedViews()
    with SeeThroughClient(server.endpoint, 120.0) as client:
        saved = UpscaleRunner(upscale, [client], views.view, render_views=views.shared).run()
    names = [tile.name for tile in plan.tiles]
    assert views.calls == [(names[0], False), ("shared", names[1:]), (names[1], True), (names[2], True)]
    assert read_rgb(saved.image_path).shape == (size[1], size[0], 3)
    assert len(read_png_record(saved.image_path.read_bytes()).upscale["tiles"]) == 3


def test_the_next_frames_tiles_start_while_the_last_tile_of_the_frame_before_runs(tmp_path, base_png, server):
    """A batch's frames share one pool of server threads: with one server, frame B's first view is
    rendered while frame A's last tile is still generating, and both frames are written whole.

    Frame A's last tile waits, at its first step, for frame B's first view render to be asked for: run
    one frame after the other, that never happens and the wait runs out."""
    previous = read_previous(base_png)
    plan = plan_upscale(*FRAME, seed=5, base_megapixels=0.0625, base_size=BASE)
    assert len(plan.tiles) == 2

    def upscale(name: str) -> Upscale:
        return Upscale(
            plan, frame_layout_at(previous.layout, FRAME), previous.image, previous.record, tmp_path / name,
            STEPS, previous.record.guidance, {"upscale_of": str(base_png)},
        )  # fmt: skip

    views = TileViews()
    b_asked = threading.Event()
    waited: list[bool] = []

    def b_view(layout, folder):
        b_asked.set()
        return views.view(layout, folder)

    def a_progress(event) -> None:
        if event.tile.index == 1 and event.step is not None and not waited:
            waited.append(b_asked.wait(timeout=120))  # an event, bounded: a failure, not a pause

    stop = threading.Event()
    with SeeThroughClient(server.endpoint, 120.0) as client:
        pool = TilePool([client], stop)
        try:
            first = UpscaleRunner(upscale("a.png"), [client], views.view, on_progress=a_progress, stop=stop)
            second = UpscaleRunner(upscale("b.png"), [client], b_view, stop=stop)
            first.queue_tiles(pool)
            second.queue_tiles(pool)
            saved = [first.complete(), second.complete()]
        finally:
            pool.close()
    assert waited == [True]  # B's view was asked for while A's last tile ran
    assert [s.image_path.name for s in saved] == ["a.png", "b.png"]
    for path in (tmp_path / "a.png", tmp_path / "b.png"):
        assert read_rgb(path).shape == (FRAME[1], FRAME[0], 3)
        assert len(read_png_record(path.read_bytes()).upscale["tiles"]) == 2
        assert not path.with_name(path.stem + ".tiles").exists()


def test_an_edit_of_a_frame_refines_only_the_tiles_its_change_reaches(tmp_path, base_png, server):
    """A change in one corner of a frame's base (as an edit leaves it: the base differs only there)
    refines the one tile of six it reaches: one view render, one job. Every pixel it does not reach is the
    previous frame's, byte for byte, and the record lists the other tiles as that frame's."""
    previous = read_previous(base_png)
    size = (640, 360)
    plan = plan_upscale(*size, seed=5, base_megapixels=0.0625, base_size=BASE)
    layout = frame_layout_at(previous.layout, size)
    guidance = previous.record.guidance
    assert len(plan.tiles) == 6

    def upscale(name: str, base: np.ndarray, reuse=None) -> Upscale:
        return Upscale(
            plan, layout, base, previous.record, tmp_path / name, STEPS, guidance,
            {"upscale_of": str(base_png)}, reuse,
        )  # fmt: skip

    views = TileViews()
    rendered: list[str] = []

    def view(view_layout, folder):
        rendered.append(folder.name)
        return views.view(view_layout, folder)

    edited = previous.image.copy()
    edited[10:30, 10:40] = 255 - edited[10:30, 10:40]
    with SeeThroughClient(server.endpoint, 120.0) as client:
        UpscaleRunner(
            upscale("frame.png", previous.image), [client], views.view, render_views=views.shared
        ).run()
        frame = read_previous(tmp_path / "frame.png")
        reuse = frame_reuse(
            frame, previous.image, edited, plan=plan, frame_layout=layout, steps=STEPS, guidance=guidance
        )
        assert reuse is not None
        runner = UpscaleRunner(
            upscale("edited.png", edited, reuse), [client], view, render_views=views.shared
        )
        saved = runner.run()
    assert runner.generated == ["tile_r00_c00"] and rendered == ["tile_r00_c00"]
    after = read_rgb(saved.image_path)
    assert (~reuse.reach).mean() > 0.6 and np.array_equal(after[~reuse.reach], frame.image[~reuse.reach])
    assert not np.array_equal(after[reuse.changed], frame.image[reuse.changed])
    stage = read_png_record(saved.image_path.read_bytes()).upscale
    assert stage["reuses"] == {
        "file": str(tmp_path / "frame.png"),
        "sha256": hashlib.sha256(frame.png).hexdigest(),
    }
    assert [t["name"] for t in stage["tiles"]] == [t.name for t in plan.tiles]
    assert [t["name"] for t in stage["tiles"] if not t.get("reused")] == ["tile_r00_c00"]
    assert not saved.image_path.with_name("edited.tiles").exists()


def test_a_frame_whose_tile_fails_stops_alone(tmp_path, base_png, server):
    """One frame's failed tile fails that frame alone: the next frame queued in the same pool is made."""
    previous = read_previous(base_png)
    plan = plan_upscale(*FRAME, seed=5, base_megapixels=0.0625, base_size=BASE)
    frame = frame_layout_at(previous.layout, FRAME)
    broken = Upscale(
        plan, frame, previous.image, previous.record, tmp_path / "broken.png", STEPS,
        previous.record.guidance, {},
    )  # fmt: skip
    (broken.tiles_dir / f"{plan.tiles[0].name}.json").mkdir(parents=True)  # its first tile cannot be kept
    good = replace(broken, out_path=tmp_path / "good.png")
    views = TileViews()
    stop = threading.Event()
    with SeeThroughClient(server.endpoint, 120.0) as client:
        pool = TilePool([client], stop)
        try:
            failing = UpscaleRunner(broken, [client], views.view, stop=stop)
            making = UpscaleRunner(good, [client], views.view, stop=stop)
            failing.queue_tiles(pool)
            making.queue_tiles(pool)
            with pytest.raises(OSError):
                failing.complete()
            saved = making.complete()
        finally:
            pool.close()
    assert not stop.is_set() and saved is not None and saved.image_path == tmp_path / "good.png"
    assert not (tmp_path / "broken.png").exists()


def test_a_frame_smaller_than_the_base_is_the_base_resampled(tmp_path, base_png, server):
    """No tiles: the base picture resampled to the frame, alone (run) or queued in a batch's pool."""
    previous = read_previous(base_png)
    size = (300, 170)
    plan = plan_upscale(*size, seed=5, base_megapixels=0.0625, base_size=BASE)
    assert not plan.needs_tiles
    expected = sample_view(previous.image, plan.base.rect, plan.base.scale, 0, 0, *size)
    frame = frame_layout_at(previous.layout, size)
    with SeeThroughClient(server.endpoint, 60.0) as client:
        alone = Upscale(plan, frame, previous.image, previous.record, tmp_path / "alone.png", STEPS, 3.5, {})
        saved = [UpscaleRunner(alone, [client], TileViews().view).run()]
        pool = TilePool([client])
        try:
            later = replace(alone, out_path=tmp_path / "queued.png")
            queued = UpscaleRunner(later, [client], TileViews().view)
            queued.queue_tiles(pool)
            saved.append(queued.complete())
        finally:
            pool.close()
    for image in saved:
        assert np.array_equal(read_rgb(image.image_path), expected)
        assert read_png_record(image.image_path.read_bytes()).upscale["tiles"] == []
    assert not any(tmp_path.glob("*.tiles"))
