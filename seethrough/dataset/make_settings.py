"""The settings of `seethrough dataset make`, checked and built from the command line before any work."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

from seethrough_core.dataset_scenes import ASSET_SUFFIXES, SceneSettings
from seethrough_core.errors import SeeThroughError
from seethrough_core.limits import MAX_SIDE, MIN_SIDE, SIDE_MULTIPLE

DEFAULT_SAMPLES = 64  # Cycles samples of the target image
DEFAULT_SEED = 0


class MakeSettingsError(SeeThroughError):
    """A command-line value that cannot work; the message names the option."""


@dataclass(frozen=True)
class MakeSettings:
    asset_paths: list[Path]  # asset files found (folders expanded)
    missing: list[Path]  # given paths that do not exist: named and skipped
    primitives: bool
    out: Path
    scenes: int
    seed: int
    workers: int
    samples: int
    engine: str
    scene: SceneSettings

    def fingerprint(self) -> dict:
        """What decides a dataset's scenes: a rerun into the same folder must match it."""
        return {
            "seed": self.seed,
            "scene": asdict(self.scene),
            "samples": self.samples,
            "engine": self.engine,
        }


def parse_range(text: str, option: str, *, integer: bool = False) -> tuple[float, float]:
    """ "1-4" or "3" -> (low, high)."""
    parts = text.split("-") if text.count("-") == 1 and not text.startswith("-") else [text]
    try:
        values = [int(p) if integer else float(p) for p in parts]
    except ValueError:
        kind = "integers" if integer else "numbers"
        raise MakeSettingsError(f"{option} {text!r}: give LOW-HIGH or one value, {kind}") from None
    low, high = values[0], values[-1]
    if low > high:
        raise MakeSettingsError(f"{option} {text!r}: the low end is above the high end")
    return low, high


def find_asset_files(paths: list[str]) -> tuple[list[Path], list[Path]]:
    """Asset files among ``paths`` (folders searched recursively), sorted; and the paths that do not exist."""
    found, missing = set(), []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.update(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in ASSET_SUFFIXES)
        elif path.is_file():
            found.add(path)
        else:
            missing.append(path)
    return sorted(p.resolve() for p in found), missing


def settings_from_args(args: argparse.Namespace) -> MakeSettings:
    if not args.assets and not args.primitives:
        raise MakeSettingsError("give asset files or folders with --assets, or --primitives")
    asset_paths, missing = find_asset_files(args.assets or [])
    if not asset_paths and not args.primitives:
        given = ", ".join(args.assets)
        raise MakeSettingsError(
            f"no usable asset in {given}: no {'/'.join(ASSET_SUFFIXES)} file there"
            + (f" ({len(missing)} path(s) not found)" if missing else "")
        )
    if args.scenes < 1:
        raise MakeSettingsError(f"--scenes {args.scenes}: make at least one scene")
    if args.workers < 1:
        raise MakeSettingsError(f"--workers {args.workers}: at least one worker")
    if args.samples < 1:
        raise MakeSettingsError(f"--samples {args.samples}: at least one Cycles sample")
    side = args.resolution
    if not MIN_SIDE <= side <= MAX_SIDE or side % SIDE_MULTIPLE:
        raise MakeSettingsError(
            f"--resolution {side}: give a multiple of {SIDE_MULTIPLE} within {MIN_SIDE}..{MAX_SIDE}"
        )
    objects = parse_range(args.objects, "--objects", integer=True)
    try:
        scene = SceneSettings(
            objects=(int(objects[0]), int(objects[1])),
            resolution=side,
            min_visibility=args.min_visibility,
            max_min_visibility=args.max_min_visibility,
            box_size=parse_range(args.box_size, "--box-size"),
            elevation_deg=parse_range(args.elevation, "--elevation"),
            distance_m=parse_range(args.distance, "--distance"),
            lens_mm=parse_range(args.lens, "--lens"),
            scene_prompt=args.scene_prompt,
            max_tries=args.max_tries,
        )
    except ValueError as exc:
        raise MakeSettingsError(str(exc)) from None
    return MakeSettings(
        asset_paths=asset_paths,
        missing=missing,
        primitives=args.primitives,
        out=Path(args.out),
        scenes=args.scenes,
        seed=args.seed,
        workers=args.workers,
        samples=args.samples,
        engine=args.engine,
        scene=scene,
    )
