"""What the benchmarks that compare two ways of the same work on one tiny local server share: the
--repeat / --split-cores / --json arguments, the runs in alternating order, the server on a core of its
own, and the figures kept per configuration in a JSON file."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from seethrough_core.server_process import ServerProcess


def add_arguments(parser: argparse.ArgumentParser, split_cores_help: str) -> None:
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--split-cores", action="store_true", help=split_cores_help)
    parser.add_argument("--json", type=Path, help="add the figures to this file")


def alternating(ways: tuple[str, str], repeat: int, run: Callable[[str, int], dict]) -> dict[str, list[dict]]:
    """Each way ``repeat`` times, the order alternating; ``run(way, repeat_index)`` returns its figures."""
    runs: dict[str, list[dict]] = {way: [] for way in ways}
    for index in range(repeat):
        for way in ways if index % 2 == 0 else tuple(reversed(ways)):
            runs[way].append(run(way, index))
            print(f"{way}: {runs[way][-1]}", flush=True)
    return runs


@contextmanager
def tiny_server(folder: Path, split_cores: bool) -> Iterator[ServerProcess]:
    """The tiny server; with ``split_cores`` on CPU 1 with one thread, this process then on CPU 0 (a
    stand-in for a server on its own GPU: the two no longer compete for the cores)."""
    server = ServerProcess.tiny(folder / "server.log")
    if split_cores:  # the server inherits CPU 1 and one thread
        os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        os.sched_setaffinity(0, {1})
    with server:
        if split_cores:
            os.sched_setaffinity(0, {0})
        yield server


def both_ways_on_one_server(
    ways: tuple[str, str], args: argparse.Namespace, run: Callable[[str, str, Path], dict]
) -> dict[str, list[dict]]:
    """Each way --repeat times (alternating) against one tiny server (--split-cores), each run writing
    into a folder of its own, so no render is reused across runs: ``run(way, endpoint, folder)``."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with tiny_server(folder, args.split_cores) as server:
            return alternating(
                ways, args.repeat, lambda way, repeat: run(way, server.endpoint, folder / f"{way}-{repeat}")
            )


def print_table(title: str, ways: tuple[str, str], runs: dict[str, list[dict]], rows: dict[str, str]) -> None:
    """A Markdown table: each figure (``rows``: key -> label) both ways, means of the runs, and the first
    way's over the second's."""

    def mean(way: str, key: str) -> float:
        return sum(run[key] for run in runs[way]) / len(runs[way])

    print(f"| {title} | {ways[0]} | {ways[1]} | x |")
    print("|---|---|---|---|")
    for key, label in rows.items():
        first, second = mean(ways[0], key), mean(ways[1], key)
        print(f"| {label} | {first:.1f} | {second:.1f} | {first / second:.2f} |")


def save_runs(path: Path, config: str, runs: dict[str, list[dict]], repeat: int) -> None:
    """One entry per configuration: runs of other configurations stay in the file."""
    kept = json.loads(path.read_text()) if path.is_file() else {}
    kept[config] = {"cores": os.cpu_count(), "repeat": repeat, "runs": runs}
    path.write_text(json.dumps(kept, indent=1))
