"""`seethrough batch --ray`: today's batch with Ray doing the renders and the generations.

RayBatchRunner is batch/runner.py's BatchRunner with two things replaced: a shot's OSCR render is a
Ray task (ray_actors.render_shot, submitted ahead of need so every CPU of the cluster renders), and
each "server" is a generation actor reached through ActorClient, which looks to the runner like a
server's client. The upscale stage's tile views are render tasks too (ray_views.py), started as each
frame's base is ready, and the frame's upscale starts then too, on its own driver thread, while the
other bases are still generated (upscale_alongside): final frames come in a steady stream instead of
after the last base. Each actor then holds at most one base job and one tile job; Ray runs an actor's
jobs in the order they were sent, so while both kinds wait, an actor alternates between them: neither
stage starves the other, and no actor waits while either has work.

Everything else is the runner's: the plan, what is skipped, --consistent chains (a chain's frames go
to one actor), the files written by the driver (generate_and_save.save_image, atomic, sidecar last),
the progress bar and the summary. Ray places the actors, retries lost work and restarts dead actors;
the runner only hands each actor its next chain.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError

from seethrough_core.client import ServerError, ServerUnavailableError
from seethrough_core.errors import SeeThroughError
from seethrough_core.frame_reuse import tiles_a_base_edit_reaches
from seethrough_core.generate_and_save import tiles_dir_for
from seethrough_core.protocol import Cancelled, ErrorReply, GenerateRequest, Progress, Result
from seethrough_core.rendered_layout import OSCR_NAME, reusable
from seethrough_core.server_away import Pause

from .consistent import chains_of
from .plan import Shot, Task
from .ray_actors import (
    MAX_RESTARTS,
    ActorInfo,
    GenerationActor,
    render_shot,
)
from .ray_cluster import ActorPlan, connect, plan_actors
from .ray_views import RayTileViews, await_render, write_rendered
from .runner import BatchOptions, BatchPlan, BatchRunner, BatchSummary

POLL_S = 0.25  # how often a waiting driver thread looks at its job's progress


class ActorJob:
    """One generation on an actor, as generate_and_save expects a server's job: events(), cancel()."""

    def __init__(self, client: ActorClient, request: GenerateRequest) -> None:
        self.client = client
        self.request = request
        self.id = request.request_id
        self._ref = client.actor.generate.remote(request)
        self._cancel_sent = False

    def cancel(self) -> None:
        if not self._cancel_sent:
            self._cancel_sent = True
            self.client.actor.cancel.remote(self.id)  # this job, if running, stops at its next step
            ray.cancel(self._ref)  # a job still queued on the actor never starts

    def events(self) -> Iterator[Progress | Result | Cancelled]:
        step = 0
        while True:
            if self.client.stopping():
                self.cancel()
            done, _ = ray.wait([self._ref], timeout=POLL_S)
            if done:
                yield self._outcome()
                return
            progress = self._progress()
            if progress is not None and progress.request_id == self.id and progress.step != step:
                step = progress.step
                yield progress

    def _outcome(self) -> Result | Cancelled:
        name = self.client.name
        try:
            outcome = ray.get(self._ref)
        except ray.exceptions.TaskCancelledError:
            outcome = None
        except RayActorError as exc:
            raise ServerUnavailableError(
                f"{name} is gone and Ray could not restart it ({MAX_RESTARTS} restarts): {_first_line(exc)}"
            ) from None
        except RayTaskError as exc:
            raise SeeThroughError(f"{name}: {exc.cause}") from None
        except RayError as exc:  # e.g. the node ran out of memory and Ray gave up on the job
            raise SeeThroughError(f"{name}: {_first_line(exc)}") from None
        if isinstance(outcome, ErrorReply):
            raise ServerError(outcome)
        if outcome is None:
            return Cancelled(self.id, self.id, was_running=True)
        return outcome

    def _progress(self) -> Progress | None:
        try:
            return ray.get(self.client.actor.progress.remote(), timeout=POLL_S)
        except (GetTimeoutError, RayError):
            return None  # restarting, or busy: the next look will tell


class ActorClient:
    """What the runner's worker thread uses instead of a server's client: submit() and close()."""

    def __init__(self, name: str, actor: Any, stopping: Callable[[], bool]) -> None:
        self.name = name
        self.actor = actor
        self.stopping = stopping  # the batch is stopping: cancel the running job

    def submit(self, request: GenerateRequest) -> ActorJob:
        return ActorJob(self, request)

    def close(self) -> None:
        pass


class RayBatchRunner(BatchRunner):
    """BatchRunner whose renders are Ray tasks and whose servers are generation actors."""

    upscale_alongside = True  # this process renders no tile view: its main thread is not needed

    def __init__(
        self,
        options: BatchOptions,
        actors: dict[str, Any],
        render_ahead: int,
        stream: TextIO | None = None,
    ) -> None:
        self._actors = actors
        self._render_ahead = max(1, render_ahead)
        self._order: list[Shot] = []  # shots to render, in the order the runner asks for them
        self._position: dict[int, int] = {}
        self._refs: dict[int, Any] = {}  # position -> render_shot ref
        self._submitted = 0
        super().__init__(options, stream)
        self._views = RayTileViews(options.engine, self._render_ahead, lambda: self._pool.stopping)

    def _check_worker(self, server: str) -> None:
        if server not in self._actors:
            raise ValueError(f"no actor named {server!r}")

    def _client(self, endpoint: str) -> ActorClient:
        return ActorClient(endpoint, self._actors[endpoint], lambda: self._pool.stopping)

    def _wait_for_server(self, client: Any, endpoint: str, reason: str, pause: Pause | None = None) -> bool:
        # Ray restarts a dead actor itself (max_restarts) before its job fails: one it gave up on is gone.
        self._last_server_error = reason
        self._progress.note(f"{endpoint} is gone ({reason}); its jobs go to the other actors")
        return False

    def _plan_renders(self, plan: BatchPlan) -> None:
        """The shots Ray renders, in the order the runner will ask for them."""
        for shots in plan.shots_by_input.values():
            groups = chains_of(shots) if self.options.consistent else [shots]
            for shot in (shot for group in groups for shot in group):
                if self._needs_render(shot) and not self._rendered_before(shot):
                    self._position[id(shot)] = len(self._order)
                    self._order.append(shot)

    def _needs_render(self, shot: Shot) -> bool:
        """Some image of the shot is to be generated (not complete, nor only waiting for its upscale)."""
        tasks = (Task.of(shot, seed, self.options.out_dir) for seed in self.options.seeds)
        return any(not self.options.keeps(task) and not self._base_kept(task) for task in tasks)

    def _rendered_before(self, shot: Shot) -> bool:
        """Its condition folder holds this very render (a resumed batch): the driver reads it."""
        layout = self._generation_layout(shot.layout)
        folder = shot.condition_dir(self.options.out_dir)
        return reusable(folder, layout, self.options.engine) is not None

    def _render_condition(self, shot: Shot) -> tuple[bytes, np.ndarray]:
        if id(shot) not in self._position:  # rendered before: found in its folder (runner.py)
            return super()._render_condition(shot)
        position = self._position[id(shot)]
        while self._submitted < min(len(self._order), position + self._render_ahead + 1):
            ahead = self._order[self._submitted]
            layout = self._generation_layout(ahead.layout)  # a frame of another size: its base view
            self._refs[self._submitted] = render_shot.remote(layout, self.options.engine)
            self._submitted += 1
        rendered = await_render(self._refs.pop(position), lambda: self._pool.stopping)
        folder = shot.condition_dir(self.options.out_dir)
        write_rendered(folder, rendered.files)  # the condition folder as today's batch leaves it
        return rendered.files[OSCR_NAME], rendered.token_grids

    # --- the upscale stage: tile views rendered on the cluster, started as each base is ready ------

    def _queue_upscale(self, task: Task) -> None:
        layout = task.shot.layout
        # named before the upscale can ask for them: asked for first, they would render twice. A frame
        # that keeps the frame before where its edit does not reach refines only the tiles the edit's
        # region reaches (the region is saved beside its base); without a region, they render when
        # asked for.
        plan = self.frame_plan(layout, task.seed)
        before = self._frame_before(task)
        tiles = None if before is None else tiles_a_base_edit_reaches(task.base_path, plan)
        if before is None or tiles is not None:
            self._views.ahead(plan, layout, tiles_dir_for(task.image_path), tiles)
        super()._queue_upscale(task)

    def _tile_views(self) -> RayTileViews:
        return self._views

    def run_plan(self, plan: BatchPlan) -> BatchSummary:
        self._plan_renders(plan)
        try:
            return super().run_plan(plan)
        finally:
            for ref in self._refs.values():
                ray.cancel(ref)
            self._views.cancel()


def run_on_ray(
    address: str,
    cpu_actors: int | None,
    serve_argv: list[str],
    timeout_s: float,
    options: BatchOptions,
    plan: BatchPlan,
) -> BatchSummary:
    """Connect, check the cluster, load the actors, run the batch, stop everything; raises FarmError
    (the cluster cannot run it) or SeeThroughError (the model did not load). A Ctrl-C while loading
    (KeyboardInterrupt) stops the actors and Ray, as any other end does."""
    print(f"Connecting to Ray ({address}) ...", file=sys.stderr, flush=True)
    actors: dict[str, Any] = {}
    try:
        connect(address, timeout_s)  # inside: an interrupted start of a local Ray is stopped too
        resources = ray.cluster_resources()
        actor_plan = plan_actors(resources, cpu_actors, address)
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        print(
            f"{len(plan.inputs)} input(s), seeds {options.seeds}, Ray cluster of {nodes} node(s), "
            f"{int(resources.get('CPU', 0))} CPUs, {int(resources.get('GPU', 0))} GPUs: "
            f"{actor_plan.describe()}" + (f", shard {options.shard}" if options.shard else ""),
            file=sys.stderr,
            flush=True,
        )
        actors = start_actors(actor_plan, serve_argv, timeout_s)
        options.servers = list(actors)
        render_ahead = 2 * int(resources.get("CPU", 1))  # every CPU renders, one shot in hand
        return RayBatchRunner(options, actors, render_ahead).run_plan(plan)
    finally:
        stop_actors(actors)
        ray.shutdown()


def start_actors(
    plan: ActorPlan, serve_argv: list[str], timeout_s: float, stream: TextIO | None = None
) -> dict[str, Any]:
    """Create the actors and wait until each has loaded its model; lines say where each runs.

    Raises SeeThroughError with serve's message when the model cannot be loaded.
    """
    stream = stream or sys.stderr
    options: dict[str, Any] = {
        "num_cpus": plan.num_cpus,
        "num_gpus": plan.num_gpus,
        "max_restarts": MAX_RESTARTS,
        "max_task_retries": MAX_RESTARTS,
        "scheduling_strategy": "SPREAD",  # Ray's placement: one actor per node where it can
    }
    argv = [*serve_argv, "--device", plan.device]
    actors = {
        f"ray actor {n + 1}": GenerationActor.options(**options).remote(argv, timeout_s)
        for n in range(plan.count)
    }
    print(f"loading the model on {plan.describe()} ...", file=stream, flush=True)
    pending = {actor.info.remote(): name for name, actor in actors.items()}
    started = time.monotonic()
    while pending:
        ready, _ = ray.wait(list(pending), timeout=10.0)
        if not ready:
            waiting = ", ".join(sorted(pending.values()))
            print(
                f"  still waiting for {waiting} ({time.monotonic() - started:.0f} s: the model is loading, "
                "or the cluster has no free resource for it yet)",
                file=stream,
                flush=True,
            )
        for ref in ready:
            name = pending.pop(ref)
            try:
                info: ActorInfo = ray.get(ref)
            except RayError as exc:
                raise SeeThroughError(f"{name} could not start: {_first_line(exc)}") from None
            if info.load_error is not None:
                raise SeeThroughError(
                    f"the model could not be loaded on {name} ({info.node}): {info.load_error}"
                )
            print(
                f"  {name}: pid {info.pid} on node {info.node}, {info.device}, {info.model}",
                file=stream,
                flush=True,
            )
    return actors


def stop_actors(actors: dict[str, Any]) -> None:
    """Kill every actor (no restart): a running generation stops and its GPU memory is freed."""
    for actor in actors.values():
        try:
            ray.kill(actor, no_restart=True)
        except RayError:
            pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
