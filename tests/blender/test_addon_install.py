"""`seethrough build-addon` builds an extension zip that a fresh Blender profile installs and enables.

The install runs in a subprocess with BLENDER_USER_RESOURCES in a temporary folder (the real
profile is never touched) and with only bpy and numpy importable: pyzmq, msgpack and the core
must come from the wheels inside the zip. Wheel downloads are cached in the shared wheel cache
(~/.cache/seethrough/wheels), so only the first run of the suite needs PyPI.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import importlib.metadata
import io
import json
import os
import re
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

from seethrough import build_addon as build
from seethrough_core import __version__

REPO = Path(__file__).resolve().parents[2]
EXTENSION = "bl_ext.user_default.seethrough"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def addon_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run = subprocess.run(
        [sys.executable, "-m", "seethrough", "build-addon", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr
    path = out / f"seethrough-{__version__}.zip"
    assert str(path) in run.stdout
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.each_blender
def test_zip_holds_the_addon_its_manifest_and_unmodified_wheels(addon_zip):
    with zipfile.ZipFile(addon_zip) as archive:
        names = archive.namelist()
        manifest = tomllib.loads(archive.read("blender_manifest.toml").decode())
        wheels = {n.removeprefix("wheels/"): archive.read(n) for n in names if n.startswith("wheels/")}
        templates = archive.read("assets/size_templates.json")

    assert manifest["id"] == "seethrough" and manifest["version"] == __version__
    assert manifest["type"] == "add-on" and manifest["blender_version_min"] == "4.5.0"
    assert manifest["license"] == ["SPDX:GPL-3.0-or-later"]
    assert manifest["permissions"]["network"] and manifest["permissions"]["files"]
    assert sorted(manifest["wheels"]) == sorted(f"./wheels/{n}" for n in wheels)
    assert "__init__.py" in names and "registration.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # Only what the add-on runs: the command line's own code (batch, packager) stays out.
    assert not [n for n in names if n.startswith(("batch/", "seethrough/")) or n.endswith("_command.py")]
    assert not [n for n in names if n.startswith("dataset_render/")]  # `seethrough dataset make`'s side only
    assert templates == (REPO / "assets" / "size_templates.json").read_bytes()

    # Every platform x Python pair has a pyzmq and a msgpack wheel.
    def covers(name: str, platform: str, python: str) -> bool:
        python_tag, abi_tag, platform_tag = name[:-4].split("-")[-3:]
        stable_abi = abi_tag == "abi3" and int(python_tag[2:]) <= int(python[2:])
        python_ok = python_tag == python or stable_abi
        platform_ok = {
            "linux-x64": "manylinux" in platform_tag and platform_tag.endswith("x86_64"),
            "windows-x64": platform_tag == "win_amd64",
            "macos-arm64": platform_tag.startswith("macosx")
            and platform_tag.endswith(("arm64", "universal2")),
        }[platform]
        return python_ok and platform_ok

    for package, _ in build.PINNED_WHEELS:
        for platform in build.PLATFORMS:
            for python in ("cp311", "cp313"):
                assert any(n.startswith(f"{package}-") and covers(n, platform, python) for n in wheels), (
                    package,
                    platform,
                    python,
                )

    # Third-party wheels are PyPI's bytes, unmodified (as cached by the build).
    cache = build.default_cache_dir()
    for name, data in wheels.items():
        if not name.startswith("seethrough_core-"):
            (cached,) = cache.rglob(name)
            assert _sha256(data) == _sha256(cached.read_bytes()), name

    # The core wheel: pure Python, no dependencies, a RECORD that matches its files.
    core = zipfile.ZipFile(io.BytesIO(wheels[f"seethrough_core-{__version__}-py3-none-any.whl"]))
    files = {n: core.read(n) for n in core.namelist()}
    assert {"seethrough_core/__init__.py", "seethrough_core/client.py", "seethrough_core/layout.py"} <= set(
        files
    )
    metadata = files[f"seethrough_core-{__version__}.dist-info/METADATA"].decode()
    assert "Requires-Dist" not in metadata and f"Version: {__version__}" in metadata
    record = files[f"seethrough_core-{__version__}.dist-info/RECORD"].decode().splitlines()
    for line in record:
        path, digest, size = line.rsplit(",", 2)
        if digest:
            expected = base64.urlsafe_b64encode(hashlib.sha256(files[path]).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={expected}" and int(size) == len(files[path])
    assert len(record) == len(files)


@pytest.mark.each_blender
def test_blenders_own_validator_accepts_the_package(addon_zip):
    import bpy

    tool = Path(bpy.utils.system_resource("SCRIPTS")) / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
    run = subprocess.run(
        [sys.executable, str(tool), "validate", str(addon_zip)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0 and "Success" in run.stdout, run.stdout + run.stderr


def test_addon_package_imports_no_bpy_at_module_level():
    # The packager and the command line import blender_addon outside Blender.
    tree = ast.parse((REPO / "blender_addon" / "__init__.py").read_text())
    assert not [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]


def test_later_builds_reuse_the_cache_and_offline_without_it_says_what_to_do(addon_zip, tmp_path):
    # The suite's first build filled the cache: a build that may not download works, bit for bit.
    again = build.build_addon(tmp_path / "again", offline=True)
    assert again.zip_path.read_bytes() == addon_zip.read_bytes()
    with pytest.raises(build.BuildError, match="not in the wheel cache") as info:
        build.build_addon(tmp_path / "out", tmp_path / "empty-cache", offline=True)
    assert "PyPI" in str(info.value)
    assert not (tmp_path / "out" / f"seethrough-{__version__}.zip").exists()


INSTALL_SCRIPT = """
import json, os, sys, time
sys.path.append({only_bpy!r})
import bpy, addon_utils
result = {{}}
bpy.ops.extensions.package_install_files(filepath={zip!r}, repo="user_default", enable_on_install=True)
result["enabled"] = {module!r} in bpy.context.preferences.addons
import seethrough_core, zmq, msgpack
result["modules"] = [m.__file__ for m in (seethrough_core, zmq, msgpack)]
site = os.path.dirname(os.path.dirname(seethrough_core.__file__))
result["site_packages"] = sorted(os.listdir(site))
result["add_box"] = sorted(bpy.ops.seethrough.add_box(template="bicycle"))
result["templates"] = str(sys.modules[{module!r} + ".templates"].templates_path())
result["address"] = bpy.context.preferences.addons[{module!r}].preferences.server_address
# Render OSCR from the installed extension: a background process loads it from its folder.
scene = bpy.context.scene
scene.render.resolution_x = scene.render.resolution_y = 256
scene.render.resolution_percentage = 100
bpy.context.preferences.addons[{module!r}].preferences.output_dir = os.path.join(os.getcwd(), "out")
bpy.ops.seethrough.render_oscr()
runner = sys.modules[{module!r} + ".generation_jobs"].RUNNER
pump = sys.modules[{module!r} + ".generation"].pump
deadline = time.monotonic() + 240
while pump() and time.monotonic() < deadline:
    time.sleep(0.05)
result["render"] = [runner.status.state, runner.status.message, str(runner.job.spec.render.argv)]
oscr = bpy.data.images.get("SeeThrough OSCR")
result["oscr_size"] = list(oscr.size) if oscr is not None else None
from seethrough_core.client import SeeThroughClient, ServerUnavailableError
try:
    SeeThroughClient("tcp://127.0.0.1:9", timeout_s=0.3).info()
except ServerUnavailableError as exc:
    result["unreachable"] = str(exc)
addon_utils.disable({module!r}, default_set=True)
result["after_disable"] = hasattr(bpy.types.Scene, "seethrough")
print("RESULT " + json.dumps(result))
"""


def bpy_and_its_requirements() -> set[str]:
    """Top-level names in site-packages of bpy and of what it requires, recursively: the Python packages
    Blender itself ships (numpy, requests, zstandard, ...; 5.x adds cattrs)."""
    names: set[str] = set()
    todo, seen = ["bpy"], set()
    while todo:
        name = re.split(r"[ ;<>=!~\[(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:  # required only by other Pythons (markers)
            continue
        names |= {Path(str(file)).parts[0] for file in dist.files or ()}
        todo += [r for r in dist.requires or () if "extra ==" not in r]
    return names - {"..", "__pycache__"}


@pytest.mark.each_blender
def test_zip_installs_and_enables_in_a_fresh_profile(addon_zip, tmp_path):
    # A site-packages holding only bpy and what Blender bundles with it: everything else (pyzmq,
    # msgpack, pillow, the core) must come from the zip's wheels.
    only_bpy = tmp_path / "site"
    only_bpy.mkdir()
    purelib = Path(sysconfig.get_paths()["purelib"])
    for name in sorted(bpy_and_its_requirements()):
        if (purelib / name).exists():
            (only_bpy / name).symlink_to(purelib / name)
    profile = tmp_path / "profile"
    script = INSTALL_SCRIPT.format(only_bpy=str(only_bpy), zip=str(addon_zip), module=EXTENSION)
    run = subprocess.run(
        [sys.executable, "-S", "-c", textwrap.dedent(script)],
        cwd=tmp_path,
        env={
            **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            "BLENDER_USER_RESOURCES": str(profile),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))

    assert result["enabled"]
    assert all(path.startswith(str(profile)) for path in result["modules"]), result["modules"]
    assert {"seethrough_core", f"seethrough_core-{__version__}.dist-info", "zmq", "msgpack"} <= set(
        result["site_packages"]
    )
    assert result["add_box"] == ["FINISHED"]
    assert result["templates"].startswith(str(profile))  # the copy packed into the extension
    assert result["address"] == "tcp://127.0.0.1:5555"
    state, message, argv = result["render"]
    assert state == "done" and message.startswith("OSCR rendered in"), message
    assert str(profile) in argv  # the child loaded the installed extension, not this checkout
    assert result["oscr_size"] == [256, 256]
    assert "seethrough serve" in result["unreachable"]
    assert result["after_disable"] is False
