"""Runs a batch: renders on the main thread while one worker thread per server generates.

Blender (bpy) is used only on the main thread: it reads every input, then renders each shot's OSCR
image and masks and puts the shot's tasks on a short queue. Each server has a worker thread with
its own client, taking tasks as soon as its server is free, so the GPUs never wait on Blender and
Blender renders the next shot while they generate. Finished images and sidecars are written
atomically, sidecar last: a rerun skips what is complete, and an interrupted run leaves no
half-written file. With `consistent`, the frames of one camera and seed go to one worker as a chain,
each an edit of the frame before it (consistent.py).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from blender_addon.render import render_layout
from seethrough_core.client import Job, JobCancelledError, SeeThroughClient, ServerUnavailableError
from seethrough_core.endpoint import parse_endpoint
from seethrough_core.errors import SeeThroughError
from seethrough_core.generate_and_save import Destination, generate_and_save, save_image
from seethrough_core.keys import ClientKeys
from seethrough_core.limits import DEFAULT_EDIT_MARGIN_PX, DEFAULT_GUIDANCE, DEFAULT_STEPS
from seethrough_core.protocol import GenerateRequest

from .consistent import Chain, Condition, Link, chains_of, copied_record, plan_frame
from .inputs import CameraChoice
from .plan import Shot, Task, output_names
from .progress import BatchProgress
from .shards import Shard
from .shots import read_shots


@dataclass
class BatchOptions:
    out_dir: Path
    servers: list[str]
    seeds: list[int]
    cameras: CameraChoice = field(default_factory=lambda: CameraChoice("active"))
    frames: list[int] | None = None
    engine: str = "cycles"
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    overwrite: bool = False
    timeout_s: float = 30.0
    keys: ClientKeys | None = None  # CURVE keys for servers started with --server-key
    consistent: bool = False  # each frame an edit of the frame before it (consistent.py)
    margin_px: int = DEFAULT_EDIT_MARGIN_PX  # with consistent: how far the region grows around changes
    shard: Shard | None = None  # --shard K/N: only this part of the plan (shards.py)


@dataclass
class Outcome:
    input_path: Path
    label: str
    status: str  # "done", "skipped" or "failed"
    reason: str = ""
    server: str = ""
    image_path: Path | None = None
    generate_s: float = 0.0


@dataclass
class BatchSummary:
    outcomes: list[Outcome]
    wall_s: float
    render_s: float  # main thread, rendering OSCR images and masks
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def generate_s(self) -> float:
        return sum(o.generate_s for o in self.outcomes)

    @property
    def ok(self) -> bool:
        return not self.interrupted and self.count("failed") == 0


_STOP = object()  # queue sentinel: no more tasks


class BatchRunner:
    def __init__(self, options: BatchOptions, stream: TextIO | None = None) -> None:
        if not options.servers:
            raise ValueError("a batch needs at least one server endpoint")
        for server in options.servers:
            self._check_worker(server)  # a bad address must fail here, not kill a worker thread
        self.options = options
        self.stream = stream
        self._tasks: queue.Queue = queue.Queue(maxsize=len(options.servers))
        self._outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._alive_servers = len(options.servers)
        self._progress: BatchProgress | None = None

    # --- what a subclass replaces: where jobs go and where shots render (ray_runner.py) ---------

    def _check_worker(self, server: str) -> None:
        parse_endpoint(server)

    def _client(self, endpoint: str) -> SeeThroughClient:
        return SeeThroughClient(endpoint, self.options.timeout_s, keys=self.options.keys)

    def _render_condition(self, shot: Shot) -> Condition:
        """The shot's OSCR image and token grids, its condition folder written; raises if it fails."""
        rendered = render_layout(
            shot.layout, shot.condition_dir(self.options.out_dir), engine=self.options.engine, quiet=True
        )
        return rendered.oscr_path.read_bytes(), rendered.masks.token_grids()

    # --- main thread --------------------------------------------------------------------------

    def run(self, inputs: list[Path]) -> BatchSummary:
        start = time.perf_counter()
        shots_by_input = self._read_inputs(inputs)
        all_tasks = [
            Task.of(shot, seed, self.options.out_dir)
            for shots in shots_by_input.values()
            for shot in shots
            for seed in self.options.seeds
        ]
        self._progress = BatchProgress(len(all_tasks) + len(self._outcomes), self.stream)
        for outcome in list(self._outcomes):  # inputs that could not be read
            self._progress.advance(f"FAILED {outcome.label}: {outcome.reason}")

        workers = [
            threading.Thread(target=self._worker, args=(endpoint,), name=f"batch {endpoint}", daemon=True)
            for endpoint in self.options.servers
        ]
        for worker in workers:
            worker.start()
        render_s = 0.0
        interrupted = False
        try:
            for shots in shots_by_input.values():
                if self.options.consistent:
                    for chain in chains_of(shots):
                        render_s += self._produce_chain(chain)
                else:
                    for shot in shots:
                        render_s += self._produce(shot)
        except KeyboardInterrupt:
            interrupted = True
            self._stop.set()
        finally:
            for _ in workers:
                self._put(_STOP)
            try:
                for worker in workers:
                    while worker.is_alive():
                        worker.join(timeout=0.2)
            except KeyboardInterrupt:
                interrupted = True
                self._stop.set()  # a second Ctrl-C: cancel running jobs, then stop
                for worker in workers:
                    worker.join(timeout=self.options.timeout_s)
            self._progress.close()
        return BatchSummary(self._outcomes, time.perf_counter() - start, render_s, interrupted)

    def _read_inputs(self, inputs: list[Path]) -> dict[Path, list[Shot]]:
        names = output_names(inputs)
        shots: dict[Path, list[Shot]] = {}
        for path in inputs:
            try:
                shots[path] = read_shots(path, names[path], self.options.cameras, self.options.frames)
            except SeeThroughError as exc:
                self._outcomes.append(Outcome(path, str(path), "failed", str(exc)))
            except Exception as exc:  # whatever a damaged file makes Blender raise: skip this input only
                self._outcomes.append(
                    Outcome(path, str(path), "failed", f"cannot read it: {type(exc).__name__}: {exc}")
                )
        if self.options.shard is not None:
            shots = self.options.shard.select(shots, self.options.consistent)
        return shots

    def _produce(self, shot: Shot) -> float:
        """Render a shot's condition if any of its images is missing, then queue those tasks."""
        pending = self._pending(shot)
        elapsed, condition = self._render(shot, pending)
        if condition is not None:
            for task in pending:
                if not self._put(Chain([Link(task, condition)])):
                    break
        return elapsed

    def _produce_chain(self, shots: list[Shot]) -> float:
        """Render every frame of one camera, then queue one chain per seed, in frame order."""
        elapsed = 0.0
        chains: dict[int, list[Link]] = {seed: [] for seed in self.options.seeds}
        previous: dict[int, Task] = {}
        for shot in shots:
            pending = self._pending(shot)
            seconds, condition = self._render(shot, pending)
            elapsed += seconds
            for task in pending if condition is not None else []:
                chains[task.seed].append(Link(task, condition, previous.get(task.seed)))
            for seed in self.options.seeds:
                previous[seed] = Task.of(shot, seed, self.options.out_dir)
        for links in chains.values():
            if links and not self._put(Chain(links)):
                break
        return elapsed

    def _pending(self, shot: Shot) -> list[Task]:
        """The shot's tasks still to do; the complete ones are reported as skipped."""
        pending = []
        for task in (Task.of(shot, seed, self.options.out_dir) for seed in self.options.seeds):
            if task.is_complete() and not self.options.overwrite:
                self._finish(Outcome(shot.input_path, task.label, "skipped", image_path=task.image_path))
            else:
                pending.append(task)
        return pending

    def _render(self, shot: Shot, pending: list[Task]) -> tuple[float, Condition | None]:
        """Seconds spent, and the shot's condition (None: nothing to do, or the render failed)."""
        if not pending or self._stop.is_set():
            return 0.0, None
        self._progress.status("blender", f"rendering {shot.output_name}/{shot.camera} frame {shot.frame}")
        start = time.perf_counter()
        try:
            condition = self._render_condition(shot)
        except (SeeThroughError, RuntimeError, ValueError) as exc:
            for task in pending:
                self._finish(Outcome(shot.input_path, task.label, "failed", f"rendering failed: {exc}"))
            return time.perf_counter() - start, None
        finally:
            self._progress.status("blender", None)
        return time.perf_counter() - start, condition

    def _put(self, item) -> bool:
        """Queue an item; a task is dropped once the batch is stopping, so Ctrl-C never hangs here.

        The workers always drain the queue (they skip tasks while stopping), so the end-of-work
        sentinels always get in.
        """
        while True:
            try:
                self._tasks.put(item, timeout=0.2)
                return True
            except queue.Full:
                if self._stop.is_set() and item is not _STOP:
                    return False

    # --- worker threads -----------------------------------------------------------------------

    def _worker(self, endpoint: str) -> None:
        client = self._client(endpoint)
        reachable = True
        try:
            while True:
                chain = self._tasks.get()
                if chain is _STOP:
                    return
                for link in chain.links:
                    task = link.task
                    if task.image_path in chain.done:
                        continue  # finished before this chain came back from a lost server
                    if self._stop.is_set():
                        break  # interrupted: leave the rest for the next run
                    if not reachable:
                        reason = f"no server reachable (last tried {endpoint})"
                        self._finish(Outcome(task.shot.input_path, task.label, "failed", reason, endpoint))
                        continue
                    try:
                        self._generate(client, endpoint, link)
                    except ServerUnavailableError as exc:
                        with self._lock:
                            self._alive_servers -= 1
                            others = self._alive_servers > 0
                        if others:
                            # Another server can still do it; this one leaves the pool.
                            self._tasks.put(chain)
                            self._progress.note(
                                f"server {endpoint} is unreachable; its jobs go to the others: {exc}"
                            )
                            return
                        reachable = False
                        self._finish(Outcome(task.shot.input_path, task.label, "failed", str(exc), endpoint))
                    except SeeThroughError as exc:
                        self._finish(Outcome(task.shot.input_path, task.label, "failed", str(exc), endpoint))
                    except Exception as exc:  # a bug must fail one task, not hang the whole batch
                        reason = f"unexpected {type(exc).__name__}: {exc}"
                        self._finish(Outcome(task.shot.input_path, task.label, "failed", reason, endpoint))
                    chain.done.add(task.image_path)
        finally:
            self._progress.status(endpoint, None)
            client.close()

    def _generate(self, client: SeeThroughClient, endpoint: str, link: Link) -> None:
        task = link.task
        oscr_png, token_grids = link.condition
        layout = task.shot.layout
        plan = plan_frame(link.previous, layout, self.options.margin_px) if link.previous else None
        source = {
            "input": str(task.shot.input_path),
            "camera": task.shot.camera,
            "frame": task.shot.frame,
            "server": endpoint,
        }
        if plan is not None and plan.copy_of is not None:
            record = copied_record(plan.copy_of, layout, source, plan.parent)
            save_image(plan.copy_of.image, record, Destination(task.image_path, source, sidecar=True))
            self._finish(Outcome(task.shot.input_path, task.label, "done", server=endpoint,
                                 image_path=task.image_path), f" ({plan.note})")  # fmt: skip
            return
        request = GenerateRequest.for_layout(
            layout,
            oscr_png,
            token_grids,
            seed=task.seed,
            steps=self.options.steps,
            guidance=self.options.guidance,
            metadata={
                "input": str(task.shot.input_path),
                "camera": task.shot.camera,
                "frame": task.shot.frame,
            },
            edit=plan.edit if plan is not None else None,
        )
        start = time.perf_counter()
        jobs: list[Job] = []

        def on_progress(progress) -> None:
            if self._stop.is_set():
                jobs[0].cancel()
            self._progress.status(endpoint, f"{task.label} step {progress.step}/{progress.total}")

        # the sidecar is written last: a task is complete once it exists (Task.is_complete)
        destination = Destination(
            task.image_path,
            source,
            sidecar=True,
            parent=plan.parent if plan is not None else None,
            region=plan.region if plan is not None else None,
        )
        saved = generate_and_save(
            client, request, layout, destination, on_accepted=jobs.append, on_progress=on_progress
        )
        if saved is None:
            raise JobCancelledError(f"{task.label} was cancelled")
        elapsed = time.perf_counter() - start
        note = " (noise: tiny random model)" if saved.result is not None and saved.result.is_noise else ""
        if plan is not None:
            note += f" ({plan.note})"
        self._finish(
            Outcome(
                task.shot.input_path,
                task.label,
                "done",
                server=endpoint,
                image_path=task.image_path,
                generate_s=elapsed,
            ),
            note,
        )

    def _finish(self, outcome: Outcome, note: str = "") -> None:
        with self._lock:
            self._outcomes.append(outcome)
        if outcome.status == "done":
            text = f"done    {outcome.label} on {outcome.server} in {outcome.generate_s:.1f} s{note}"
        elif outcome.status == "skipped":
            text = f"skipped {outcome.label} (already complete)"
        else:
            text = f"FAILED  {outcome.label}: {outcome.reason}"
        self._progress.advance(text)
