"""`seethrough batch --ray`: a real 2-node Ray cluster on this machine, CPU actors of the tiny model."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import bpy
import numpy as np
import pytest
from batch_support import hold_base_until_frame
from PIL import Image
from process_support import run_command

from blender_addon.scene_io import layout_to_scene
from seethrough.batch.inputs import expand_inputs
from seethrough.batch.runner import BatchOptions, BatchRunner, read_plan
from seethrough.cli import main
from seethrough_core.layout import Layout, load_layout
from seethrough_core.record import has_matching_sidecar, read_png_record
from seethrough_core.server_process import ServerProcess, free_loopback_port
from seethrough_core.vocabulary import DEFAULT_CLIENT_TIMEOUT_S

ray = pytest.importorskip("ray", reason="the Ray tests need seethrough[farm] (in seethrough[dev])")

pytestmark = pytest.mark.slow  # a Ray cluster, Blender renders and model processes

STEPS = 2
OBJECT_STORE_BYTES = 100 * 1024 * 1024  # Ray's minimum; the renders and images here are small


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes of 2 CPUs each (one for the node's actor, one for renders), no dashboard."""
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 2, "num_gpus": 0, "object_store_memory": OBJECT_STORE_BYTES}
    started = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        started.add_node(**node)
        started.wait_for_nodes()
        yield started
    finally:
        started.shutdown()


def small_layout() -> Layout:
    data = load_layout("assets/examples/street.json").to_dict()
    data["resolution"] = [256, 256]
    data["boxes"] = data["boxes"][:2]
    return Layout.from_dict(data)


def write_driving_blend(path: Path, metres: float) -> None:
    """The car drives ``metres`` along X between frames 1 and 3."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    car = layout_to_scene(small_layout(), scene)[0]
    car.keyframe_insert("location", frame=1)
    car.location.x += metres
    car.keyframe_insert("location", frame=3)
    scene.frame_set(1)
    bpy.ops.wm.save_as_mainfile(filepath=str(path))


def batch_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "seethrough", "batch", *args, "--steps", str(STEPS)]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(np.int16)


def comparable(record: dict, out: Path) -> dict:
    """A record without what depends on when and where it ran (timings, the server, the output folder)."""
    record = json.loads(json.dumps(record).replace(str(out), "OUT"))
    for key in ("timings", "model_timings", "created"):
        record.pop(key, None)
    record["source"].pop("server")
    if record.get("parent"):  # the previous frame: its record, and the sha256 of a picture equal only
        record["parent"].pop("sha256", None)  # within the tolerance, not bit for bit
        if "record" in record["parent"]:
            record["parent"]["record"] = comparable(record["parent"]["record"], out)
    return record


def test_a_ray_batch_makes_the_same_files_as_a_batch_without_ray(empty_blender, tmp_path, cluster):
    """2 inputs x 3 frames x 2 seeds, --consistent: each camera's frames are a chain on one actor."""
    write_driving_blend(tmp_path / "slow.blend", 0.5)
    write_driving_blend(tmp_path / "fast.blend", 1.5)
    inputs = [tmp_path / "slow.blend", tmp_path / "fast.blend"]
    local, farm = tmp_path / "local", tmp_path / "farm"
    with ServerProcess.tiny(tmp_path / "server.log") as server:
        options = BatchOptions(
            out_dir=local, servers=[server.endpoint], seeds=[1, 2], frames=[1, 2, 3], steps=STEPS,
            consistent=True,
        )  # fmt: skip
        assert BatchRunner(options).run(expand_inputs([str(p) for p in inputs])).ok
    run = subprocess.run(
        batch_command(
            *map(str, inputs), "--out", str(farm), "--frames", "1-3", "--seeds", "1,2", "--consistent",
            "--tiny", "--ray", cluster.address, "--ray-cpu-actors", "2",
        ),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Ray cluster of 2 node(s)" in run.stderr and "2 CPU generation actors" in run.stderr
    assert len(set(re.findall(r"ray actor \d: pid \d+ on node", run.stderr))) == 2

    files = sorted(p.relative_to(local) for p in local.rglob("*") if p.is_file() and "logs" not in p.parts)
    made = sorted(
        p.relative_to(farm) for p in farm.rglob("*") if p.is_file() and p.name != "contact_sheet.png"
    )
    assert files == made
    images = [f for f in files if f.suffix == ".png" and "conditions" not in f.parts and f.parent.name]
    assert len([f for f in images if re.fullmatch(r"000\d_\d\.png", f.name)]) == 12
    for name in files:
        if name.suffix == ".png" and name.name != "contact_sheet.png":
            difference = np.abs(pixels(local / name) - pixels(farm / name)).max()
            assert difference <= 1, f"{name} differs by {difference}"
        elif name.name == "masks.json":
            before, after = (json.loads((root / name).read_text()) for root in (local, farm))
            before["render"].pop("timings"), after["render"].pop("timings")
            assert before == after
        elif name.suffix == ".json" and "conditions" not in name.parts:
            before, after = (json.loads((root / name).read_text()) for root in (local, farm))
            assert comparable(before, local) == comparable(after, farm), name
    # a chain (input, camera, seed) ran on one actor
    for stem in ("slow", "fast"):
        for seed in (1, 2):
            records = [farm / stem / "Camera" / f"{frame:04d}_{seed}.json" for frame in (1, 2, 3)]
            servers = {json.loads(path.read_text())["source"]["server"] for path in records}
            assert len(servers) == 1 and next(iter(servers)).startswith("ray actor ")
    assert (farm / "slow" / "contact_sheet.png").is_file() and (farm / "fast" / "contact_sheet.png").is_file()


def test_a_killed_actor_is_restarted_and_nothing_is_lost_or_written_twice(empty_blender, tmp_path, cluster):
    small_layout().save(tmp_path / "shot.json")
    out = tmp_path / "out"
    seeds = [str(s) for s in range(1, 9)]
    command = batch_command(
        str(tmp_path / "shot.json"), "--out", str(out), "--seeds", ",".join(seeds), "--tiny",
        "--ray", cluster.address, "--ray-cpu-actors", "2",
    )  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids: dict[str, int] = {}
    killed = None
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            started = re.match(r"\s*(ray actor \d): pid (\d+) on node", line)
            if started:
                pids[started.group(1)] = int(started.group(2))
            first = re.match(r"\[1/8\] done .* on (ray actor \d)", line)
            if first:  # the actor that just finished a job has the next one: kill its process
                killed = pids[first.group(1)]
                os.kill(killed, signal.SIGKILL)
        stdout, _ = process.communicate(timeout=300)
    finally:
        process.kill()
        process.wait()
    stderr = "".join(lines)
    assert killed is not None, stderr[-3000:]
    assert process.returncode == 0, stderr[-3000:]
    done = re.findall(r"\] done    (\S+) on ray actor", stderr)
    assert sorted(done) == sorted(f"shot/Camera/0001_{s}.png" for s in seeds)  # each image once
    assert "FAILED" not in stderr
    for seed in seeds:
        png = out / "shot" / "Camera" / f"0001_{seed}.png"
        assert png.is_file() and png.with_suffix(".json").is_file()
    assert not [p for p in out.rglob("*") if "partial" in p.name]
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)

    # a rerun without Ray finds everything complete: it needs no server at all
    dead = f"tcp://127.0.0.1:{free_loopback_port()}"
    again = batch_command(str(tmp_path / "shot.json"), "--out", str(out), "--seeds", ",".join(seeds))
    rerun = subprocess.run([*again, "--server", dead], capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert rerun.stderr.count("skipped") == 8


def test_a_frame_in_two_stages_keeps_its_base_and_a_rerun_starts_no_actor(tmp_path, cluster):
    """480 x 240 is not a size the model takes: a base picture on an actor, then 2 tiles on actors."""
    data = small_layout().to_dict()
    data["resolution"] = [480, 240]
    Layout.from_dict(data).save(tmp_path / "wide.json")
    out = tmp_path / "out"
    command = batch_command(
        str(tmp_path / "wide.json"), "--out", str(out), "--seeds", "3", "--base-megapixels", "0.0625",
        "--tiny", "--ray", cluster.address, "--ray-cpu-actors", "1",
    )  # fmt: skip
    run = run_command(command, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "(upscaled from 368x256, in 2 tiles)" in run.stderr
    final = out / "wide" / "Camera" / "0001_3.png"
    base = final.with_name("0001_3_base.png")
    assert pixels(final).shape == (240, 480, 3) and pixels(base).shape == (256, 368, 3)
    record, base_record = (read_png_record(path.read_bytes()) for path in (final, base))
    assert (record.width, record.height) == (480, 240) and record.seed == base_record.seed == 3
    assert record.upscale["base"]["size"] == [368, 256] and len(record.upscale["tiles"]) == 2
    assert record.source["base"] == str(base) and record.source["server"] == "ray actor 1"
    assert (base_record.width, base_record.height) == (368, 256) and base_record.upscale is None
    assert not final.with_name("0001_3.tiles").exists()  # the tiles go once the frame is written

    rerun = run_command(command, timeout=120)  # complete: no cluster, no actor, no model
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "nothing to make (all 1 image(s) already complete); no server started" in rerun.stderr
    assert "Connecting to Ray" not in rerun.stderr and "skipped wide/Camera/0001_3.png" in rerun.stderr


def test_a_frame_is_upscaled_while_later_bases_are_generated(tmp_path, cluster, monkeypatch):
    """Three frames in two stages on one actor: the last base waits until the first frame is written.
    Upscaled only after every base, the first frame never comes while it waits (a bounded wait on an
    event, so that order fails the test instead of hanging it); upscaled as its base is ready, it does."""
    from seethrough.batch.ray_runner import RayBatchRunner, run_on_ray

    data = small_layout().to_dict()
    data["resolution"] = [480, 240]  # a base of 368 x 256, then 2 tiles
    Layout.from_dict(data).save(tmp_path / "wide.json")
    out = tmp_path / "out"
    options = BatchOptions(out_dir=out, servers=[], seeds=[1, 2, 3], steps=STEPS, base_megapixels=0.0625)
    plan = read_plan([tmp_path / "wide.json"], options)
    order = hold_base_until_frame(monkeypatch, RayBatchRunner, 3, "wide/Camera/0001_1.png")
    summary = run_on_ray(cluster.address, 1, ["--tiny"], DEFAULT_CLIENT_TIMEOUT_S, options, plan)
    events = order.events
    assert summary.ok and order.waited == [True], events
    assert events.index("done wide/Camera/0001_1.png") < events.index("base 3")
    assert sorted(e for e in events if e.startswith("done")) == [
        f"done wide/Camera/0001_{seed}.png" for seed in (1, 2, 3)
    ]
    for seed in (1, 2, 3):
        final = out / "wide" / "Camera" / f"0001_{seed}.png"
        assert pixels(final).shape == (240, 480, 3)
        assert len(read_png_record(final.read_bytes()).upscale["tiles"]) == 2


def test_a_consistent_frames_views_ahead_are_the_tiles_its_edit_reaches(tmp_path, cluster, monkeypatch):
    """--consistent frames in two stages: a frame that keeps the frame before refines only the tiles its
    edit reaches, and those tiles' views, known from the edit's region, render on the cluster ahead of
    need as a first frame's do (before, they rendered only when the upscale asked for them)."""
    from seethrough.batch.inputs import parse_frames
    from seethrough.batch.ray_runner import run_on_ray
    from seethrough.batch.ray_views import RayTileViews
    from seethrough_core.output_size import OutputSize

    write_driving_blend(tmp_path / "drive.blend", 0.3)
    asked: dict[str, tuple[str, ...] | None] = {}
    ahead = RayTileViews.ahead

    def recorded(self, plan, frame_layout, tiles_dir, tiles=None) -> None:
        asked[tiles_dir.name] = None if tiles is None else tuple(tile.name for tile in tiles)
        ahead(self, plan, frame_layout, tiles_dir, tiles)

    monkeypatch.setattr(RayTileViews, "ahead", recorded)
    out = tmp_path / "out"
    options = BatchOptions(
        out_dir=out, servers=[], seeds=[1], steps=STEPS, base_megapixels=0.0625, consistent=True,
        frames=parse_frames("1-2"), size=OutputSize(resolution=(640, 240)),  # 3 tiles a frame
    )  # fmt: skip
    plan = read_plan([tmp_path / "drive.blend"], options)
    summary = run_on_ray(cluster.address, 1, ["--tiny"], DEFAULT_CLIENT_TIMEOUT_S, options, plan)
    assert summary.ok, [o.reason for o in summary.outcomes]
    second = read_png_record((out / "drive" / "Camera" / "0002_1.png").read_bytes()).upscale
    refined = tuple(tile["name"] for tile in second["tiles"] if not tile.get("reused"))
    assert second["reuses"]["file"] == str(out / "drive" / "Camera" / "0001_1.png")
    assert asked == {"0001_1.tiles": None, "0002_1.tiles": refined}


def test_tile_views_render_on_the_cluster_ahead_of_need(tmp_path, cluster, monkeypatch):
    """A frame's tile views are render tasks on the cluster, started when its base is ready (ahead):
    this process renders nothing and makes no mask: the tasks cut the tiles' views, it writes the files."""
    from blender_addon.render import read_png_pixels
    from seethrough.batch.ray_views import RayTileViews
    from seethrough_core.masks import compute_masks
    from seethrough_core.rendered_layout import OSCR_NAME, reusable
    from seethrough_core.upscale_plan import plan_upscale
    from seethrough_core.upscale_run import view_renders
    from seethrough_core.vocabulary import DEFAULT_RENDER_ENGINE

    data = small_layout().to_dict()
    data["resolution"] = [640, 240]  # one row of 3 tiles: the first view alone, two cut from one
    frame = Layout.from_dict(data)
    plan = plan_upscale(640, 240, seed=3, base_megapixels=0.0625)
    tiles_dir = tmp_path / "0001_3.tiles"
    renders_here: list[object] = []

    def count(*args: object) -> None:
        renders_here.append(args)

    import blender_addon.render
    import seethrough_core.rendered_layout

    masks_here: list[Layout] = []
    real_masks = compute_masks

    def counted_masks(layout: Layout, *args: object):
        masks_here.append(layout)
        return real_masks(layout, *args)

    for module in (blender_addon.render, seethrough_core.rendered_layout):  # a cut, or a folder read
        monkeypatch.setattr(module, "compute_masks", counted_masks)

    bpy.app.handlers.render_pre.append(count)
    ray.init(address=cluster.address, include_dashboard=False)
    try:
        views = RayTileViews(DEFAULT_RENDER_ENGINE, ahead=4)
        views.ahead(plan, frame, tiles_dir)
        assert views.started == 2  # both renders asked for before the upscale needs them
        wanted = view_renders(plan, frame, tiles_dir)
        first_layout, first_folder = wanted.first
        first = views.view(first_layout, first_folder)
        whole, shared_folder, crops = wanted.shared
        assert views.shared(whole, shared_folder, crops)
        cut = [views.view(crop.layout, crop.folder) for crop in crops]
        assert views.started == 2 and renders_here == []  # nothing rendered again, nothing rendered here
        assert masks_here == []  # nor a tile's masks made here
    finally:
        bpy.app.handlers.render_pre.remove(count)
        ray.shutdown()
    whole_pixels = read_png_pixels(shared_folder / OSCR_NAME)
    for crop, condition in zip(crops, cut, strict=True):
        report = reusable(crop.folder, crop.layout).report
        assert report["render"]["cut_from"]["x"] == crop.x
        height, width = crop.layout.height, crop.layout.width
        assert np.array_equal(
            read_png_pixels(crop.folder / OSCR_NAME),
            whole_pixels[crop.y : crop.y + height, crop.x : crop.x + width],
        )
        assert np.array_equal(condition.token_grids, compute_masks(crop.layout).token_grids())
    assert np.array_equal(first.token_grids, compute_masks(first_layout).token_grids())
    assert read_png_pixels(first_folder / OSCR_NAME).shape == (first_layout.height, first_layout.width, 3)


def session_processes(session: int) -> list[str]:
    """The processes still alive in a session (a Ray started by a command stays in the command's)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # ended while we looked
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(text[: text.rindex(")") + 1])
    return found


def test_ctrl_c_ends_a_ray_batch_cleanly(tmp_path):
    """Ctrl-C in a terminal signals the command's whole process group; --ray alone started its own Ray."""
    small_layout().save(tmp_path / "shot.json")
    out = tmp_path / "out"
    seeds = [str(s) for s in range(1, 17)]  # far more than are made before the signal arrives
    command = batch_command(
        str(tmp_path / "shot.json"), "--out", str(out), "--seeds", ",".join(seeds), "--tiny",
        "--ray", "--ray-cpu-actors", "1",
    )  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            if line.startswith("[1/16] done"):
                os.killpg(process.pid, signal.SIGINT)
                break
        stdout, rest = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    stderr = "".join(lines) + rest
    assert process.returncode == 130, stderr[-3000:]
    assert "interrupted: rerun the same command to finish" in stdout and re.search(r"^total ", stdout, re.M)
    done = re.findall(r"\] done    shot/Camera/(\S+) on ray actor 1", stderr)
    assert 1 <= len(done) < len(seeds), stderr[-3000:]
    for name in done:  # finished images are kept, each with its record
        assert has_matching_sidecar(
            out / "shot" / "Camera" / name, out / "shot" / "Camera" / f"{name[:-4]}.json"
        )
    assert not [p for p in out.rglob("*") if "partial" in p.name]
    assert session_processes(process.pid) == []  # no Ray process, no actor left behind


def test_a_cluster_without_the_resource_says_what_is_missing(tmp_path, cluster):
    small_layout().save(tmp_path / "shot.json")
    args = [str(tmp_path / "shot.json"), "--out", str(tmp_path / "out"), "--tiny", "--ray", cluster.address]
    no_gpu = subprocess.run(batch_command(*args), capture_output=True, text=True, timeout=120)
    assert no_gpu.returncode == 2
    assert "has no GPU" in no_gpu.stderr and "--ray-cpu-actors" in no_gpu.stderr
    too_many = subprocess.run(
        batch_command(*args, "--ray-cpu-actors", "4"), capture_output=True, text=True, timeout=120
    )
    assert too_many.returncode == 2
    assert "has 4 CPU(s); 4 CPU actor(s) need 5" in too_many.stderr
    # the output folder was checked for writing up front; nothing was rendered or written into it
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_an_unreachable_cluster_fails_within_the_timeout(tmp_path, capsys):
    small_layout().save(tmp_path / "shot.json")
    for address in (f"127.0.0.1:{free_loopback_port()}", f"ray://127.0.0.1:{free_loopback_port()}"):
        started = time.monotonic()
        args = ["--tiny", "--ray", address, "--timeout", "3"]
        code = main(["batch", str(tmp_path / "shot.json"), "--out", str(tmp_path / "out"), *args])
        assert code == 2 and time.monotonic() - started < 10
        assert f"cannot reach the Ray cluster at {address} within 3 s" in capsys.readouterr().err


def test_without_ray_installed_the_message_names_the_extra(tmp_path, capsys, monkeypatch):
    small_layout().save(tmp_path / "shot.json")
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as on a machine without it
    code = main(["batch", str(tmp_path / "shot.json"), "--out", str(tmp_path / "out"), "--tiny", "--ray"])
    assert code == 2
    assert "pip install 'seethrough[farm]'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--ray needs the model its actors load"),
        (["--tiny", "--ray-cpu-actors", "0"], "--ray-cpu-actors must be at least 1"),
        (["--tiny", "--server", "tcp://127.0.0.1:5555"], "not both"),
    ],
)
def test_ray_options_that_cannot_work_are_refused(tmp_path, capsys, extra, message):
    small_layout().save(tmp_path / "shot.json")
    code = main(["batch", str(tmp_path / "shot.json"), "--out", str(tmp_path / "out"), *extra, "--ray"])
    assert code == 2 and message in capsys.readouterr().err
