"""benchmarks/server_bench.py's GPU section, run on a small config on the CPU so it cannot rot unseen."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "server_bench.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("server_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_gpu_section_code_runs_on_a_small_config():
    bench = load_bench()
    small = dict(
        bench.FLUX_DEV_TRANSFORMER,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=(4, 6, 6),
    )
    rows = bench.measure_gpu(side=256, steps=2, config=small, device="cpu", dtype="float32")
    assert [name for name, _, _ in rows] == ["plain FLUX.1-dev", "SeeThrough conditioned"]
    assert all(per_step > 0 and math.isnan(peak) for _, per_step, peak in rows)
