"""benchmarks/server_bench.py against a real tiny server process, small, so it cannot rot unseen."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts a server process

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "server_bench.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("server_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_bridge_overhead_is_measured_against_a_tiny_server_process(capsys):
    bench = load_bench()
    samples = bench.measure_bridge([256], repeats=1, steps=1)
    (sample,) = samples[256]
    assert sample.round_trip_s > sample.model_s > 0 and sample.before_model_s >= 0
    bench.print_bridge(samples, 1)
    assert "256" in capsys.readouterr().out
