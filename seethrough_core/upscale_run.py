"""The upscale stage (docs/upscale.md): the base picture enlarged, then refined tile by tile on servers.

Each tile is an ordinary generate job: an edit of the enlarged base over the whole tile (img2img at the
plan's strength) conditioned on the tile's own OSCR view, the masks and token grids of the boxes that
reach into it, and a prompt of only those boxes. Finished tiles are kept beside the output
(NAME.tiles/), so an interrupted upscale resumes with the tiles still missing; the final frame is
blended from them and written atomically, and only then is the folder removed. An edit of a frame
refines only the tiles its change reaches; the rest of the frame is the previous frame's (frame_reuse.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .client import Job, JobLostError, SeeThroughClient
from .edit_input import MASK_INSIDE, EditInput
from .errors import SeeThroughError
from .frame_reuse import FrameReuse
from .generate_and_save import Destination, SavedImage, save_image, tiles_dir_for
from .generation_settings import GenerationSettings
from .geometry import FrameRect
from .in_view import boxes_in_view
from .layout import Layout
from .png import write_bytes_atomic
from .protocol import GenerateRequest, Progress, Result
from .record import GenerationRecord
from .rendered_layout import reusable
from .resample import sample_view
from .server_away import ServerBack, send_until_done, server_went_away
from .upscale_plan import (
    BasePlan,
    Tile,
    TileBlend,
    UpscalePlan,
    ViewCondition,
    ViewCrop,
    pixels_sha256,
    shared_view,
    tile_layout,
    tile_window,
)

log = logging.getLogger(__name__)

PLAN_FILE = "upscale_plan.json"


# Renders a layout's OSCR and masks into a folder (Blender: the command line's render, the add-on's
# background render process); None when it was stopped (the add-on's Cancel kills its render).
RenderView = Callable[[Layout, Path], ViewCondition | None]
# Renders one view covering several tiles into a folder and cuts each tile's rendered-layout folder from
# it (upscale_plan.shared_view); RenderView then finds those folders complete. False: it was stopped.
RenderViews = Callable[[Layout, Path, list[ViewCrop]], bool]
VIEWS_FOLDER = "views"  # NAME.tiles/views/: the tiles' rendered views, each known by its render key
SHARED_VIEW = "shared"  # NAME.tiles/views/shared/: the one render the tiles' views are cut from


@dataclass(frozen=True)
class TileProgress:
    """One event of an upscale: a tile's step (``step`` of ``steps``), or a tile finished (step None)."""

    tile: Tile
    done: int  # tiles finished so far, this one included when finished
    total: int
    step: int | None = None
    steps: int | None = None
    generated: bool = True  # False: a finished tile kept from an interrupted run


@dataclass
class Upscale:
    """One frame's upscale: what it starts from and where it goes."""

    plan: UpscalePlan
    frame_layout: Layout  # the layout at the frame's resolution
    base_image: np.ndarray  # uint8, the base picture (plan.base's size)
    base_record: GenerationRecord
    out_path: Path
    steps: int
    guidance: float
    source: dict[str, Any]
    reuse: FrameReuse | None = None  # an edit of a frame: the previous frame lends what the edit keeps

    @property
    def tiles_dir(self) -> Path:
        return tiles_dir_for(self.out_path)

    @cached_property
    def tiles(self) -> tuple[Tile, ...]:
        """The tiles this upscale refines: every tile of the plan, or those the edit's change reaches."""
        return self.plan.tiles if self.reuse is None else self.reuse.refined(self.plan)

    def identity(self) -> dict[str, Any]:
        """What a kept tile must have been made for: the plan, the base's pixels, the model settings (and
        the frame an edit reuses, whose pixels the tiles are blended into)."""
        identity = {
            "plan": self.plan.to_record(),
            "base_sha256": pixels_sha256(self.base_image),
            "steps": self.steps,
            "guidance": self.guidance,
            "layout": self.frame_layout.to_dict(),
        }
        if self.reuse is not None:
            identity["reuses"] = self.reuse.origin
        return identity


def kept_identity(upscale: Upscale) -> dict[str, Any] | None:
    """What the tiles kept in NAME.tiles/ were made for (Upscale.identity, as written); None: no kept
    tiles, or a folder without a readable identity."""
    try:
        kept = json.loads((upscale.tiles_dir / PLAN_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return kept if isinstance(kept, dict) else None


def resume_or_start_over(upscale: Upscale) -> tuple[Upscale, bool]:
    """The upscale to run into ``upscale.out_path``, and whether kept tiles were thrown away.

    Tiles kept there from an interrupted upscale of the same base pixels to the same frame size, with the
    same strength, tile size, steps and guidance, are resumed: the kept upscale is run as it was started,
    its own framing and layout included (the base's own camera at the frame size and the frame's camera
    describe one view, written differently). Tiles of any other upscale are removed, and ``upscale`` starts
    over (True): the add-on's Upscale, asked for another size or settings, replaces them. Rendered views
    stay: each is known by its render key, so a view rendered ahead is used, and any other rendered
    again."""
    if not upscale.tiles_dir.exists():
        return upscale, False
    kept = kept_identity(upscale)
    resumed = _as_kept(upscale, kept) if kept is not None else None
    if resumed is not None:
        return resumed, False
    had_tiles = any(upscale.tiles_dir.glob("*.npy"))
    views = upscale.tiles_dir / VIEWS_FOLDER
    if not views.is_dir():
        shutil.rmtree(upscale.tiles_dir, ignore_errors=True)
        return upscale, had_tiles
    for path in upscale.tiles_dir.iterdir():
        if path.is_dir() and path != views:
            shutil.rmtree(path, ignore_errors=True)
        elif not path.is_dir():
            path.unlink(missing_ok=True)
    return upscale, had_tiles


def started_over_note(upscale: Upscale) -> str:
    """What resume_or_start_over's caller says when it threw kept tiles away."""
    kept = upscale.tiles_dir.name
    return f"the tiles kept in {kept} were for another picture, size or settings: started over"


def _as_kept(upscale: Upscale, kept: dict[str, Any]) -> Upscale | None:
    """``upscale`` with the kept one's framing and layout, if that makes it the kept upscale exactly."""
    try:
        base = kept["plan"]["base"]
        framing = BasePlan(*base["size"], float(base["scale"]), FrameRect(*map(float, base["rect"])))
        candidate = replace(
            upscale,
            plan=replace(upscale.plan, base=framing),
            frame_layout=Layout.from_dict(kept["layout"]),
        )
    except (KeyError, TypeError, ValueError, SeeThroughError):  # an identity of another version
        return None
    return candidate if json.loads(json.dumps(candidate.identity())) == kept else None


def tile_start(upscale: Upscale, tile: Tile) -> np.ndarray:
    """The tile's part of the enlarged base picture (the start of its img2img)."""
    base = upscale.plan.base
    return sample_view(upscale.base_image, base.rect, base.scale, tile.x, tile.y, tile.width, tile.height)


def tile_request(upscale: Upscale, tile: Tile, condition: ViewCondition) -> tuple[GenerateRequest, list[int]]:
    """A tile's job, and the boxes (frame indices) it holds: those whose amodal mask reaches the part of
    the tile inside the frame. A tile no box reaches keeps the first box, its token grid empty there
    (a request needs one description); the record lists it with no boxes."""
    _, _, tile_rows, tile_cols = tile_window(upscale.plan, tile)
    boxes = list(boxes_in_view(condition.amodal, (tile_rows, tile_cols)).shown)
    kept = boxes or [0]
    layout = upscale.frame_layout
    settings = GenerationSettings(
        layout.scene_prompt,
        [layout.boxes[i].description for i in kept],
        tile.width,
        tile.height,
        tile.seed,
        upscale.steps,
        upscale.guidance,
    )
    edit = EditInput(
        tile_start(upscale, tile),
        np.full((tile.height, tile.width), MASK_INSIDE, dtype=np.uint8),  # all of it: img2img
        upscale.plan.strength,
    )
    request = GenerateRequest.for_settings(
        settings,
        condition.oscr_png,
        np.asarray(condition.token_grids)[kept],
        metadata={"upscale_tile": tile.name},
        edit=edit,
    )
    return request, boxes


def view_folder(tiles_dir: Path, tile: Tile) -> Path:
    """Where a tile's view (its rendered layout) is kept while the upscale runs."""
    return tiles_dir / VIEWS_FOLDER / tile.name


def tile_is_kept(tiles_dir: Path, tile: Tile) -> bool:
    """The tile was finished (by this run or an interrupted one): its picture and its info are there."""
    return (tiles_dir / f"{tile.name}.npy").is_file() and (tiles_dir / f"{tile.name}.json").is_file()


def pending_tiles(plan: UpscalePlan, tiles_dir: Path, tiles: tuple[Tile, ...] | None = None) -> list[Tile]:
    """The tiles an upscale still has to make (of ``tiles``, default all the plan's), in the order it
    makes them."""
    return [tile for tile in (plan.tiles if tiles is None else tiles) if not tile_is_kept(tiles_dir, tile)]


@dataclass(frozen=True)
class ViewRenders:
    """The tiles an upscale still has to make, and the renders it asks for, in order: the first missing
    tile's view alone, then (for two more tiles or more) the one view the others' views are cut from,
    its folder and each tile's crop of it. A batch on a farm starts these renders early."""

    tiles: list[Tile]
    first: tuple[Layout, Path] | None
    shared: tuple[Layout, Path, list[ViewCrop]] | None


def view_renders(
    plan: UpscalePlan, frame_layout: Layout, tiles_dir: Path, tiles: tuple[Tile, ...] | None = None
) -> ViewRenders:
    """What UpscaleRunner will make and render for the tiles (of ``tiles``, default all the plan's)
    still missing in ``tiles_dir``."""
    pending = pending_tiles(plan, tiles_dir, tiles)
    if not pending:
        return ViewRenders(pending, None, None)
    first = (tile_layout(frame_layout, plan, pending[0]), view_folder(tiles_dir, pending[0]))
    rest, shared = pending[1:], None
    if len(rest) >= 2:
        whole, crops = shared_view(frame_layout, plan, rest, lambda tile: view_folder(tiles_dir, tile))
        shared = (whole, tiles_dir / VIEWS_FOLDER / SHARED_VIEW, crops)
    return ViewRenders(pending, first, shared)


def shared_view_rendered(whole: Layout, folder: Path, crops: Sequence[ViewCrop], engine: str) -> bool:
    """The shared view and every tile view cut from it are complete in their folders (rendered ahead,
    or by an interrupted run): nothing to render again."""
    done = [(whole, folder), *((crop.layout, crop.folder) for crop in crops)]
    return all(reusable(where, layout, engine) is not None for layout, where in done)


class _ServerGoneError(Exception):
    """A tile's server went away (server_went_away); the pool gives the tile to another server."""


class TilePool:
    """One thread per server, sending upscale tiles' jobs as they are queued.

    An upscale run alone has a pool of its own. A batch hands one pool to each frame's upscale in turn:
    the next frame's views render and its first tiles start while the last tiles of the frame before
    still run, so no server waits between frames. ``stop`` stops every frame queued in it.

    A job a restarted server lost is sent again (up to JOB_RESUBMITS times). With ``server_back`` (a
    batch, `seethrough upscale`), a server that goes away mid-tile gives the tile back to the others,
    first in line, and is asked again (``server_back`` waits for it); once every server is given up on,
    the tiles still waiting fail with the reason. Without it the tile fails, and a rerun resumes."""

    def __init__(
        self,
        clients: list[SeeThroughClient],
        stop: threading.Event | None = None,
        server_back: ServerBack | None = None,
    ) -> None:
        if not clients:
            raise ValueError("an upscale needs at least one server")
        self.clients = clients
        self.stop = stop or threading.Event()
        self.server_back = server_back
        self._jobs: deque[tuple[UpscaleRunner, Tile, GenerateRequest, list[int]]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._serving = len(clients)  # servers not given up on
        self._gone_reason = ""  # why the last server was given up on
        self._workers = [
            threading.Thread(target=self._work, args=(client,), daemon=True, name=f"upscale-{i}")
            for i, client in enumerate(clients)
        ]
        for worker in self._workers:
            worker.start()

    def put(self, runner: UpscaleRunner, tile: Tile, request: GenerateRequest, boxes: list[int]) -> bool:
        """Queue a tile's job, waiting while every server has one in hand; False when stopped first, or
        when no server is left (the tile then fails with the reason)."""
        while not runner.halted:
            with self._cond:
                if not self._serving:
                    runner._no_server(tile, self._gone_reason)
                    return False
                if len(self._jobs) < self._serving:  # each server has at most one waiting
                    self._jobs.append((runner, tile, request, boxes))
                    self._cond.notify_all()
                    return True
                self._cond.wait(0.2)  # a timeout, so the halt of the runner is seen
        return False

    def close(self) -> None:
        """Wait for the queued jobs (skipped once stopped), then end the threads."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        for worker in self._workers:
            worker.join()

    def _take(self) -> tuple[UpscaleRunner, Tile, GenerateRequest, list[int]] | None:
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            if not self._jobs:
                return None
            item = self._jobs.popleft()
            self._cond.notify_all()
            return item

    def _work(self, client: SeeThroughClient) -> None:
        while (item := self._take()) is not None:
            runner, tile, request, boxes = item
            try:
                runner._run_queued(client, tile, request, boxes, give_back=self.server_back is not None)
            except _ServerGoneError as gone:
                with self._cond:
                    self._jobs.appendleft(item)  # first in line for the servers still answering
                    self._cond.notify_all()
                if self.server_back is None or not self.server_back(client, str(gone), self._pause):
                    self._leave(str(gone))
                    return

    def _pause(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True once no tile can need a server any more: the pool is stopped, or
        closed with nothing left to run (the batch ended while a server was being asked again)."""
        deadline = time.monotonic() + seconds
        with self._cond:
            while not (self.stop.is_set() or (self._closed and not self._jobs)):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))  # a slice: setting ``stop`` notifies no one
            return True

    def _leave(self, reason: str) -> None:
        """This thread's server is given up on; the last one to leave fails every tile still waiting."""
        with self._cond:
            self._serving -= 1
            self._gone_reason = reason
            orphans = [] if self._serving else list(self._jobs)
            if not self._serving:
                self._jobs.clear()
            self._cond.notify_all()
        for runner, tile, _, _ in orphans:
            runner._no_server(tile, reason)
            runner._settle()


class UpscaleRunner:
    """Runs an upscale's missing tiles on one or more servers, then writes the frame.

    The calling thread renders the tiles' views (Blender wants one thread); a TilePool's threads send
    the jobs. ``stop`` (an Event) cancels: running jobs are cancelled, finished tiles stay for a resume.
    With ``render_views``, the first tile's view renders alone (its job starts at once) and the views
    of all the other tiles are cut from one render while it runs, instead of one render per tile.
    ``run()`` does it all; a batch calls ``queue_tiles(pool)`` and later ``complete()`` instead.
    """

    def __init__(
        self,
        upscale: Upscale,
        clients: list[SeeThroughClient],
        render_view: RenderView,
        *,
        on_progress: Callable[[TileProgress], None] | None = None,
        stop: threading.Event | None = None,
        blend: bool = True,
        render_views: RenderViews | None = None,
        on_note: Callable[[str], None] | None = None,
        server_back: ServerBack | None = None,
    ) -> None:
        self.upscale = upscale
        self.server_back = server_back  # run(): a server that went away is asked again (TilePool)
        self.clients = clients
        self.render_view = render_view
        self.render_views = render_views
        self.on_progress = on_progress or (lambda event: None)
        self.on_note = on_note or log.warning  # what the user should hear of: a tile sent again
        self.stop = stop or threading.Event()
        self.blend = blend
        self.generated: list[str] = []  # tiles made by this run (the others were kept)
        self._done = 0
        self._lock = threading.Lock()
        self._errors: list[BaseException] = []
        self._halt = threading.Event()  # this frame stops (an error, a cancelled job), not the others
        self._pool_stop: threading.Event | None = None
        self._queued = 0  # jobs in the pool not yet run or skipped
        self._settled = threading.Condition()

    @property
    def halted(self) -> bool:
        stops = (self.stop, self._halt, self._pool_stop)
        return any(event is not None and event.is_set() for event in stops)

    # --- the kept tiles ---------------------------------------------------------------------------

    def _tile_path(self, tile: Tile) -> Path:
        return self.upscale.tiles_dir / f"{tile.name}.npy"

    def _info_path(self, tile: Tile) -> Path:
        return self.upscale.tiles_dir / f"{tile.name}.json"

    def _open_tiles_dir(self) -> None:
        """Create NAME.tiles/, or check that the tiles in it were made for this very upscale."""
        folder = self.upscale.tiles_dir
        identity = self.upscale.identity()
        plan_path = folder / PLAN_FILE
        if plan_path.is_file():
            try:
                kept = json.loads(plan_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                kept = None
            if kept != json.loads(json.dumps(identity)):
                raise SeeThroughError(
                    f"{folder} holds the tiles of another upscale (another picture, size or settings); "
                    "remove that folder to start over, or write to another output"
                )
            return
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(plan_path, json.dumps(identity).encode("utf-8"))

    def _save_tile(self, tile: Tile, image: np.ndarray, boxes: list[int], result: Result) -> None:
        info = {**tile.to_dict(), "boxes": boxes, "prompt": result.prompt, "timings": result.timings}
        write_bytes_atomic(self._info_path(tile), json.dumps(info).encode("utf-8"))
        partial = self._tile_path(tile).with_name(f".{tile.name}.partial.npy")
        with open(partial, "wb") as handle:
            np.save(handle, image)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, self._tile_path(tile))  # last: the .npy marks a finished tile

    def _is_kept(self, tile: Tile) -> bool:
        return tile_is_kept(self.upscale.tiles_dir, tile)

    # --- running ----------------------------------------------------------------------------------

    def run(self) -> SavedImage | None:
        """The saved frame, or None when stopped (finished tiles stay in NAME.tiles/)."""
        pool = TilePool(self.clients, self.stop, self.server_back)
        try:
            self.queue_tiles(pool)
        finally:
            pool.close()
        return self.complete()

    def queue_tiles(self, pool: TilePool) -> None:
        """Render the missing tiles' views on this thread and queue their jobs in ``pool``; returns once
        the last is queued (or the upscale stopped). ``complete()`` waits for them and writes the frame."""
        self._pool_stop = pool.stop
        upscale = self.upscale
        if not upscale.plan.needs_tiles:
            return  # the frame is the base resampled: complete() writes it
        self._open_tiles_dir()
        tiles = upscale.tiles
        renders = view_renders(upscale.plan, upscale.frame_layout, upscale.tiles_dir, tiles)
        pending = renders.tiles
        for tile in tiles:
            if tile not in pending:
                self._done += 1
                self.on_progress(TileProgress(tile, self._done, len(tiles), generated=False))
        try:
            for number, tile in enumerate(pending):
                if self.halted:
                    break
                if number == 1 and not self._render_shared_view(renders.shared):
                    self._halt.set()
                    break
                condition = self.render_view(
                    tile_layout(upscale.frame_layout, upscale.plan, tile),
                    view_folder(upscale.tiles_dir, tile),
                )
                if condition is None:  # the render was stopped: so is the upscale
                    self._halt.set()
                    break
                request, boxes = tile_request(upscale, tile, condition)
                with self._settled:
                    self._queued += 1
                if not pool.put(self, tile, request, boxes):
                    self._settle()
                    break
        except BaseException:
            self._halt.set()  # the jobs already queued are skipped, the running ones cancelled
            raise

    @property
    def settled(self) -> bool:
        """Every queued tile has run, failed or been skipped: complete() has nothing to wait for."""
        with self._settled:
            return self._queued == 0

    def complete(self) -> SavedImage | None:
        """Wait for the queued tiles; the saved frame, or None when stopped (the finished tiles stay).
        Raises the first tile's error."""
        upscale = self.upscale
        if not upscale.plan.needs_tiles:
            base = upscale.plan.base
            frame = sample_view(upscale.base_image, base.rect, base.scale, 0, 0, *upscale.plan.frame_size)
            return self._write(frame, [])
        with self._settled:
            while self._queued:
                self._settled.wait(0.2)
        if self._errors:
            raise self._errors[0]
        if self.halted or not all(self._is_kept(t) for t in self.upscale.tiles):
            return None
        return self._finish()

    def _render_shared_view(self, shared: tuple[Layout, Path, list[ViewCrop]] | None) -> bool:
        """The other tiles' views cut from one render (with render_views, for two tiles or more);
        False when it was stopped."""
        return self.render_views is None or shared is None or self.render_views(*shared)

    def _run_queued(
        self,
        client: SeeThroughClient,
        tile: Tile,
        request: GenerateRequest,
        boxes: list[int],
        give_back: bool = False,
    ) -> None:
        """A queued tile's job, on a pool thread: run, or skipped when this upscale has stopped. With
        ``give_back``, a server that went away raises _ServerGoneError and the tile stays queued."""
        settled = True
        try:
            if not self.halted:
                self._run_tile_sent_again(client, tile, request, boxes)
        except SeeThroughError as exc:
            if give_back and server_went_away(exc) and not self.halted:
                settled = False
                raise _ServerGoneError(str(exc)) from exc
            self._record(exc)
        except BaseException as exc:  # noqa: BLE001 - complete() raises it on the caller's thread
            self._record(exc)
        finally:
            if settled:
                self._settle()

    def _run_tile_sent_again(
        self, client: SeeThroughClient, tile: Tile, request: GenerateRequest, boxes: list[int]
    ) -> None:
        """The tile's job; sent again when the server lost it (it restarted), as every job is."""

        def lost(_: JobLostError) -> None:
            self.on_note(f"the server lost {tile.name} (restarted?); sending it again")

        send_until_done(lambda: self._run_tile(client, tile, request, boxes), on_lost=lost, what=tile.name)

    def _record(self, exc: BaseException) -> None:
        """The frame fails with ``exc`` (the first one recorded); its other queued tiles are skipped."""
        with self._lock:
            self._errors.append(exc)
        self._halt.set()

    def _no_server(self, tile: Tile, reason: str) -> None:
        self._record(SeeThroughError(f"{tile.name} not generated: no server is left (last: {reason})"))

    def _settle(self) -> None:
        with self._settled:
            self._queued -= 1
            self._settled.notify_all()

    def _run_tile(
        self, client: SeeThroughClient, tile: Tile, request: GenerateRequest, boxes: list[int]
    ) -> None:
        total = len(self.upscale.tiles)
        job: Job = client.submit(request)
        for event in job.events():
            if self.halted:
                job.cancel()
                return
            if isinstance(event, Progress):
                with self._lock:
                    done = self._done
                self.on_progress(TileProgress(tile, done, total, event.step, event.total))
            elif isinstance(event, Result):
                self._save_tile(tile, event.image, boxes, event)
                with self._lock:
                    self._done += 1
                    self.generated.append(tile.name)
                    done = self._done
                self.on_progress(TileProgress(tile, done, total))
                return
            else:
                self._halt.set()  # cancelled on the server: this upscale stops
                return
        raise SeeThroughError(f"the job of {tile.name} ended without a result")

    def _finish(self) -> SavedImage:
        upscale = self.upscale
        blend = TileBlend(upscale.plan, blend=self.blend)
        infos = []
        for tile in upscale.tiles:
            blend.add(tile, np.load(self._tile_path(tile)))
            info = json.loads(self._info_path(tile).read_text(encoding="utf-8"))
            info["kept"] = tile.name not in self.generated  # made by an interrupted run, resumed
            infos.append(info)
        if upscale.reuse is None:
            frame = blend.result()
        else:  # the refined tiles over what the edit changed; elsewhere the previous frame, exactly
            frame = upscale.reuse.composite(blend.total)
            infos = sorted(infos + upscale.reuse.record(upscale.plan), key=lambda info: info["name"])
        saved = self._write(frame, infos)
        shutil.rmtree(self.upscale.tiles_dir, ignore_errors=True)  # the frame is written: tiles go
        return saved

    def _write(self, frame: np.ndarray, tiles: list[dict[str, Any]]) -> SavedImage:
        upscale = self.upscale
        record = upscale_record(upscale, tiles)
        return save_image(frame, record, Destination(upscale.out_path, upscale.source, sidecar=True))


def upscale_record(upscale: Upscale, tiles: list[dict[str, Any]]) -> GenerationRecord:
    """The frame's record: the base picture's (its seed, prompt, settings) at the frame's size, with
    ``upscale`` holding both stages: the base's size, seed and pixels' sha256, the tile grid, overlap,
    strength, and each tile's rectangle, seed and boxes (and ``kept``: made by an earlier, interrupted
    run; ``reused``: the previous frame's, which an edit did not reach; ``reuses`` names that frame)."""
    base = upscale.base_record
    stage = upscale.plan.to_record()
    stage["base"]["record_timings"] = base.timings
    stage["base"]["pixels_sha256"] = pixels_sha256(upscale.base_image)  # an edit's frame_reuse checks it
    stage["steps"] = upscale.steps
    stage["tiles"] = tiles
    if upscale.reuse is not None:
        stage["reuses"] = upscale.reuse.origin
    width, height = upscale.plan.frame_size
    return replace(
        base,
        width=width,
        height=height,
        layout=upscale.frame_layout.to_dict(),
        source=dict(upscale.source),
        upscale=stage,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
