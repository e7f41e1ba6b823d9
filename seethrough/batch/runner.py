"""Runs a batch: renders on the main thread while one worker thread per server generates.

Blender (bpy) is used only on the main thread: it reads every input, then renders each shot's OSCR
image and masks and puts the shot's tasks on a short queue. Each server has a worker thread with
its own client, taking tasks as soon as its server is free, so the GPUs never wait on Blender and
Blender renders the next shot while they generate. Finished images and sidecars are written
atomically, sidecar last: a rerun skips what is complete, and an interrupted run leaves no
half-written file. With `consistent`, the frames of one camera and seed go to one worker as a chain,
each an edit of the frame before it (consistent.py). Frames at sizes the model does not take are
upscaled from their base picture as soon as it is ready (upscale_stage.py): between shots, the main
thread renders their tile views and queues their tiles beside the bases still to generate.

No planned image is lost (work_pool.py keeps the count): each ends done, skipped or failed with a
reason. A server that stops answering gives its chain back to the pool for the other servers, then
is asked again with back-off for `retry_s` before it gives up; a job that a restarted server no
longer knows is submitted again. When the last server gives up, what is left fails with its name.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

import numpy as np

from blender_addon.render import TileViews, render_or_reuse
from seethrough_core.client import (
    Job,
    JobCancelledError,
    JobLostError,
    SeeThroughClient,
)
from seethrough_core.endpoint import parse_endpoint
from seethrough_core.errors import SeeThroughError
from seethrough_core.frame_reuse import parent_frame_path
from seethrough_core.generate_and_save import Destination, generate_and_save, save_image, sidecar_path_for
from seethrough_core.generation_settings import GenerationSettings
from seethrough_core.in_view import boxes_in_view
from seethrough_core.keys import ClientKeys
from seethrough_core.layout import Layout
from seethrough_core.limits import (
    DEFAULT_BASE_MEGAPIXELS,
    DEFAULT_EDIT_MARGIN_PX,
    DEFAULT_GUIDANCE,
    DEFAULT_REPROJECT_LIMIT,
    DEFAULT_SERVER_RETRY_S,
    DEFAULT_STEPS,
    DEFAULT_UPSCALE_STRENGTH,
)
from seethrough_core.output_size import OutputSize
from seethrough_core.protocol import GenerateRequest
from seethrough_core.record import GenerationRecord, read_png_file_record
from seethrough_core.server_away import Pause, ServerWait, send_until_done, server_went_away
from seethrough_core.upscale_plan import UpscalePlan, base_layout, draft_layout, plan_upscale
from seethrough_core.vocabulary import DEFAULT_CLIENT_TIMEOUT_S, DEFAULT_RENDER_ENGINE

from ..progress import ProgressLine
from .consistent import Chain, Condition, Link, chains_of, copied_record, plan_frame
from .inputs import CameraChoice
from .plan import Shot, Task, output_names
from .shards import Shard
from .shots import read_shots
from .upscale_stage import UpscaleStage
from .work_pool import ReadyBases, WorkPool


class _ServerDownError(Exception):
    """The worker's server cannot run the chain now; the worker gives it back and retries the server."""


@dataclass
class BatchOptions:
    out_dir: Path
    servers: list[str]
    seeds: list[int]
    cameras: CameraChoice = field(default_factory=lambda: CameraChoice("active"))
    frames: list[int] | None = None
    engine: str = DEFAULT_RENDER_ENGINE
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    overwrite: bool = False
    timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S  # silence after which a server counts as gone
    retry_s: float = DEFAULT_SERVER_RETRY_S  # how long a server that went away is tried again
    keys: ClientKeys | None = None  # CURVE keys for servers started with --server-key
    consistent: bool = False  # each frame an edit of the frame before it (consistent.py)
    margin_px: int = DEFAULT_EDIT_MARGIN_PX  # with consistent: how far the region grows around changes
    # with consistent: a camera move regenerating more of the picture than this is a new picture
    reproject_limit: float = DEFAULT_REPROJECT_LIMIT
    size: OutputSize = field(default_factory=OutputSize)  # --resolution / --percentage
    base_megapixels: float = DEFAULT_BASE_MEGAPIXELS  # frames of other sizes: the base picture's size
    upscale_strength: float = DEFAULT_UPSCALE_STRENGTH
    shard: Shard | None = None  # --shard K/N: only this part of the plan (shards.py)
    draft: bool = False  # --draft: every image at the draft size, one pass, with the draft's speed options

    def layout_of(self, layout: Layout) -> Layout:
        """The layout the batch makes of a shot's: at --resolution / --percentage, then as its draft."""
        sized = self.size.apply(layout)
        return draft_layout(sized) if self.draft else sized

    def settings_for(self, layout: Layout, seed: int) -> GenerationSettings:
        """The generation settings of an image of ``layout``: the draft preset's with --draft."""
        settings = GenerationSettings.for_layout(layout, seed=seed, steps=self.steps, guidance=self.guidance)
        return settings.draft() if self.draft else settings

    def keeps(self, task: Task) -> bool:
        """The image is complete and stays: a rerun skips it (never with --overwrite)."""
        return self.kept_record(task) is not None

    def kept_record(self, task: Task) -> GenerationRecord | None:
        """The record of the image when it is complete and stays (keeps), else None."""
        return None if self.overwrite else task.complete_record()


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


@dataclass
class BatchPlan:
    """What a batch makes, decided before any server starts (read_plan): every input's shots (with
    --shard, this shard's), the inputs that could not be read, and how many images are left to make."""

    inputs: list[Path]
    shots_by_input: dict[Path, list[Shot]]
    unreadable: list[Outcome]  # failed with the reason
    tasks: list[Task]  # every image of the plan, in order
    to_make: int  # images not complete yet (all of them with --overwrite); 0: no server is needed


def read_plan(inputs: list[Path], options: BatchOptions) -> BatchPlan:
    """Read every input (Blender, for .blend files) and decide what is left to make; starts nothing."""
    names = output_names(inputs)
    shots_by_input: dict[Path, list[Shot]] = {}
    unreadable: list[Outcome] = []
    for path in inputs:
        try:
            read = read_shots(path, names[path], options.cameras, options.frames)
            shots_by_input[path] = [replace(shot, layout=options.layout_of(shot.layout)) for shot in read]
        except SeeThroughError as exc:
            unreadable.append(Outcome(path, str(path), "failed", str(exc)))
        except Exception as exc:  # whatever a damaged file makes Blender raise: skip this input only
            unreadable.append(
                Outcome(path, str(path), "failed", f"cannot read it: {type(exc).__name__}: {exc}")
            )
    if options.shard is not None:
        shots_by_input = options.shard.select(shots_by_input, options.consistent)
    tasks = [
        Task.of(shot, seed, options.out_dir)
        for shots in shots_by_input.values()
        for shot in shots
        for seed in options.seeds
    ]
    to_make = sum(not options.keeps(task) for task in tasks)
    return BatchPlan(inputs, shots_by_input, unreadable, tasks, to_make)


class BatchRunner:
    # Frames made in two stages are upscaled as their bases become ready (upscale_stage.py). Their tile
    # views render with Blender in this process, and bpy wants the main thread: it drives the stage
    # between the shots it renders. ray_runner.py renders them as cluster tasks, and a thread of its own
    # drives the stage (upscale_alongside). upscale_after_bases: every frame after the last base (the
    # order benchmarks compare with).
    upscale_alongside = False
    upscale_after_bases = False

    def __init__(self, options: BatchOptions, stream: TextIO | None = None) -> None:
        for server in options.servers:
            self._check_worker(server)  # a bad address must fail here, not kill a worker thread
        self.options = options
        self.stream = stream
        self._pool = WorkPool(len(options.servers))
        self._outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._progress: ProgressLine | None = None
        self._bases = ReadyBases()  # bases generated (or kept), waiting for their frame's upscale
        self._upscale_stop = threading.Event()  # interrupted: the tiles' jobs stop too
        self._upscale_interrupted = False  # the upscale stage's own thread was stopped (upscale_alongside)
        self._workers_left = 0  # the last worker to leave closes self._bases: no base will come
        self._last_server_error = ""  # why the last server gave up, for the tasks failed after it

    # --- what a subclass replaces: where jobs go and where shots render (ray_runner.py) ---------

    def _check_worker(self, server: str) -> None:
        parse_endpoint(server)

    def _client(self, endpoint: str) -> SeeThroughClient:
        return SeeThroughClient(endpoint, self.options.timeout_s, keys=self.options.keys)

    def _render_condition(self, shot: Shot) -> tuple[bytes, np.ndarray]:
        """The shot's OSCR PNG and token grids, its condition folder written (a resumed batch finds the
        frames it rendered before in their conditions/ folders); raises if it fails."""
        rendered = render_or_reuse(
            self._generation_layout(shot.layout),
            shot.condition_dir(self.options.out_dir),
            engine=self.options.engine,
            quiet=True,
        )
        return rendered.oscr_path.read_bytes(), rendered.token_grids

    # --- main thread --------------------------------------------------------------------------

    def run(self, inputs: list[Path]) -> BatchSummary:
        return self.run_plan(read_plan(inputs, self.options))

    def run_plan(self, plan: BatchPlan) -> BatchSummary:
        """Make what the plan leaves to make; with nothing to make, it needs no server."""
        if plan.to_make and not self.options.servers:
            raise ValueError("a batch with images to make needs at least one server endpoint")
        start = time.perf_counter()
        shots_by_input, all_tasks = plan.shots_by_input, plan.tasks
        self._outcomes.extend(plan.unreadable)
        self._progress = ProgressLine(len(all_tasks) + len(self._outcomes), self.stream)
        for outcome in list(self._outcomes):  # inputs that could not be read
            self._progress.advance(f"FAILED {outcome.label}: {outcome.reason}")

        workers = [
            threading.Thread(target=self._worker, args=(endpoint,), name=f"batch {endpoint}", daemon=True)
            for endpoint in self.options.servers
        ]
        self._workers_left = len(workers)
        for worker in workers:
            worker.start()
        stage = UpscaleStage(self)
        upscaler = threading.Thread(
            target=self._run_upscale_stage, args=(stage,), name="batch upscale", daemon=True
        )
        if self.upscale_alongside:  # beside the workers; it ends with the last base's frame
            upscaler.start()
        # this thread drives the stage: between shots, while it waits to queue one, and after the last
        meanwhile = None if self.upscale_alongside or self.upscale_after_bases else stage.poll
        render_s = 0.0
        interrupted = False
        try:
            for shots in shots_by_input.values():
                if self.options.consistent:
                    for chain in chains_of(shots):
                        render_s += self._produce_chain(chain, meanwhile)
                else:
                    for shot in shots:
                        render_s += self._produce(shot, meanwhile)
            self._pool.close()  # the workers leave once their chains are done, the last closing _bases
            if not workers:
                self._bases.close()
            if meanwhile is not None:
                stage.run()  # the frames of the bases still generating, each as its base is ready
        except KeyboardInterrupt:
            interrupted = True
            self._stop()
        finally:
            self._pool.close()
            interrupted = self._join(workers) or interrupted
            self._bases.close()  # the last base is made: the upscale stage ends with its frame
            if self.upscale_alongside:
                interrupted = self._join([upscaler]) or self._upscale_interrupted or interrupted
            elif self.upscale_after_bases and not interrupted:
                self._run_upscale_stage(stage)
                interrupted = self._upscale_interrupted
            stage.close()
            if not interrupted:
                self._account_for(all_tasks)
            self._progress.close()
        return BatchSummary(self._outcomes, time.perf_counter() - start, render_s, interrupted)

    def _stop(self) -> None:
        """Interrupted: no job starts any more, and the running ones (bases and tiles) are cancelled."""
        self._pool.stop()
        self._upscale_stop.set()

    def _join(self, threads: list[threading.Thread]) -> bool:
        """Wait for the threads; True when a Ctrl-C came meanwhile (the batch then stops)."""
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(timeout=0.2)  # a timeout, so Ctrl-C reaches the main thread
        except KeyboardInterrupt:
            self._stop()  # cancel running jobs, then stop
            for thread in threads:
                thread.join(timeout=self.options.timeout_s)
            return True
        return False

    def _account_for(self, tasks: list[Task]) -> None:
        """Every planned image must have an outcome; one without is reported, never dropped silently."""
        with self._lock:
            seen = {o.image_path for o in self._outcomes} | {o.label for o in self._outcomes}
        for task in tasks:
            if task.image_path not in seen and task.label not in seen:
                reason = "no result came back for it (rerun the same command to make it)"
                self._finish(Outcome(task.shot.input_path, task.label, "failed", reason))

    # --- frames at sizes the model does not take: base, then upscale (docs/upscale.md) -----------

    def frame_plan(self, layout: Layout, seed: int) -> UpscalePlan:
        return plan_upscale(
            layout.width,
            layout.height,
            seed=seed,
            base_megapixels=self.options.base_megapixels,
            strength=self.options.upscale_strength,
        )

    def _two_stages(self, layout: Layout) -> bool:
        return self.frame_plan(layout, 0).two_stages

    def _generation_layout(self, layout: Layout) -> Layout:
        """What the model generates for a shot: the layout, or its base view for other frame sizes."""
        return base_layout(layout, self.frame_plan(layout, 0)) if self._two_stages(layout) else layout

    def _queue_upscale(self, task: Task) -> None:
        """A base is ready (generated, or kept by an interrupted run): its frame is handed to the upscale
        stage (upscale_stage.py). Called from the worker threads, and the main thread for kept bases."""
        self._bases.put(task)

    def _tile_views(self) -> TileViews:
        """What renders the upscale tiles' views: Blender in this process (ray_runner.py: Ray tasks)."""
        return TileViews(self.options.engine)

    def _run_upscale_stage(self, stage: UpscaleStage) -> None:
        """Run the upscale stage to its end, noting a Ctrl-C: on a thread of its own while the workers
        still generate bases (upscale_alongside), or after them (upscale_after_bases)."""
        try:
            stage.run()
        except KeyboardInterrupt:
            self._upscale_stop.set()  # running tiles are cancelled; the finished ones stay for a rerun
            self._upscale_interrupted = True

    def _frame_before(self, task: Task) -> Path | None:
        """--consistent: the frame whose base this frame's base was edited from, camera kept. Its upscale
        keeps that frame's pixels wherever the edit does not reach (frame_reuse.py), so that frame is
        written first, and its tile views are only known then."""
        if not self.options.consistent:
            return None
        try:
            record = read_png_file_record(task.base_path)
        except (OSError, ValueError):
            return None  # the upscale itself says what is wrong with the base
        return parent_frame_path(record) if record is not None else None

    def _frame_written(self, task: Task, seconds: float, note: str) -> None:
        """The upscale stage wrote a frame."""
        servers = ", ".join(self.options.servers)
        self._finish(
            Outcome(task.shot.input_path, task.label, "done", server=servers, image_path=task.image_path,
                    generate_s=seconds),
            note,
        )  # fmt: skip

    def _produce(self, shot: Shot, meanwhile: Callable[[], None] | None) -> float:
        """Render a shot's condition if any of its images is missing, then queue those tasks (calling
        ``meanwhile`` while it waits, and once after)."""
        pending = self._pending(shot)
        elapsed, condition = self._render(shot, pending)
        if condition is not None:
            for task in pending:
                self._put(Chain([Link(task, condition)]), meanwhile)
        if meanwhile is not None:
            meanwhile()
        return elapsed

    def _produce_chain(self, shots: list[Shot], meanwhile: Callable[[], None] | None) -> float:
        """Render every frame of one camera, then queue one chain per seed, in frame order (calling
        ``meanwhile`` between frames, while it waits to queue, and once after)."""
        elapsed = 0.0
        chains: dict[int, list[Link]] = {seed: [] for seed in self.options.seeds}
        before: dict[int, Task | None] = {seed: None for seed in self.options.seeds}
        for shot in shots:
            pending = self._pending(shot)
            seconds, condition = self._render(shot, pending)
            elapsed += seconds
            for task in pending if condition is not None else []:
                chains[task.seed].append(Link(task, condition, before[task.seed]))
            for seed in self.options.seeds:
                before[seed] = Task.of(shot, seed, self.options.out_dir)
            if meanwhile is not None:
                meanwhile()  # frames whose base a rerun kept are upscaled while the others render
        for links in chains.values():
            if links:
                self._put(Chain(links), meanwhile)
        if meanwhile is not None:
            meanwhile()
        return elapsed

    def _pending(self, shot: Shot) -> list[Task]:
        """The shot's tasks still to do; the complete ones are reported as skipped."""
        pending = []
        for task in (Task.of(shot, seed, self.options.out_dir) for seed in self.options.seeds):
            if (kept := self.options.kept_record(task)) is not None:
                reason = self._made_otherwise(task, kept)  # kept all the same, and said
                self._finish(
                    Outcome(shot.input_path, task.label, "skipped", reason, image_path=task.image_path)
                )
            elif self._base_kept(task):
                self._queue_upscale(task)
            else:
                pending.append(task)
        return pending

    def _made_otherwise(self, task: Task, record: GenerationRecord) -> str:
        """How a complete image this run keeps (``record``: its record) differs from what its options make
        now ("": it does not): its steps, guidance or size. It is kept all the same; --overwrite makes
        it again."""
        layout, options = task.shot.layout, self.options
        differ = []
        if record.steps != options.steps:
            differ.append(f"{record.steps} steps, not {options.steps}")
        if not math.isclose(record.guidance, options.guidance, rel_tol=1e-6):
            differ.append(f"guidance {record.guidance:g}, not {options.guidance:g}")
        if (record.width, record.height) != (layout.width, layout.height):
            differ.append(f"{record.width}x{record.height}, not {layout.width}x{layout.height}")
        return f"made with {', '.join(differ)}" if differ else ""

    def _base_kept(self, task: Task) -> bool:
        """A frame made in two stages whose base an interrupted run kept: only its upscale is left."""
        return not self.options.overwrite and self._two_stages(task.shot.layout) and task.base_is_complete()

    def _render(self, shot: Shot, pending: list[Task]) -> tuple[float, Condition | None]:
        """Seconds spent, and the shot's condition (None: nothing to do, or the render failed)."""
        if not pending or self._pool.stopping:
            return 0.0, None
        if not self._pool.servers_left:  # no server to generate them: do not render for nothing
            for task in pending:
                self._fail(task, self._no_server_reason())
            return 0.0, None
        self._progress.status("blender", f"rendering {shot.output_name}/{shot.camera} frame {shot.frame}")
        start = time.perf_counter()
        try:
            oscr_png, token_grids = self._render_condition(shot)
        except (SeeThroughError, RuntimeError, ValueError, OSError) as exc:
            for task in pending:
                self._fail(task, f"rendering failed: {_describe(exc)}")
            return time.perf_counter() - start, None
        finally:
            self._progress.status("blender", None)
        elapsed = time.perf_counter() - start
        view = boxes_in_view(token_grids)  # a box with a pixel in view has a grid cell
        where = f"{shot.output_name}/{shot.camera} frame {shot.frame}"
        if not view.shown:
            reason = "no box is in view, so there is nothing to generate: move the camera or the boxes"
            for task in pending:
                self._fail(task, reason)
            return elapsed, None
        note = view.note(shot.layout.descriptions, where)
        if note is not None:
            self._progress.note(note)
        condition = (oscr_png, token_grids, view)
        return time.perf_counter() - start, condition

    def _put(self, chain: Chain, meanwhile: Callable[[], None] | None = None) -> None:
        """Queue a chain; when no server is left its images fail here (when stopping, they stay to do)."""
        if not self._pool.put(chain, meanwhile) and not self._pool.stopping:
            self._fail_chain(chain, self._no_server_reason())

    def _no_server_reason(self) -> str:
        servers = ", ".join(self.options.servers)
        return (
            f"not generated: no server could be reached ({servers}; each tried again for "
            f"{self.options.retry_s:g} s, see --retry-for). Last error: {self._last_server_error}"
        )

    # --- worker threads -----------------------------------------------------------------------

    def _worker(self, endpoint: str) -> None:
        client = self._client(endpoint)
        try:
            while (chain := self._pool.take()) is not None:
                try:
                    self._run_chain(client, endpoint, chain)
                except _ServerDownError as down:
                    self._pool.give_back(chain)  # first in line for a live server
                    if not self._wait_for_server(client, endpoint, str(down)):
                        if self._pool.stopping:
                            return  # interrupted: what is left stays for the next run
                        for orphan in self._pool.leave():  # the last server gave up: fail what is left
                            self._fail_chain(orphan, self._no_server_reason())
                        return
                else:
                    self._pool.finish(chain)
        finally:
            self._progress.status(endpoint, None)
            client.close()
            with self._lock:
                self._workers_left -= 1
                last = self._workers_left == 0
            if last:
                self._bases.close()  # no base will come: the upscale stage ends with the last frame

    def _run_chain(self, client: SeeThroughClient, endpoint: str, chain: Chain) -> None:
        """Generate the chain's images in order; _ServerDownError when the server cannot go on."""
        for link in chain.links:
            task = link.task
            if task.image_path in chain.done:
                continue  # finished before this chain came back from a lost server
            if self._pool.stopping:
                return  # interrupted: leave the rest for the next run
            self._run_link(client, endpoint, link, chain)
            chain.done.add(task.image_path)

    def _run_link(self, client: SeeThroughClient, endpoint: str, link: Link, chain: Chain) -> None:
        """One image, done or failed with its reason; _ServerDownError when the server cannot go on."""
        task = link.task

        def lost(_: JobLostError) -> None:
            self._progress.note(f"server {endpoint} lost {task.label} (restarted?); sending it again")

        try:
            send_until_done(lambda: self._generate(client, endpoint, link, chain), on_lost=lost)
        except SeeThroughError as exc:
            if server_went_away(exc):
                raise _ServerDownError(str(exc)) from exc
            self._fail(task, str(exc), endpoint)
        except Exception as exc:  # a bug must fail one task, not hang the whole batch
            self._fail(task, f"unexpected {type(exc).__name__}: {exc}", endpoint)

    def _wait_for_server(
        self, client: SeeThroughClient, endpoint: str, reason: str, pause: Pause | None = None
    ) -> bool:
        """Ask a server that went away again, with back-off, for up to retry_s; True once it answers.
        False when it did not come back, or when ``pause`` (default: the base stage's) says while
        waiting that no work is left for it (the batch finished or stopped meanwhile)."""
        pause = pause or self._pool.wait_until_done
        self._last_server_error = reason
        others = "its jobs go to the other servers; " if self._pool.servers_left > 1 else ""
        self._progress.status(endpoint, "away, being retried")
        wait = ServerWait(self.options.retry_s, self.options.timeout_s, self._progress.note)
        retry = wait.retry(client, reason, pause, also=others)
        self._last_server_error = retry.last_error or reason
        if retry.back:
            self._progress.status(endpoint, None)
        return retry.back

    def _generate(self, client: SeeThroughClient, endpoint: str, link: Link, chain: Chain) -> None:
        task = link.task
        oscr_png, token_grids, view = link.condition
        layout = self._generation_layout(task.shot.layout)
        two_stages = layout is not task.shot.layout
        target = task.base_path if two_stages else task.image_path
        previous = link.previous
        if previous is not None and two_stages:  # a chain of bases: each an edit of the one before
            previous = _as_base(previous)
        settings = self.options.settings_for(layout, task.seed)
        plan = None
        if previous is not None:
            plan = plan_frame(
                previous, layout, settings, self.options.margin_px, self.options.reproject_limit,
                target=target, carried=chain.sources,
            )  # fmt: skip
        chain.sources = None  # set again once this frame is saved
        source = {
            "input": str(task.shot.input_path),
            "camera": task.shot.camera,
            "frame": task.shot.frame,
            "server": endpoint,
        }
        if plan is not None and plan.copy_of is not None:
            record = copied_record(plan.copy_of, layout, source, plan.parent)
            destination = Destination(target, source, sidecar=True, reprojected=plan.reprojected)
            save_image(plan.copy_of.image, record, destination)
            chain.sources = plan.sources
            if two_stages:
                self._queue_upscale(task)
                return
            self._finish(Outcome(task.shot.input_path, task.label, "done", server=endpoint,
                                 image_path=task.image_path), f" ({plan.note})")  # fmt: skip
            return
        request = GenerateRequest.for_settings(
            view.settings(settings),  # only the boxes the frame shows (in_view.py)
            oscr_png,
            view.token_grids(token_grids),
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
            if self._pool.stopping:
                jobs[0].cancel()
            self._progress.status(endpoint, f"{task.label} step {progress.step}/{progress.total}")

        # the sidecar is written last: a task is complete once it holds the PNG's record (Task.is_complete)
        destination = Destination(
            target,
            source,
            sidecar=True,
            parent=plan.parent if plan is not None else None,
            region=plan.region if plan is not None else None,
            reprojected=plan.reprojected if plan is not None else None,
            out_of_view=view.left_out,
        )
        saved = generate_and_save(
            client, request, layout, destination, on_accepted=jobs.append, on_progress=on_progress
        )
        if saved is None:
            raise JobCancelledError(f"{task.label} was cancelled")
        if plan is not None and saved.image_path == target:  # not in the fallback folder
            chain.sources = plan.sources
        elapsed = time.perf_counter() - start
        if two_stages:  # the frame is made by the second stage, now that its base is ready
            self._queue_upscale(task)
            self._progress.status(endpoint, f"{task.label}: base done in {elapsed:.1f} s")
            return
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

    def _fail(self, task: Task, reason: str, server: str = "") -> None:
        self._finish(Outcome(task.shot.input_path, task.label, "failed", reason, server))

    def _fail_chain(self, chain: Chain, reason: str) -> None:
        for link in chain.links:
            if link.task.image_path not in chain.done:
                self._fail(link.task, reason)
                chain.done.add(link.task.image_path)

    def _finish(self, outcome: Outcome, note: str = "") -> None:
        with self._lock:
            self._outcomes.append(outcome)
        if outcome.status == "done":
            text = f"done    {outcome.label} on {outcome.server} in {outcome.generate_s:.1f} s{note}"
        elif outcome.status == "skipped":
            otherwise = f"; {outcome.reason}: --overwrite makes it again" if outcome.reason else ""
            text = f"skipped {outcome.label} (already complete{otherwise})"
        else:
            text = f"FAILED  {outcome.label}: {outcome.reason}"
        self._progress.advance(text)


def _describe(exc: BaseException) -> str:
    """An OS error as a user reads it: what failed on which file, e.g. "No space left on device: PATH"."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


def _as_base(task: Task) -> Task:
    """A frame made in two stages as its base picture: a chain of bases edits one base after another."""
    return replace(task, image_path=task.base_path, sidecar_path=sidecar_path_for(task.base_path))
