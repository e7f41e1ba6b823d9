"""`seethrough batch --shard K/N`: disjoint, deterministic parts of the plan; chains never split."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from process_support import run_command

from seethrough.batch.inputs import InputError
from seethrough.batch.plan import Shot
from seethrough.batch.shards import Shard
from seethrough.cli import main
from seethrough_core.layout import Layout

SEEDS = (1, 2, 3)


def plan(layout_dict) -> dict[Path, list[Shot]]:
    """3 inputs: two with 2 cameras x 4 frames, one a still (a layout file's one shot)."""
    layout = Layout.from_dict(layout_dict)
    shots: dict[Path, list[Shot]] = {}
    for name in ("a", "b"):
        path = Path(f"{name}.blend")
        shots[path] = [Shot(path, name, camera, frame, layout) for frame in (1, 2, 3, 4) for camera in "XY"]
    shots[Path("c.json")] = [Shot(Path("c.json"), "c", "Camera", 1, layout)]
    return shots


def tasks(shots_by_input: dict[Path, list[Shot]]) -> list[tuple[str, str, int, int]]:
    """Every image of a plan: input x camera x frame x seed."""
    return [
        (shot.output_name, shot.camera, shot.frame, seed)
        for shots in shots_by_input.values()
        for shot in shots
        for seed in SEEDS
    ]


@pytest.mark.parametrize("consistent", [False, True])
@pytest.mark.parametrize("count", [1, 3, 4, 20])
def test_shards_together_are_the_plan_disjoint_and_chains_stay_whole(layout_dict, consistent, count):
    full = plan(layout_dict)
    parts = [Shard(k, count).select(full, consistent) for k in range(1, count + 1)]
    everything = [task for part in parts for task in tasks(part)]
    assert sorted(everything) == sorted(tasks(full))  # each image exactly once
    assert len(set(everything)) == len(everything)
    # The same command line gives the same shard, and every input keeps its place in the plan.
    assert parts == [Shard(k, count).select(plan(layout_dict), consistent) for k in range(1, count + 1)]
    assert all(list(part) == list(full) for part in parts)
    for part in parts:
        for path, shots in part.items():  # plan order within each shard
            assert shots == [shot for shot in full[path] if shot in shots]
    if consistent:  # a camera's frames (a chain, for every seed) all in one shard
        owners: dict[tuple[str, str], set[int]] = {}
        for number, part in enumerate(parts):
            for shots in part.values():
                for shot in shots:
                    owners.setdefault((shot.output_name, shot.camera), set()).add(number)
        assert len(owners) == 5 and all(len(found) == 1 for found in owners.values())
    else:  # the seeds of one shot share its render: one shard each
        sizes = sorted(sum(len(shots) for shots in part.values()) for part in parts)
        assert sizes[-1] - sizes[0] <= 1  # dealt out evenly


@pytest.mark.parametrize(
    ("text", "message"),
    [("4/3", "K must be in 1..3"), ("0/3", "K must be in 1..3"), ("2/0", "N must be in"), ("x", "not K/N")],
)
def test_a_bad_shard_is_refused(text, message):
    with pytest.raises(InputError, match=message):
        Shard.parse(text)


@pytest.mark.parametrize("text", ["4/3", "0/3"])
def test_the_command_refuses_a_bad_shard_before_any_work(tmp_path, capsys, layout_dict, text):
    Layout.from_dict(layout_dict).save(tmp_path / "shot.json")
    code = main(["batch", str(tmp_path / "shot.json"), "--out", str(tmp_path / "out"), "--shard", text])
    assert code == 2
    assert f"--shard {text}: K must be in 1..3" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # three batch processes, one of them with a tiny server and a Blender render
def test_a_shard_or_a_rerun_with_nothing_to_make_starts_no_server(tmp_path, layout_dict):
    """A layout file is one shot: shard 1/2 holds it, 2/2 nothing; after 1/2 the whole plan is complete."""
    Layout.from_dict(layout_dict).save(tmp_path / "shot.json")
    out = tmp_path / "out"
    server_log = out / "logs" / "tiny_server.log"  # written by an embedded server as soon as it starts

    def batch(*extra: str):
        command = [
            sys.executable, "-m", "seethrough", "batch", str(tmp_path / "shot.json"), "--out", str(out),
            "--tiny", "--steps", "2", "--seeds", "1,2", *extra,
        ]  # fmt: skip
        return run_command(command, timeout=300)

    empty = batch("--shard", "2/2")
    assert empty.returncode == 0, empty.stderr[-3000:]
    assert "shard 2/2: nothing to make (no image of the plan falls to this shard); no server started" in (
        empty.stderr
    )
    assert "Starting an embedded server" not in empty.stderr and not server_log.exists()
    assert re.search(r"^total +0 +0 +0 ", empty.stdout, re.MULTILINE)  # the usual summary, of nothing

    made = batch("--shard", "1/2")
    assert made.returncode == 0, made.stderr[-3000:]
    assert server_log.is_file() and made.stderr.count("] done ") == 2
    server_log.unlink()

    last = batch()  # the farm's last task: every image complete, it writes the contact sheet
    assert last.returncode == 0, last.stderr[-3000:]
    assert "nothing to make (all 2 image(s) already complete); no server started" in last.stderr
    assert last.stderr.count("(already complete)") == 2
    assert "Starting an embedded server" not in last.stderr and not server_log.exists()
    assert (out / "shot" / "contact_sheet.png").is_file()
