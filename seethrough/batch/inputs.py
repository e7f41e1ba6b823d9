"""Command-line inputs of `seethrough batch`: files, folders and globs; frames; seeds; cameras."""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path

from seethrough_core.limits import MAX_SEED
from seethrough_core.vocabulary import DEFAULT_SEED

LAYOUT_SUFFIXES = (".blend", ".json")  # what a folder is searched for
RESULT_SUFFIXES = (".png",)  # a result picture named directly or by a glob: the layout in its record


class InputError(ValueError):
    """A command-line value that cannot be used; the message says which and why."""


def check_output_folder(out_dir: Path) -> None:
    """Create the output folder and prove it takes a file, so an unwritable one fails before any work."""
    probe = out_dir / f".seethrough-write-test-{os.getpid()}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise InputError(
            f"cannot write to the output folder {out_dir}: {why}. Choose a folder you can write to "
            "(--out), or free some space on its disk"
        ) from None


def expand_inputs(items: list[str]) -> list[Path]:
    """Layout files named directly, found in folders (recursively) or matched by globs, in order."""
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            matches = sorted(
                p for p in path.rglob("*") if p.suffix.lower() in LAYOUT_SUFFIXES and p.is_file()
            )
            # Our own outputs (sidecars, layout.json of rendered conditions) are not inputs.
            matches = [p for p in matches if not _is_output(p)]
        elif any(ch in item for ch in "*?["):
            matches = sorted(
                Path(p)
                for p in glob.glob(item, recursive=True)
                if Path(p).is_file() and Path(p).suffix.lower() in LAYOUT_SUFFIXES + RESULT_SUFFIXES
            )
        elif path.is_file():
            matches = [path]
        else:
            raise InputError(f"input not found: {item}")
        if not matches:
            raise InputError(f"no .blend or .json layouts in {item}")
        if path.is_file() and path.suffix.lower() not in LAYOUT_SUFFIXES + RESULT_SUFFIXES:
            raise InputError(f"{item} is not a .blend, a layout .json or a result .png")
        found.extend(matches)
    unique: list[Path] = []
    for path in found:
        if path.resolve() not in {p.resolve() for p in unique}:
            unique.append(path)
    return unique


def stills(inputs: list[Path]) -> list[Path]:
    """The inputs with one frame only (layout files and results): --frames does not apply to them."""
    return [p for p in inputs if p.suffix.lower() != ".blend"]


def _is_output(path: Path) -> bool:
    return path.name == "layout.json" or path.name.endswith(".blend1") or path.parent.name == "conditions"


_FRAME_PART = re.compile(r"^(-?\d+)(?:-(-?\d+))?$")


def parse_frames(text: str | None) -> list[int] | None:
    """'1-24', '1,5,9' or '1-10,20' -> frame numbers; None keeps each file's current frame."""
    if text is None:
        return None
    frames: list[int] = []
    for part in text.split(","):
        match = _FRAME_PART.match(part.strip())
        if not match:
            raise InputError(f"--frames: {part!r} is not a frame number or a range like 1-24")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            raise InputError(f"--frames: range {part.strip()} runs backwards")
        if hi - lo > 100_000:
            raise InputError(f"--frames: range {part.strip()} has more than 100000 frames")
        frames.extend(range(lo, hi + 1))
    return list(dict.fromkeys(frames))


def parse_seeds(seeds: str | None, num_seeds: int | None, default: int = DEFAULT_SEED) -> list[int]:
    """--seeds 1,2,3 or --num-seeds N (seeds default, default+1, ...)."""
    if seeds is not None and num_seeds is not None:
        raise InputError("give --seeds or --num-seeds, not both")
    if num_seeds is not None:
        if not 1 <= num_seeds <= 10_000:
            raise InputError("--num-seeds must be in 1..10000")
        return [default + i for i in range(num_seeds)]
    if seeds is None:
        return [default]
    try:
        values = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"--seeds: {seeds!r} is not a comma-separated list of integers") from None
    if not values or any(not 0 <= v <= MAX_SEED for v in values):
        raise InputError(f"--seeds: give integers in 0..{MAX_SEED}")
    return list(dict.fromkeys(values))


@dataclass(frozen=True)
class CameraChoice:
    """--cameras active | all | NAME,NAME"""

    mode: str  # "active", "all" or "names"
    names: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> CameraChoice:
        if text in ("active", "all"):
            return cls(text)
        names = tuple(n.strip() for n in text.split(",") if n.strip())
        if not names:
            raise InputError("--cameras: give active, all, or camera names separated by commas")
        return cls("names", names)
