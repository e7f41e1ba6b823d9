"""How long a run of many parts has left, at the pace so far: the batch's progress line and the add-on's
Generate Frames say it the same way."""

from __future__ import annotations


def time_left(elapsed_s: float, done: int, total: int) -> float | None:
    """Seconds left for ``total - done`` more parts at the pace of the ``done`` ones; None before the
    first is done (no pace yet)."""
    if done <= 0:
        return None
    return elapsed_s / done * max(total - done, 0)


def clock(seconds: float) -> str:
    """A duration as a clock reads it: 4:05, or 1:02:03 from an hour on."""
    whole = max(int(seconds), 0)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
