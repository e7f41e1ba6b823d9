"""`seethrough build-addon`: packs the Blender extension zip. No bpy: it runs from the command line.

The zip holds the add-on's files, its size templates, and `wheels/` with

- the unmodified PyPI wheels of pyzmq and msgpack for Linux x86_64, Windows x64 and macOS arm64,
  for Python 3.11 (Blender 4.5 LTS, 5.0) and 3.13 (Blender 5.1+), fetched once with `pip download`
  into a cache folder and reused from there by later builds;
- a pure-Python wheel of `seethrough_core` that this module builds, so the extension carries the
  core without a second copy of it in the repository (docs/architecture.md).

Blender installs the wheels matching the running system into the extension's site-packages, so
nothing is pip-installed at run time. The zip is reproducible: fixed timestamps, sorted entries.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import blender_addon
import seethrough_core
from blender_addon.templates import SEARCH_PATHS as TEMPLATE_PATHS
from seethrough_core import __version__
from seethrough_core.errors import SeeThroughError

ADDON_DIR = Path(blender_addon.__file__).resolve().parent
MANIFEST_NAME = "blender_manifest.toml"
EXTENSION_ID = "seethrough"

# Pinned so every build packs the same bytes; pyzmq ships cp311 + abi3 (cp312) wheels, msgpack
# cp311 + cp313, which covers both Python versions below.
PINNED_WHEELS = (("pyzmq", "27.3.0"), ("msgpack", "1.2.4"))
# Blender platform name -> the pip platform tag asked for (pip also accepts older compatible tags).
PLATFORMS = {
    "linux-x64": "manylinux_2_28_x86_64",
    "windows-x64": "win_amd64",
    "macos-arm64": "macosx_11_0_arm64",
}
PYTHON_VERSIONS = ("3.11", "3.13")  # Blender 4.5 LTS, 5.0: 3.11; Blender 5.1+ (5.2 LTS): 3.13

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same sources give the same zip
# dataset_render/: the Blender side of `seethrough dataset make`, run from the command line only
_EXCLUDED_PARTS = {"__pycache__", "tests", "dataset_render"}


class BuildError(SeeThroughError):
    """The extension cannot be built; the message says what to do."""


@dataclass(frozen=True)
class WheelTarget:
    package: str
    version: str
    python: str  # "3.11"
    platform: str  # a pip platform tag

    def cache_dir(self, cache_root: Path) -> Path:
        return cache_root / f"{self.package}-{self.version}" / f"py{self.python}-{self.platform}"

    def describe(self) -> str:
        return f"{self.package}=={self.version} for {self.platform}, Python {self.python}"


@dataclass(frozen=True)
class BuildResult:
    zip_path: Path
    wheels: tuple[str, ...]  # file names under wheels/, as listed in the manifest
    core_wheel: str


def default_cache_dir() -> Path:
    """$SEETHROUGH_WHEEL_CACHE, else ~/.cache/seethrough/wheels (XDG_CACHE_HOME respected)."""
    if env := os.environ.get("SEETHROUGH_WHEEL_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "seethrough" / "wheels"


def wheel_targets() -> list[WheelTarget]:
    return [
        WheelTarget(package, version, python, platform)
        for package, version in PINNED_WHEELS
        for python in PYTHON_VERSIONS
        for platform in PLATFORMS.values()
    ]


# --- third-party wheels -----------------------------------------------------------------------


def fetch_wheel(target: WheelTarget, cache_root: Path, *, offline: bool = False) -> Path:
    """The cached wheel for a target, downloading it from PyPI first if it is not cached yet."""
    folder = target.cache_dir(cache_root)
    cached = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    if len(cached) == 1:
        return cached[0]
    if offline:
        raise BuildError(
            f"{target.describe()} is not in the wheel cache {cache_root}, and --offline forbids "
            "downloading it; run the build once with access to PyPI"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for stale in cached:  # a half-finished earlier download
        stale.unlink()
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--only-binary=:all:", "--no-deps", "--implementation", "cp",
        "--platform", target.platform, "--python-version", target.python,
        "--dest", str(folder), f"{target.package}=={target.version}",
    ]  # fmt: skip
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"could not run pip to download {target.describe()}: {exc}") from None
    wheels = sorted(folder.glob("*.whl"))
    if run.returncode != 0 or len(wheels) != 1:
        detail = (run.stderr or run.stdout).strip().splitlines()[-3:]
        raise BuildError(
            f"could not download {target.describe()} from PyPI (pip exit {run.returncode}: "
            f"{' / '.join(detail) or 'no output'}). The first build needs PyPI; later builds reuse the "
            f"cache {cache_root}. Offline, copy a filled cache there or pass --wheel-cache DIR."
        )
    return wheels[0]


def fetch_wheels(cache_root: Path, *, offline: bool = False) -> list[Path]:
    """Every third-party wheel the extension carries (one file may serve several targets)."""
    unique: dict[str, Path] = {}
    for target in wheel_targets():
        path = fetch_wheel(target, cache_root, offline=offline)
        unique.setdefault(path.name, path)
    return [unique[name] for name in sorted(unique)]


# --- the seethrough_core wheel ----------------------------------------------------------------


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def _zip_write(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def core_package_files() -> list[tuple[str, bytes]]:
    """(path inside the wheel, contents) of every file of the seethrough_core package."""
    root = Path(seethrough_core.__file__).resolve().parent
    files = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and "__pycache__" not in relative.parts and path.suffix != ".pyc":
            files.append((f"seethrough_core/{relative.as_posix()}", path.read_bytes()))
    return files


def build_core_wheel(dest_dir: Path) -> Path:
    """A pure-Python wheel of seethrough_core with no declared dependencies (Blender brings numpy;
    pyzmq and msgpack travel as their own wheels)."""
    name = f"seethrough_core-{__version__}-py3-none-any.whl"
    dist_info = f"seethrough_core-{__version__}.dist-info"
    metadata = (
        "Metadata-Version: 2.1\n"
        "Name: seethrough-core\n"
        f"Version: {__version__}\n"
        "Summary: SeeThrough Studio core: layout schema, OSCR profile, masks, protocol and client\n"
        "License: GPL-3.0-or-later\n"
        "Requires-Python: >=3.11\n"
    ).encode()
    wheel = (
        "Wheel-Version: 1.0\n"
        f"Generator: seethrough build-addon {__version__}\n"
        "Root-Is-Purelib: true\n"
        "Tag: py3-none-any\n"
    ).encode()
    entries = [*core_package_files(), (f"{dist_info}/METADATA", metadata), (f"{dist_info}/WHEEL", wheel)]
    record_lines = [f"{path},{_record_hash(data)},{len(data)}" for path, data in entries]
    record_lines.append(f"{dist_info}/RECORD,,")
    entries.append((f"{dist_info}/RECORD", ("\n".join(record_lines) + "\n").encode()))

    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / name
    with zipfile.ZipFile(path, "w") as archive:
        for entry_name, data in entries:
            _zip_write(archive, entry_name, data)
    return path


# --- the extension zip ------------------------------------------------------------------------


def manifest_text(template: str, version: str, wheel_names: list[str]) -> str:
    """The repository manifest with the build's version and its wheels list."""
    text, count = re.subn(r'(?m)^version\s*=\s*".*"$', f'version = "{version}"', template, count=1)
    if count != 1:
        raise BuildError(f"{MANIFEST_NAME} has no top-level version line")
    wheels = "wheels = [\n" + "".join(f'  "./wheels/{name}",\n' for name in wheel_names) + "]\n\n"
    # Top-level keys must come before the first [table] in TOML.
    table = re.search(r"(?m)^\[", text)
    text = text[: table.start()] + wheels + text[table.start() :] if table else text + "\n" + wheels
    data = tomllib.loads(text)  # never ship a manifest Blender cannot read
    if data.get("id") != EXTENSION_ID or data.get("wheels") != [f"./wheels/{n}" for n in wheel_names]:
        raise BuildError(f"the generated {MANIFEST_NAME} does not read back as written")
    return text


def addon_files() -> list[tuple[str, Path]]:
    """(path inside the zip, source) of the add-on's own files, size templates included."""
    files = []
    for path in sorted(ADDON_DIR.rglob("*")):
        relative = path.relative_to(ADDON_DIR)
        if (
            not path.is_file()
            or path.name == MANIFEST_NAME
            or _EXCLUDED_PARTS.intersection(relative.parts)
            or path.suffix == ".pyc"
        ):
            continue
        files.append((relative.as_posix(), path))
    files.append(("assets/size_templates.json", TEMPLATE_PATHS[1]))  # the repository's one copy
    return files


def build_addon(out_dir: Path, cache_root: Path | None = None, *, offline: bool = False) -> BuildResult:
    """Write `out_dir/seethrough-<version>.zip`, an installable Blender extension."""
    cache_root = cache_root or default_cache_dir()
    if not TEMPLATE_PATHS[1].is_file():
        raise BuildError(f"missing {TEMPLATE_PATHS[1]}: the size templates ship with the add-on")
    third_party = fetch_wheels(cache_root, offline=offline)
    out_dir.mkdir(parents=True, exist_ok=True)
    core = build_core_wheel(out_dir / ".core-wheel")
    wheels = [*third_party, core]
    names = [w.name for w in wheels]
    template = (ADDON_DIR / MANIFEST_NAME).read_text(encoding="utf-8")
    manifest = manifest_text(template, __version__, names)

    zip_path = out_dir / f"{EXTENSION_ID}-{__version__}.zip"
    partial = zip_path.with_name(f".{zip_path.name}.partial")
    with zipfile.ZipFile(partial, "w") as archive:
        _zip_write(archive, MANIFEST_NAME, manifest.encode())
        for name, source in addon_files():
            _zip_write(archive, name, source.read_bytes())
        for wheel in wheels:  # byte for byte as PyPI (or this build) made them
            _zip_write(archive, f"wheels/{wheel.name}", wheel.read_bytes())
    os.replace(partial, zip_path)
    core.unlink()
    core.parent.rmdir()
    return BuildResult(zip_path, tuple(names), core.name)


def add_build_addon_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="dist", help="output folder (default: dist)")
    parser.add_argument(
        "--wheel-cache",
        metavar="DIR",
        help="where downloaded PyPI wheels are kept and reused "
        "(default: $SEETHROUGH_WHEEL_CACHE or ~/.cache/seethrough/wheels)",
    )
    parser.add_argument("--offline", action="store_true", help="never download: use only cached wheels")


def run_build_addon(args: argparse.Namespace) -> int:
    cache = Path(args.wheel_cache) if args.wheel_cache else default_cache_dir()
    print(f"Building the SeeThrough extension {__version__} (wheel cache: {cache}) ...", flush=True)
    try:
        result = build_addon(Path(args.out), cache, offline=args.offline)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name in result.wheels:
        print(f"  wheels/{name}")
    size_mb = result.zip_path.stat().st_size / 1e6
    print(f"Wrote {result.zip_path} ({size_mb:.1f} MB). Install it in Blender 4.5+: Edit > Preferences > "
          "Get Extensions > (menu) Install from Disk.")  # fmt: skip
    return 0
