"""`seethrough dataset make|stats` with real Blender workers: primitives, a .blend and a .glb library,
an interrupted run that resumes, the filters' guarantees, the files of every sample, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from process_support import run_command

from seethrough_core.dataset_format import METADATA_NAME, read_samples
from seethrough_core.dataset_scenes import AssetSpec, SceneSettings, make_scene, scene_seed
from seethrough_core.layout import Layout

REPO = Path(__file__).resolve().parents[2]
SEED = 5
PRIMITIVES_MAKE = [
    "dataset", "make", "--primitives", "--scenes", "4", "--resolution", "256", "--samples", "4",
    "--workers", "2", "--seed", str(SEED),
]  # fmt: skip
CHANNELS = {"red": (0,), "green": (1,), "blue": (2,), "yellow": (0, 1)}


def cli_env() -> dict[str, str]:
    """This checkout first on the path, for the command and the Blender workers it starts."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_command([sys.executable, "-m", "seethrough", *args], timeout=timeout, env=cli_env())


@pytest.fixture(scope="module")
def primitives_dataset(tmp_path_factory):
    """Four primitive scenes at 256 px: a first run interrupted after its first sample, then a rerun."""
    out = tmp_path_factory.mktemp("primitives") / "ds"
    command = [sys.executable, "-m", "seethrough", *PRIMITIVES_MAKE, "--out", str(out)]
    # Ctrl-C as in a terminal (a test run started in the background hands its children SIGINT ignored)
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        for line in process.stderr:  # wait until the first sample is saved, then interrupt
            if line.startswith("[1/4]"):
                break
        process.send_signal(signal.SIGINT)
        interrupted_out, interrupted_err = process.communicate(timeout=120)
    finally:
        process.kill()
    first = read_samples(out)
    first_mtimes = {s.id: (out / s.target).stat().st_mtime_ns for s in first}
    # A folder that an interrupted sample left behind, with a stray file: redone cleanly.
    leftover = out / "samples" / "000003"
    leftover.mkdir(parents=True, exist_ok=True)
    (leftover / "stray.txt").write_text("left by a killed worker")
    rerun = run_cli(*PRIMITIVES_MAKE, "--out", str(out))
    return {
        "out": out,
        "interrupted_code": process.returncode,
        "interrupted_err": interrupted_err,
        "first": first,
        "first_mtimes": first_mtimes,
        "rerun": rerun,
    }


@pytest.mark.slow
def test_an_interrupted_run_resumes_without_duplicates(primitives_dataset):
    ds = primitives_dataset
    assert ds["interrupted_code"] == 130, ds["interrupted_err"]
    assert "rerun the same command" in ds["interrupted_err"]
    assert 1 <= len(ds["first"]) < 4
    assert ds["rerun"].returncode == 0, ds["rerun"].stderr
    samples = read_samples(ds["out"])
    assert sorted(s.id for s in samples) == ["000000", "000001", "000002", "000003"]
    # the samples of the first run were not rendered again
    for sample in ds["first"]:
        assert (ds["out"] / sample.target).stat().st_mtime_ns == ds["first_mtimes"][sample.id]
    assert not (ds["out"] / "samples" / "000003" / "stray.txt").exists()
    # a third run finds nothing to do
    again = run_cli(*PRIMITIVES_MAKE, "--out", str(ds["out"]))
    assert again.returncode == 0 and "already" in again.stderr
    assert len(read_samples(ds["out"])) == 4


@pytest.mark.slow
def test_every_sample_has_its_files_prompt_and_passes_the_filters(primitives_dataset):
    out = primitives_dataset["out"]
    settings = SceneSettings()
    samples = read_samples(out)
    for sample in samples:
        layout = sample.parsed_layout()
        n = len(layout.boxes)
        assert 1 <= n <= 4 and sample.width == sample.height == 256
        with Image.open(out / sample.target) as target:
            assert target.format == "PNG" and target.size == (256, 256) and target.mode == "RGB"
            pixels = np.asarray(target).astype(float)
        with Image.open(out / sample.oscr) as oscr:
            assert oscr.format == "JPEG" and oscr.size == (256, 256)
        assert len(sample.amodal_masks) == len(sample.visible_masks) == n
        visible = [np.asarray(Image.open(out / path)) > 128 for path in sample.visible_masks]
        report = json.loads((out / sample.masks_json).read_text())
        assert [len(box["token_grid"]) for box in report["boxes"]] == [32] * n
        assert [box["visibility_ratio"] for box in report["boxes"]] == pytest.approx(sample.visibility)
        for description, (start, end) in zip(sample.descriptions, sample.spans, strict=True):
            assert sample.prompt[start:end] == description
        assert sample.prompt.startswith("a photo of ")
        # the filters: every object visible enough; some object hidden enough (two objects or more)
        assert min(sample.visibility) > settings.min_visibility
        if n >= 2:
            assert min(sample.visibility) < settings.max_min_visibility
        for x0, y0, x1, y1 in sample.scene["boxes_2d"]:
            assert 0.1 * 256 <= max(x1 - x0, y1 - y0) <= 0.9 * 256
        # the rendered assets stand where the boxes are: a coloured shape's own colour dominates its
        # visible pixels in the target
        for description, mask in zip(sample.descriptions, visible, strict=True):
            colour = next((c for c in CHANNELS if c in description), None)
            if colour is None or mask.sum() < 40:
                continue
            mean = pixels[mask].mean(axis=0)
            others = [c for c in range(3) if c not in CHANNELS[colour]]
            assert min(mean[list(CHANNELS[colour])]) > max(mean[others]), (sample.id, description, mean)
        assert set(sample.scene["timings"]) == {"target_s", "oscr_s", "masks_s"}


@pytest.mark.slow
def test_the_same_seed_draws_the_same_layouts(primitives_dataset):
    """The layouts the workers rendered are the ones this process draws from the same seeds."""
    out = primitives_dataset["out"]
    made_with = json.loads((out / "dataset.json").read_text())
    assets = [AssetSpec(i, d, tuple(s)) for i, d, s in made_with["assets"]]
    settings = SceneSettings(resolution=256)
    for sample in read_samples(out):
        index = int(sample.id)
        assert sample.seed == scene_seed(SEED, index)
        drawn = make_scene(assets, sample.seed, settings).layout
        made = Layout.from_dict(sample.layout)
        assert made.descriptions == drawn.descriptions
        assert np.allclose([b.center for b in made.boxes], [b.center for b in drawn.boxes])
        assert np.allclose(made.camera.location, drawn.camera.location)


@pytest.mark.slow
def test_another_seed_into_the_same_folder_is_refused(primitives_dataset):
    command = [a if a != str(SEED) else "6" for a in PRIMITIVES_MAKE]
    run = run_cli(*command, "--out", str(primitives_dataset["out"]))
    assert run.returncode == 1
    assert "other seed" in run.stderr and "another folder" in run.stderr


@pytest.mark.slow
def test_stats_writes_its_plots_and_table(primitives_dataset):
    out = primitives_dataset["out"]
    run = run_cli("dataset", "stats", str(out))
    assert run.returncode == 0, run.stderr
    for name in ("min_visibility", "yaw", "box_size", "elevation", "objects", "rejections", "stats"):
        with Image.open(out / "stats" / f"{name}.png") as plot:
            assert plot.format == "PNG" and plot.width >= 400
    table = (out / "stats" / "stats.txt").read_text()
    assert "min_visibility" in table and "rejected: no_occlusion" in table
    numbers = json.loads((out / "stats" / "stats.json").read_text())
    assert numbers["samples"] == 4 and len(numbers["values"]["min_visibility"]) == 4


# --- asset libraries --------------------------------------------------------------------------


def _box_mesh(bpy, name: str, size: tuple[float, float, float], location=(0.0, 0.0, 0.0)):
    import bmesh

    mesh = bpy.data.meshes.new(name)
    bm = bmesh.new()
    bmesh.ops.create_cube(bm, size=1.0)
    bmesh.ops.scale(bm, vec=size, verts=bm.verts)
    bm.to_mesh(mesh)
    bm.free()
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    obj.location = location
    return obj


@pytest.fixture
def asset_files(empty_blender, tmp_path):
    """A .blend library (a chair with a description, a table named like a size template, an empty), a .glb
    exported by Blender, a broken .glb and a text file."""
    bpy = empty_blender
    chair = _box_mesh(bpy, "Wooden_Chair", (0.6, 0.6, 1.0), (0.0, 0.0, 0.5))
    chair["description"] = "a wooden chair"
    _box_mesh(bpy, "Table", (1.2, 0.6, 0.5), (3.0, 0.0, 0.25))
    lamp = bpy.data.objects.new("Lamp_Base", None)  # an empty with nothing under it
    bpy.context.scene.collection.objects.link(lamp)
    blend = tmp_path / "library.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    _box_mesh(bpy, "Blue_Bucket", (0.7, 0.7, 0.9))
    glb = tmp_path / "bucket.glb"
    assert bpy.ops.export_scene.gltf(filepath=str(glb), export_format="GLB") == {"FINISHED"}
    bpy.ops.wm.read_factory_settings(use_empty=True)
    broken = tmp_path / "broken.glb"
    broken.write_bytes(b"glTF this is not")
    return {"blend": blend, "glb": glb, "broken": broken, "dir": tmp_path}


@pytest.mark.slow
def test_a_blend_and_a_glb_library_load_and_bad_files_are_named(asset_files):
    from blender_addon.dataset_render.asset_library import load_library
    from blender_addon.templates import get_template

    missing = asset_files["dir"] / "gone.fbx"
    paths = [asset_files["blend"], asset_files["glb"], asset_files["broken"], missing]
    library = load_library([str(p) for p in paths])
    by_id = {asset.spec.id: asset for asset in library.assets}
    assert sorted(by_id) == ["bucket.glb", "library.blend:Table", "library.blend:Wooden_Chair"]
    chair, table, bucket = (
        by_id["library.blend:Wooden_Chair"],
        by_id["library.blend:Table"],
        by_id["bucket.glb"],
    )
    assert chair.spec.description == "a wooden chair"  # its custom property
    assert chair.spec.size == pytest.approx((0.6, 0.6, 1.0), abs=1e-5) and chair.template is None
    # named like a size template: scaled to its real-world size
    assert table.template == "table" and table.spec.description == "table"
    assert max(table.spec.size) == pytest.approx(max(get_template("table").size))
    assert table.spec.size[2] == pytest.approx(0.5 * table.scale, abs=1e-5)
    assert bucket.spec.description == "blue bucket"  # its cleaned name
    assert sorted(bucket.spec.size) == pytest.approx(sorted((0.7, 0.7, 0.9)), abs=1e-4)
    problems = {Path(p["source"]).name: p["reason"] for p in library.problems}
    assert "cannot be read" in problems["broken.glb"]
    assert problems["gone.fbx"] == "file not found"
    assert "'Lamp_Base' has no geometry" in problems["library.blend"]


@pytest.mark.slow
def test_assets_marked_in_a_blend_are_its_only_assets(empty_blender, tmp_path):
    from blender_addon.dataset_render.asset_library import load_library

    bpy = empty_blender
    marked = _box_mesh(bpy, "Crate", (1.0, 0.8, 0.6))
    marked.asset_mark()
    marked.asset_data.description = "an old wooden crate"
    _box_mesh(bpy, "Helper_Plane", (2.0, 2.0, 0.01))
    path = tmp_path / "marked.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path), copy=True)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    library = load_library([str(path)])
    assert [(a.spec.id, a.spec.description) for a in library.assets] == [
        ("marked.blend:Crate", "an old wooden crate")
    ]


@pytest.mark.slow
def test_make_renders_a_blend_and_a_glb_library(asset_files, tmp_path):
    out = tmp_path / "ds"
    run = run_cli(
        "dataset", "make", "--assets", str(asset_files["blend"]), str(asset_files["glb"]),
        str(asset_files["broken"]), "--out", str(out), "--scenes", "2", "--objects", "2-2",
        "--resolution", "256", "--samples", "4", "--seed", "1",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "skipped" in run.stderr and "broken.glb" in run.stderr
    samples = read_samples(out)
    assert len(samples) == 2
    for sample in samples:
        assert set(sample.descriptions) <= {"a wooden chair", "table", "blue bucket"}
        assert len(sample.descriptions) == 2
        with Image.open(out / sample.target) as target:
            assert np.asarray(target).std() > 5.0


@pytest.mark.slow
def test_a_folder_whose_files_are_all_broken_stops_with_a_clear_error(tmp_path):
    (tmp_path / "broken.glb").write_bytes(b"not a gltf")
    run = run_cli(
        "dataset", "make", "--assets", str(tmp_path), "--out", str(tmp_path / "ds"), "--scenes", "1"
    )
    assert run.returncode == 1
    assert "broken.glb" in run.stderr and "no usable asset" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "ds" / METADATA_NAME).exists()


# --- bad command lines: no Blender needed -----------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--assets", "EMPTY_DIR"], "no usable asset in"),
        (["--primitives", "--objects", "4-1"], "--objects"),
        (["--primitives", "--min-visibility", "0.9", "--max-min-visibility", "0.5"], "--min-visibility"),
        (["--primitives", "--resolution", "300"], "--resolution 300"),
        (["--primitives", "--distance", "far"], "--distance"),
        ([], "--assets"),
    ],
)
def test_bad_options_stop_before_any_work_with_a_clear_error(tmp_path, capsys, extra, message):
    from seethrough.cli import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no assets here")
    extra = [str(tmp_path / "empty") if a == "EMPTY_DIR" else a for a in extra]
    code = main(["dataset", "make", *extra, "--out", str(tmp_path / "ds"), "--scenes", "2"])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_stats_of_a_folder_without_a_dataset_says_so(tmp_path, capsys):
    from seethrough.cli import main

    assert main(["dataset", "stats", str(tmp_path)]) == 2
    assert "has no metadata.jsonl" in capsys.readouterr().err


def test_the_extension_leaves_the_dataset_worker_out():
    from seethrough.build_addon import addon_files

    assert (REPO / "blender_addon" / "dataset_render" / "blender_worker.py").is_file()
    names = [name for name, _ in addon_files()]
    assert "render.py" in names
    assert not [name for name in names if name.startswith("dataset/")]
