"""The time a long run has left, as the batch's progress line and Generate Frames say it."""

from __future__ import annotations

import pytest

from seethrough_core.time_left import clock, time_left


def test_no_pace_before_the_first_part_is_done():
    assert time_left(12.0, 0, 10) is None


def test_the_parts_left_at_the_pace_of_those_done():
    assert time_left(30.0, 3, 10) == pytest.approx(70.0)
    assert time_left(30.0, 10, 10) == 0.0
    assert time_left(30.0, 12, 10) == 0.0  # more done than planned (a copy counted twice) is not negative


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0, "0:00"), (59.9, "0:59"), (65, "1:05"), (3599, "59:59"), (3723, "1:02:03")]
)
def test_clock(seconds, shown):
    assert clock(seconds) == shown
