"""benchmarks/gpu_bench.py end to end on the tiny model on the CPU (`--tiny --steps 2`), so it cannot rot
between GPU runs: every variant runs, the JSON merges, the doc's generated section is replaced in place."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the GPU benchmark end to end on the tiny model

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_tiny_run_end_to_end(bench, tmp_path):
    results, doc = tmp_path / "results.json", tmp_path / "performance.md"
    doc.write_text(
        "# Performance\n\nHand-written method.\n\n"
        + bench.BEGIN
        + "\nold table\n"
        + bench.END
        + "\n\nTail.\n"
    )
    argv = ["--tiny", "--steps", "2", "--repeats", "1", "--compile", "off", "--results", str(results)]
    assert bench.main([*argv, "--doc", str(doc)]) == 0

    data = json.loads(results.read_text())
    names = [row["variant"] for row in data["rows"]]
    assert names == ["plain", "exact", "dense", "dense-rebuild", "cached"]
    assert all(row["seconds"][0] > 0 and row["steps"] == 2 and row["size"] == 256 for row in data["rows"])
    assert {item["variant"] for item in data["attention"]} == set(names)  # the attention op alone, too
    (fidelity,) = data["fidelity"]
    assert len(fidelity["step_rel_l2"]) == 2 and fidelity["step_rel_l2"][0] == 0.0  # step 1 fills the cache
    if not any(row["memory"] == "24gb" for row in data["rows"]):  # without the nf4 extra: said, not hidden
        assert any("24gb" in note and "seethrough[nf4]" in note for note in data["notes"])

    text = doc.read_text()
    assert text.startswith("# Performance\n\nHand-written method.") and text.rstrip().endswith("Tail.")
    assert text.count(bench.BEGIN) == 1 and "old table" not in text
    assert "| tiny, random weights | 256 | 2 | full | no | dense-rebuild |" in text
    assert "exact / plain (≤ 1.3)" in text and "Cached condition stream vs exact" in text
    assert "Attention op alone" in text

    # a second, partial run merges into the same file: rows are replaced, not duplicated
    assert (
        bench.main(
            [*argv, "--variants", "plain", "exact", "--memory", "full", "--no-fidelity", "--doc", str(doc)]
        )
        == 0
    )
    assert len(json.loads(results.read_text())["rows"]) == 5
    assert doc.read_text().count(bench.BEGIN) == 1


def test_the_speed_suite_runs_its_rows_and_reports_the_steps_computed(bench, tmp_path):
    results, doc = tmp_path / "results.json", tmp_path / "performance.md"
    argv = [
        "--tiny",
        "--steps",
        "3",
        "--repeats",
        "1",
        "--suite",
        "speed",
        "--compile",
        "off",
        "--sizes",
        "256",
    ]
    argv += ["--no-attention", "--no-fidelity", "--results", str(results), "--doc", str(doc)]
    assert bench.main(argv) == 0

    data = json.loads(results.read_text())
    rows = {row["variant"]: row for row in data["rows"] if row["memory"] == "full"}
    assert list(rows) == ["plain", "exact", "exact sc0.05", "exact sc0.1", "exact sc0.2", "draft"]
    assert rows["plain"]["steps_computed"] == rows["exact"]["steps_computed"] == 3
    assert all(1 <= row["steps_computed"] <= 3 for row in rows.values())
    assert all(row["memory_cap_gib"] is None for row in rows.values())  # no CUDA: no cap, and a note says so
    quantized = {row["memory"] for row in data["rows"]} - {"full"}
    for part in ("24gb", "16gb"):  # run where the extras are installed, else said, not hidden
        assert part in quantized or any(f"memory '{part}'" in note for note in data["notes"])
    text = doc.read_text()
    assert "steps computed at sc 0.05 / 0.1 / 0.2" in text and "| exact sc0.1 |" in text


def test_without_cuda_the_full_size_run_says_how_to_run_on_the_cpu(bench, capsys, monkeypatch):
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    assert bench.main(["--steps", "2"]) == 2
    assert "--tiny" in capsys.readouterr().out


def test_profiles_are_appended_per_variant(bench, tmp_path):
    profile = tmp_path / "profile.txt"
    argv = ["--tiny", "--steps", "1", "--repeats", "1", "--compile", "off", "--memory", "full"]
    argv += ["--variants", "plain", "exact", "--no-fidelity", "--no-attention", "--profile-steps", "1"]
    argv += ["--profile-out", str(profile), "--results", str(tmp_path / "r.json")]
    assert bench.main([*argv, "--doc", str(tmp_path / "doc.md")]) == 0
    text = profile.read_text()
    assert (
        text.count("## ") == 2 and ": plain, 256 px, 1 steps" in text and ": exact, 256 px, 1 steps" in text
    )
    assert "aten::" in text  # a real operator table


def test_a_warm_start_run_fills_the_warm_times_of_the_cold_rows(bench):
    def row(variant: str, first: float, seconds: float):
        return bench.Row("gpu", "m", 1024, 28, "full", None, True, variant, [seconds], first, 1.0, 2.0)

    results = bench.Results(rows=[row("plain", 100.0, 4.0)])
    results.merge_warm_start(bench.Results(rows=[row("plain", 9.0, 4.1), row("exact", 8.0, 5.0)]))
    plain, exact = results.rows
    assert (plain.first_s, plain.first_warm_s, plain.seconds) == (100.0, 9.0, [4.0])  # timings stay
    assert (exact.first_s, exact.first_warm_s) == (None, 8.0)  # no cold run: said, not invented
    text = bench.render(results)
    assert "| 100.00 / 9.00 |" in text and "| — / 8.00 |" in text
