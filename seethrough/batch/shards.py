"""`seethrough batch --shard K/N`: the K-th of N disjoint, deterministic parts of a batch's plan.

A farm manager (Flamenco, Deadline, OpenCue) runs the same command line N times, once per shard.
The plan is cut into units that are never split: one shot (a camera at a frame, with all its seeds,
so its OSCR render happens once) or, with --consistent, one camera of one input over all its frames
(a chain edits each frame from the one before it, so the whole chain must run in one task). Units are
dealt out in the plan's order, unit i to shard i mod N: the same inputs and options always give the
same shards, and every shard gets an even share.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .consistent import chains_of
from .inputs import InputError
from .plan import Shot

MAX_SHARDS = 100_000
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = _SHARD.match(text)
        if not match:
            raise InputError(f"--shard: {text!r} is not K/N, e.g. 2/8 for the second of eight parts")
        index, count = int(match.group(1)), int(match.group(2))
        if not 1 <= count <= MAX_SHARDS:
            raise InputError(f"--shard {text}: N must be in 1..{MAX_SHARDS}")
        if not 1 <= index <= count:
            raise InputError(f"--shard {text}: K must be in 1..{count} (shards are numbered from 1)")
        return cls(index, count)

    def select(self, shots_by_input: dict[Path, list[Shot]], consistent: bool) -> dict[Path, list[Shot]]:
        """This shard's shots of each input (every input stays, possibly with no shots), in plan order."""
        chosen: dict[Path, list[Shot]] = {path: [] for path in shots_by_input}
        for number, (path, unit) in enumerate(plan_units(shots_by_input, consistent)):
            if number % self.count == self.index - 1:
                chosen[path].extend(unit)
        return {path: _in_plan_order(shots, shots_by_input[path]) for path, shots in chosen.items()}

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def plan_units(shots_by_input: dict[Path, list[Shot]], consistent: bool) -> list[tuple[Path, list[Shot]]]:
    """The plan's indivisible units in order: each shot, or with ``consistent`` each camera's chain."""
    units: list[tuple[Path, list[Shot]]] = []
    for path, shots in shots_by_input.items():
        groups = chains_of(shots) if consistent else [[shot] for shot in shots]
        units.extend((path, group) for group in groups)
    return units


def _in_plan_order(chosen: list[Shot], all_shots: list[Shot]) -> list[Shot]:
    keep = {id(shot) for shot in chosen}
    return [shot for shot in all_shots if id(shot) in keep]
