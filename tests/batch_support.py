"""The order of a batch's work, seen from inside: which bases were generated and which frames finished,
in order, with one base held back until a frame is written (tests/blender/test_upscale_run.py and
test_batch_ray.py: a frame is upscaled while later bases are still generated)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest


@dataclass
class FrameOrder:
    events: list[str] = field(default_factory=list)  # "base SEED" and "STATUS LABEL", in order
    waited: list[bool] = field(default_factory=list)  # whether the held base saw the frame written


def hold_base_until_frame(
    monkeypatch: pytest.MonkeyPatch, runner: type, held_seed: int, frame_label: str
) -> FrameOrder:
    """Patch ``runner`` so the base of ``held_seed`` waits until the frame ``frame_label`` is written: a
    bounded wait on an event, so an order that never writes it first fails the test instead of hanging."""
    order = FrameOrder()
    written = threading.Event()
    generate, finish = runner._generate, runner._finish

    def held_generate(self, client, endpoint, link, chain) -> None:
        if link.task.seed == held_seed:
            order.waited.append(written.wait(timeout=120))
        generate(self, client, endpoint, link, chain)
        order.events.append(f"base {link.task.seed}")

    def noted_finish(self, outcome, note="") -> None:
        finish(self, outcome, note)
        order.events.append(f"{outcome.status} {outcome.label}")
        if outcome.label == frame_label:
            written.set()

    monkeypatch.setattr(runner, "_generate", held_generate)
    monkeypatch.setattr(runner, "_finish", noted_finish)
    return order
