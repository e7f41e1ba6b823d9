"""One job at a time: sockets and renders on a worker thread, bpy on the main thread, a queue between.

A job renders the OSCR image and masks unless the cache has them (in a separate Blender process,
background_render.py), then, for Generate, talks to the server through the client library. The
worker posts events (rendering, rendered, connected, accepted, progress, finished, failed,
cancelled) into a queue. It also writes the result PNG with
its generation record the moment the image arrives, so nothing is lost even if Blender goes down
before the main thread turns it into an image datablock. The main thread drains the queue in
pump(), registered with bpy.app.timers (tests, where timers never fire, call it directly).
A cancel request runs on a short-lived thread of its own: the main thread never waits on a socket.
Regenerate Changed is planned here too (edit_jobs.py): a camera move's reprojection takes seconds.
"""

from __future__ import annotations

import logging
import queue
import shutil
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from seethrough_core.client import (
    Job,
    SeeThroughClient,
    ServerError,
    ServerUnavailableError,
)
from seethrough_core.edit_chain import remember_sources
from seethrough_core.edit_plan import EditPlan, PreviousPicture
from seethrough_core.errors import SeeThroughError
from seethrough_core.frame_reuse import FrameReuse, frame_reuse, same_frame_view, tiles_an_edit_reaches
from seethrough_core.generate_and_save import (
    Destination,
    SavedImage,
    base_path_for,
    frame_path_for,
    generate_and_save,
    safe_name,
    tiles_dir_for,
)
from seethrough_core.generation_settings import GenerationSettings
from seethrough_core.in_view import boxes_in_view
from seethrough_core.keys import ClientKeys
from seethrough_core.layout import Layout
from seethrough_core.protocol import GenerateRequest, InfoReply
from seethrough_core.record import GenerationRecord
from seethrough_core.rendered_layout import RenderedLayout, reusable
from seethrough_core.server_away import (
    Pause,
    ServerStayedAwayError,
    send_until_done,
    server_went_away,
    wait_until_back,
)
from seethrough_core.upscale_plan import UpscalePlan, ViewCrop, tile_layout
from seethrough_core.upscale_run import (
    PLAN_FILE,
    TileProgress,
    Upscale,
    UpscaleRunner,
    resume_or_start_over,
    shared_view_rendered,
    started_over_note,
    view_folder,
    view_renders,
)

from .background_render import RenderTask, render_task, render_view, render_views, run_render
from .edit_jobs import EditRequest, ResultEdit
from .render_ahead import AHEAD

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobSpec:
    """Everything the worker needs, captured on the main thread (the worker never reads bpy).

    Exactly one of `oscr` (the cache had the render) and `render` (run it first) is set. `settings`
    were checked before anything was rendered; the request is made once the OSCR image exists. A job
    with an `edit_request` plans it first and goes on with the spec `with_edit` gives.
    """

    endpoint: str
    keys: ClientKeys | None  # CURVE keys, or None for a plain connection
    timeout_s: float
    retry_s: float  # how long a server that went away during the job is asked again (0: the job fails)
    settings: GenerationSettings
    metadata: dict[str, Any]  # returned with the result: scene, camera, client
    layout: Layout
    scene_name: str
    camera_name: str
    out_dir: Path
    oscr: RenderedLayout | None = None
    render: RenderTask | None = None
    generate: bool = True  # False: Render OSCR, no server involved
    edit: ResultEdit | None = None  # Regenerate Changed / Vary Box: what the result is made from
    edit_request: EditRequest | None = None  # Regenerate Changed, to be planned on the job's thread
    upscale: UpscaleJob | None = None  # the frame at the render size, made from the base picture
    shot_frame: int | None = None  # Generate Frames: the scene frame this picture is (frame_sequence.py)
    shot_settings: dict[str, Any] | None = None  # and the shot's settings, kept in its record's source
    # the server answered before (a shot's earlier frame): silent at the first contact, it is waited for
    # too; otherwise a wrong address or a server not started says so within the timeout
    answered_before: bool = False
    # names the job's picture; chosen here so an edit's record can name it before it is generated
    file_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def image_name(self) -> str:
        name = f"{self.scene_name} {self.camera_name} seed {self.settings.seed}"
        if self.shot_frame is not None:
            name = f"{name} frame {self.shot_frame}"
        if self.upscale is not None and self.upscale.base is not None:
            return f"{name} {self.upscale.size_text}"
        return name if self.edit is None else f"{name} {self.edit.kind}"

    @property
    def source(self) -> dict[str, Any]:
        """Where the picture comes from, for its record; a frame of a shot adds the shot's settings (a
        rerun keeps the frame only for the same)."""
        source = {"scene": self.scene_name, "camera": self.camera_name, "server": self.endpoint}
        return source if self.shot_settings is None else {**source, "shot": dict(self.shot_settings)}

    @property
    def image_path(self) -> Path:
        """Where the job's picture is saved (the base picture when an upscale follows)."""
        path = self.out_dir / f"{safe_name(self.image_name)}_{self.file_id}.png"
        return base_path_for(path) if self.upscale is not None else path

    def with_edit(self, plan: EditPlan, parent_image: str) -> JobSpec:
        """The job making ``plan``'s picture from the result ``parent_image``. Its record's pixel sources
        name the file it is saved at (the name says the edit's kind), and they are remembered, so the
        next edit of the picture finds them without walking back through its chain."""
        edit = ResultEdit.of(plan, parent_image)
        spec = replace(self, settings=plan.settings, edit=edit, edit_request=None)
        plan = plan.saved_as(str(spec.image_path))
        if plan.sources is not None:
            remember_sources(plan.sources, plan.parent["sha256"])
        return replace(spec, edit=replace(edit, parent=plan.parent))


@dataclass(frozen=True)
class UpscaleJob:
    """The second stage (docs/upscale.md): the base picture refined in tiles into the frame.

    `base` None: the job's own generation is the base (Generate above the model's size, or an edit of a
    frame's base); otherwise the Upscale button's result, and the job generates nothing else."""

    plan: UpscalePlan
    frame_layout: Layout  # the layout at the frame's resolution
    steps: int
    guidance: float
    engine: str
    blender_binary: str  # for the tile views' background renders (background_render.render_task)
    base: PreviousPicture | None = None
    base_file: Path | None = None  # `base`'s PNG file, recorded as the frame's base (edits find it there)
    # where the frame goes, named after `base_file` (NAME.png for NAME_base.png, else NAME_WxH.png) while
    # that frame is not written, so the tiles a stopped upscale kept beside it are resumed; None: a new name
    frame_path: Path | None = None
    # an edit of a frame: the frame and the base it was upscaled from; the tiles the edit does not reach
    # keep the frame's pixels (frame_reuse.py)
    edited_frame: PreviousPicture | None = None
    edited_base: PreviousPicture | None = None

    @property
    def size_text(self) -> str:
        return f"{self.plan.frame_width}x{self.plan.frame_height}"


# --- events: worker -> main thread ------------------------------------------------------------


@dataclass(frozen=True)
class Rendering:
    """Posted when the render starts and about once a second while it runs (the panel redraws)."""

    elapsed_s: float


@dataclass(frozen=True)
class PlanningEdit:
    """Regenerate Changed's plan is being made (after a camera move: the reprojection)."""


@dataclass(frozen=True)
class EditPlanned:
    summary: str  # what regenerates


@dataclass(frozen=True)
class Rendered:
    oscr: RenderedLayout
    final: bool  # the job's last event (Render OSCR); Generate goes on to the server


@dataclass(frozen=True)
class Connected:
    model: str
    is_noise: bool
    queue_length: int


@dataclass(frozen=True)
class JobAccepted:
    job_id: str
    queue_position: int


@dataclass(frozen=True)
class Step:
    step: int
    total: int
    elapsed_s: float
    preview: np.ndarray | None


@dataclass(frozen=True)
class TileStep:
    """An upscale's progress: a tile's view rendering (step None, rendering), its step, or its end."""

    tile: str
    done: int  # tiles finished
    total: int
    step: int | None = None
    steps: int | None = None
    rendering: bool = False
    kept: int = 0  # tiles kept from an interrupted upscale, resumed
    views: int = 1  # rendering: the views of this many tiles, in one render


@dataclass(frozen=True)
class UpscaleNote:
    """Something the artist should know about the upscale's kept tiles (they were replaced)."""

    text: str


@dataclass(frozen=True)
class UpscaleStopped:
    """The upscale stopped (Cancel or a failure) with ``done`` of ``total`` tiles kept in NAME.tiles/ for
    Upscale to resume. ``base_png``: the job's own base picture, which goes to the Results list for that
    (None: the Upscale button's result, there already)."""

    done: int
    total: int
    size_text: str
    base_png: Path | None = None
    base_record: GenerationRecord | None = None

    @property
    def note(self) -> str:
        """For the panel."""
        where = "its base picture (now in Results)" if self.base_png is not None else "the same result"
        return (
            f"{self.done} of {self.total} tiles of the upscale to {self.size_text} are kept: "
            f"Upscale on {where} resumes it"
        )

    @property
    def entry(self) -> str:
        """For the base picture's entry in the Results list."""
        return (
            f"base picture: its upscale to {self.size_text} stopped with {self.done} of {self.total} "
            "tiles kept; Upscale resumes it"
        )


@dataclass(frozen=True)
class ServerAway:
    """The server went away during the job; it is asked again for up to ``retry_s``."""

    reason: str
    retry_s: float


@dataclass(frozen=True)
class ServerIsBack:
    """The server that went away answers again (or restarted and lost the job): the job is sent again."""

    lost: bool = False


@dataclass(frozen=True)
class Finished:
    png_path: Path
    record: GenerationRecord


@dataclass(frozen=True)
class Failed:
    message: str


@dataclass(frozen=True)
class Stopped:
    """The job was cancelled before it produced an image."""


Event = (
    PlanningEdit
    | EditPlanned
    | Rendering
    | Rendered
    | Connected
    | JobAccepted
    | Step
    | TileStep
    | UpscaleNote
    | UpscaleStopped
    | ServerAway
    | ServerIsBack
    | Finished
    | Failed
    | Stopped
)


# --- the status the panel shows (main thread only) --------------------------------------------

RENDERING_MESSAGE = "Rendering the OSCR image and masks in a background Blender process"


@dataclass
class JobStatus:
    # starting, planning, rendering, queued, running, upscaling, waiting (for a server that went away),
    # cancelling, done, failed, cancelled
    state: str = "starting"
    message: str = "Connecting to the server ..."
    step: int = 0
    total: int = 0
    elapsed_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    image_name: str = ""
    model: str = ""
    is_noise: bool = False
    note: str = ""  # the upscale's kept tiles: resumed, replaced, or kept for a resume
    png_path: Path | None = None  # the finished picture's file

    @property
    def active(self) -> bool:
        return self.state in (
            "starting",
            "planning",
            "rendering",
            "queued",
            "running",
            "upscaling",
            "waiting",
            "cancelling",
        )

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0


# --- the worker -------------------------------------------------------------------------------


class GenerationJob:
    """One job's worker thread. ``spec`` is replaced once, by the worker, when it plans an edit request:
    the main thread reads it for the events that follow (the history names the edit)."""

    views_ahead = True  # tile views render while the base is generated (a benchmark turns it off)

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.events: queue.Queue[Event] = queue.Queue()
        self.status = JobStatus() if spec.generate else JobStatus("rendering", RENDERING_MESSAGE)
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._server_job: Job | None = None  # once the server accepted
        self._tiles_done = 0  # the upscale's finished tiles (worker thread)
        self._tiles_kept = 0  # of those, kept from an interrupted upscale
        self._ahead_folders: list[Path] = []  # tile views queued to render while the base is generated
        self._new_frame_path: Path | None = None  # the frame's name, when not NAME.png of NAME_base.png
        self._thread = threading.Thread(target=self._run, name="seethrough-generate", daemon=True)
        self.local_restarts = 0  # main thread: how often the add-on's local server was started again for it

    def start(self) -> None:
        self._thread.start()

    @property
    def thread_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    def request_cancel(self) -> None:
        """Main thread: ask the server to stop the job, without waiting for it."""
        self._cancel.set()
        if self.status.active:
            self.status.state, self.status.message = "cancelling", "Cancelling ..."
        with self._lock:
            server_job = self._server_job
        if server_job is not None:
            threading.Thread(target=self._send_cancel, args=(server_job,), daemon=True).start()
        # Not accepted yet: the worker cancels right after the server accepts.

    def _send_cancel(self, server_job: Job) -> None:
        try:
            server_job.cancel()
        except SeeThroughError as exc:  # the job's own events report the outcome
            log.info("cancel request failed: %s", exc)

    def _post(self, event: Event) -> None:
        self.events.put(event)

    def _run(self) -> None:
        spec = self.spec
        try:
            if not spec.generate:
                oscr = self._oscr()
                self._post(Rendered(oscr, final=True) if oscr is not None else Stopped())
                return
            with SeeThroughClient(spec.endpoint, spec.timeout_s, keys=spec.keys) as client:
                # The server first: a wrong address should not cost a whole render to find out.
                info = self._first_contact(client)
                if info is not None:
                    self._post(Connected(str(info.model.get("name", "")), info.is_noise, info.queue_length))
                    if spec.edit_request is not None:
                        self._plan_edit(spec.edit_request)
                upscale = spec.upscale
                if info is None:
                    saved = None  # cancelled while the server was away
                elif upscale is not None and upscale.base is not None:  # the Upscale button
                    base = upscale.base
                    out_path = upscale.frame_path or self._frame_path()
                    saved = self._upscale(client, base.image, base.record, out_path, upscale.base_file)
                else:
                    try:
                        saved = self._sent_again_if_away(client, lambda: self._generate(client))
                        if saved is not None and upscale is not None:
                            saved = self._upscale_generated(client, saved)
                    finally:
                        self._drop_views_ahead()
                self._post(Finished(saved.image_path, saved.record) if saved is not None else Stopped())
        except ServerUnavailableError as exc:
            self._post(Failed(str(exc)))
        except ServerError as exc:
            self._post(Failed(f"the server refused or failed the job ({exc.code}): {exc}"))
        except SeeThroughError as exc:
            self._post(Failed(str(exc)))
        except Exception as exc:  # a bug: still end the job, with the traceback in the console
            traceback.print_exc()
            self._post(Failed(f"unexpected error: {type(exc).__name__}: {exc}"))

    def _first_contact(self, client: SeeThroughClient) -> InfoReply | None:
        """The server's info; a silent server is waited for only when it answered before (a shot's earlier
        frame). None: cancelled meanwhile."""
        while True:
            try:
                return client.info()
            except SeeThroughError as exc:
                if not (self.spec.answered_before and server_went_away(exc)):
                    raise
                if not self._server_back(client, str(exc)):
                    return self._stayed_away(exc)

    def _sent_again_if_away(
        self, client: SeeThroughClient, send: Callable[[], SavedImage | None]
    ) -> SavedImage | None:
        """``send()``, sent again when the server went away and came back within the job's retry time,
        or restarted and lost the job, as every job is (server_away.py). None: cancelled."""
        try:
            return send_until_done(
                send,
                on_lost=lambda _: self._post(ServerIsBack(lost=True)),
                server_back=lambda reason: self._server_back(client, reason),
            )
        except ServerStayedAwayError as exc:
            return self._stayed_away(exc.__cause__ or exc)

    def _server_back(self, client: SeeThroughClient, reason: str, pause: Pause | None = None) -> bool:
        """Ask the server that went away again, with growing pauses, for up to the job's retry time; True
        once it answers. False when it did not come back, or Cancel (``pause``: the upscale's tile pool's,
        which also ends once the upscale stops) ended the waiting."""
        retry_s = self.spec.retry_s
        if retry_s <= 0 or self._cancel.is_set():
            return False
        self._post(ServerAway(reason, retry_s))
        retry = wait_until_back(client, retry_s, self.spec.timeout_s, pause or self._cancel.wait)
        if retry.back:
            self._post(ServerIsBack())
        return retry.back

    def _stayed_away(self, exc: BaseException) -> None:
        """After a server that went away was waited for in vain: None when Cancel ended the waiting."""
        if self._cancel.is_set():
            return None
        if self.spec.retry_s <= 0:
            raise exc
        raise ServerUnavailableError(f"{exc}; it did not come back within {self.spec.retry_s:g} s") from exc

    def _plan_edit(self, request: EditRequest) -> None:
        """Plan Regenerate Changed here, off Blender's main thread; the job goes on with its edit."""
        self._post(PlanningEdit())
        self.spec = self.spec.with_edit(request.plan(), request.parent_image)
        self._post(EditPlanned(self.spec.edit.summary))

    def _generate(self, client: SeeThroughClient) -> SavedImage | None:
        """The job's picture (the base, when an upscale follows); None if it was cancelled."""
        spec = self.spec
        oscr = None if self._cancel.is_set() else self._oscr()
        if oscr is None:
            return None
        if not oscr.cached:
            self._post(Rendered(oscr, final=False))
        if spec.upscale is not None and self.views_ahead and not self._ahead_folders:
            self._ahead_folders = self._queue_views_ahead()
        edit = spec.edit
        view = boxes_in_view(oscr.token_grids)  # boxes not in the frame stay out of the prompt
        request = GenerateRequest.for_settings(
            view.settings(spec.settings),
            oscr.oscr_path.read_bytes(),  # PNG bytes as rendered: no decode here
            view.token_grids(oscr.token_grids),  # the amodal masks pooled by the core
            spec.metadata,
            edit=edit.edit if edit is not None else None,
        )
        image_path = spec.image_path  # with an upscale, the frame takes the plain name (NAME_base.png here)
        # Written right away, off the main thread (encoding takes time); an image that arrived
        # is never dropped: if the output folder fails, the temp folder takes it.
        return generate_and_save(
            client,
            request,
            spec.layout,
            Destination(
                image_path,
                spec.source,
                fallback_dir=Path(tempfile.gettempdir()) / "seethrough-results",
                parent=edit.parent if edit is not None else None,
                region=edit.region if edit is not None else None,
                reprojected=edit.reprojected if edit is not None else None,
                out_of_view=view.left_out,
            ),
            on_accepted=self._accepted,
            on_progress=lambda p: self._post(Step(p.step, p.total, p.elapsed_s, p.preview)),
        )

    def _frame_path(self) -> Path:
        return self.spec.out_dir / f"{safe_name(self.spec.image_name)}_{uuid.uuid4().hex[:8]}.png"

    def _frame_of(self, base_path: Path) -> Path:
        """Where the frame made from the base picture at ``base_path`` goes: NAME.png beside
        NAME_base.png, else a new name, chosen once for the job."""
        frame_path = frame_path_for(base_path)
        if frame_path is not None:
            return frame_path
        if self._new_frame_path is None:
            self._new_frame_path = self._frame_path()
        return self._new_frame_path

    def _drop_views_ahead(self) -> None:
        """The job ends: the tile views it queued and did not use are given up, and a tiles folder that
        holds only them (the upscale never started: cancelled, or the base failed) is removed."""
        if not self._ahead_folders:
            return
        AHEAD.forget(self._ahead_folders)
        tiles_dir = tiles_dir_for(self._frame_of(self.spec.image_path))
        if tiles_dir.is_dir() and not (tiles_dir / PLAN_FILE).exists():
            shutil.rmtree(tiles_dir, ignore_errors=True)

    def _queue_views_ahead(self) -> list[Path]:
        """Queue the views of the tiles the upscale will refine, to render in the background process while
        the server generates the base (render_ahead.py); their folders. An edit that keeps the frame's
        camera refines only the tiles its region reaches (frame_reuse). None are queued where kept tiles
        may resume: what they need is known only from the base."""
        spec, job = self.spec, self.spec.upscale
        assert job is not None
        tiles_dir = tiles_dir_for(self._frame_of(spec.image_path))
        if tiles_dir.exists():
            return []
        tiles = None
        edit, before = spec.edit, job.edited_frame
        if edit is not None and edit.region is not None and before is not None:
            if same_frame_view(before.layout, job.frame_layout):
                tiles = tiles_an_edit_reaches(edit.region, job.plan)
        renders = view_renders(job.plan, job.frame_layout, tiles_dir, tiles)
        views = [renders.first] if renders.first is not None else []
        if renders.shared is None:  # one tile after the first: its own view
            views += [
                (tile_layout(job.frame_layout, job.plan, t), view_folder(tiles_dir, t))
                for t in renders.tiles[1:]
            ]
        tasks = [render_task(layout, folder, job.engine, job.blender_binary) for layout, folder in views]
        if renders.shared is not None:
            whole, folder, crops = renders.shared
            tasks.append(render_task(whole, folder, job.engine, job.blender_binary, crops))
        AHEAD.queue(tasks, first=True)  # before the next frames' renders: needed once the base is back
        return [task.out_dir for task in tasks]

    def _upscale_generated(self, client: SeeThroughClient, base: SavedImage) -> SavedImage | None:
        """The generated base made into the frame; the base PNG stays beside it (NAME_base.png)."""
        if base.result is None:
            raise SeeThroughError("the base picture came back without its pixels")
        frame_path = self._frame_of(base.image_path)
        job, edit = self.spec.upscale, self.spec.edit
        reuse = None
        if job.edited_frame is not None and job.edited_base is not None and edit is not None:
            reuse = frame_reuse(
                job.edited_frame, job.edited_base.image, base.result.image,
                plan=job.plan, frame_layout=job.frame_layout,
                steps=job.steps, guidance=job.guidance, region=edit.region,
            )  # fmt: skip
        try:
            return self._upscale(client, base.result.image, base.record, frame_path, base.image_path, reuse)
        except SeeThroughError as exc:
            raise SeeThroughError(f"{exc} (the base picture is kept at {base.image_path})") from None

    def _upscale(
        self,
        client: SeeThroughClient,
        image: np.ndarray,
        record: GenerationRecord,
        out_path: Path,
        base_path: Path | None = None,
        reuse: FrameReuse | None = None,
    ) -> SavedImage | None:
        """The upscale stage, run by the core's tile loop on this worker thread: each tile's view renders
        in the background Blender process, its job on the server; Cancel stops both. Tiles kept in
        NAME.tiles/ by an interrupted upscale of the same picture and settings are resumed; stopped, the
        finished tiles stay there for the next Upscale."""
        spec, job = self.spec, self.spec.upscale
        assert job is not None
        source = spec.source
        if base_path is not None:
            source["base"] = str(base_path)
        elif job.base is not None:
            source["upscale_of"] = job.base.label
        asked = Upscale(
            plan=replace(job.plan, seed=record.seed),
            frame_layout=job.frame_layout,
            base_image=image,
            base_record=record,
            out_path=out_path,
            steps=job.steps,
            guidance=job.guidance,
            source=source,
            reuse=reuse,
        )
        total = len(asked.tiles)
        if reuse is not None:
            self._post(UpscaleNote(reuse.summary(asked.plan)))

        def render(view: Layout, folder: Path):
            AHEAD.claim(folder, self._cancel)  # rendered while the base was generated, or rendering now
            self._post(TileStep(folder.name, self._tiles_done, total, rendering=True, kept=self._tiles_kept))
            return render_view(view, folder, job.engine, job.blender_binary, self._cancel)

        def render_shared(whole: Layout, folder: Path, crops: list[ViewCrop]) -> bool:
            AHEAD.claim(folder, self._cancel)
            if shared_view_rendered(whole, folder, crops, job.engine):
                return True  # rendered while the base was generated
            first = crops[0].folder.name
            self._post(
                TileStep(
                    first, self._tiles_done, total, rendering=True, kept=self._tiles_kept, views=len(crops)
                )
            )
            return render_views(whole, folder, crops, job.engine, job.blender_binary, self._cancel)

        def on_progress(event: TileProgress) -> None:
            self._tiles_done = event.done
            self._tiles_kept += not event.generated
            self._post(
                TileStep(event.tile.name, event.done, total, event.step, event.steps, kept=self._tiles_kept)
            )

        saved = None
        try:
            upscale, started_over = resume_or_start_over(asked)
            if started_over:
                self._post(UpscaleNote(started_over_note(upscale)))
            runner = UpscaleRunner(
                upscale,
                [client],
                render,
                on_progress=on_progress,
                stop=self._cancel,
                render_views=render_shared,
                on_note=lambda text: self._post(UpscaleNote(text)),
                server_back=self._server_back,
            )
            saved = runner.run()
        finally:
            if saved is None:  # the finished tiles stay in NAME.tiles/: Upscale resumes them
                own = job.base is None  # the job's own base: the Results list gets it, to resume from
                self._post(
                    UpscaleStopped(
                        self._tiles_done,
                        total,
                        job.size_text,
                        base_path if own else None,
                        record if own else None,
                    )
                )
        return saved

    def _oscr(self) -> RenderedLayout | None:
        """The cached render, or a background render now; None if it was cancelled."""
        spec = self.spec
        if spec.oscr is not None:
            return spec.oscr
        task = spec.render
        if task is None:
            raise SeeThroughError("the job has neither an OSCR render nor a render task")
        self._post(Rendering(0.0))
        AHEAD.claim(task.out_dir, self._cancel)  # Generate Frames may have rendered it, or be rendering it
        ahead = reusable(task.out_dir, task.layout, task.engine)
        if ahead is not None:
            return ahead
        with AHEAD.held():
            return run_render(task, self._cancel, lambda elapsed: self._post(Rendering(elapsed)))

    def _accepted(self, server_job: Job) -> None:
        with self._lock:
            self._server_job = server_job
        self._post(JobAccepted(server_job.id, server_job.queue_position))
        if self._cancel.is_set():
            server_job.cancel()


# --- the main thread's side -------------------------------------------------------------------

Applier = Callable[[GenerationJob, Event], None]


class JobRunner:
    """Holds the current job (at most one) and the last one's status for the panel."""

    def __init__(self) -> None:
        self.job: GenerationJob | None = None

    @property
    def active(self) -> bool:
        return self.job is not None and (self.job.status.active or self.job.thread_alive)

    @property
    def status(self) -> JobStatus | None:
        return self.job.status if self.job is not None else None

    def start(self, spec: JobSpec) -> GenerationJob:
        if self.active:
            raise SeeThroughError("a generation is already running; cancel it or wait for it")
        self.job = GenerationJob(spec)
        self.job.start()
        return self.job

    def pump(self, apply: Applier) -> bool:
        """Apply every waiting event on the main thread; True while the job still runs."""
        job = self.job
        if job is None:
            return False
        while True:
            try:
                event = job.events.get_nowait()
            except queue.Empty:
                break
            _update_status(job.status, event)
            apply(job, event)
        return job.status.active or job.thread_alive or not job.events.empty()

    def shutdown(self, timeout_s: float = 1.0) -> None:
        if self.job is not None and self.job.thread_alive:
            self.job.request_cancel()
            self.job.join(timeout_s)


def _update_status(status: JobStatus, event: Event) -> None:
    if isinstance(event, PlanningEdit):
        if status.state != "cancelling":
            status.state = "planning"
            status.message = "Planning the edit: what changed, and what the camera keeps"
    elif isinstance(event, EditPlanned):
        if status.state != "cancelling":
            status.message = f"Regenerating: {event.summary}"
    elif isinstance(event, Rendering):
        if status.state != "cancelling":
            status.state = "rendering"
            status.message = RENDERING_MESSAGE
    elif isinstance(event, Rendered):
        message = f"OSCR rendered in {event.oscr.seconds:.1f} s"
        if event.final:
            status.state, status.message = "done", message
        elif status.state != "cancelling":
            status.state, status.message = "rendering", message
    elif isinstance(event, Connected):
        status.model, status.is_noise = event.model, event.is_noise
        if status.state != "cancelling":
            status.message = f"Connected: {event.model}" + (
                " (random weights: noise)" if event.is_noise else ""
            )
    elif isinstance(event, JobAccepted):
        if status.state != "cancelling":
            status.state = "queued" if event.queue_position else "running"
            status.message = (
                f"Queued behind {event.queue_position} job(s)" if event.queue_position else "Generating ..."
            )
    elif isinstance(event, Step):
        status.step, status.total, status.elapsed_s = event.step, event.total, event.elapsed_s
        if status.state != "cancelling":
            status.state = "running"
            status.message = f"Step {event.step}/{event.total}, {event.elapsed_s:.1f} s"
    elif isinstance(event, TileStep):
        steps = event.steps or 1
        status.step = event.done * steps + (event.step or 0)  # the bar covers every tile's steps
        status.total = event.total * steps
        if event.kept:
            status.note = f"resumed: {event.kept} of {event.total} tiles kept"
        if status.state != "cancelling":
            status.state = "upscaling"
            if event.rendering:
                doing = "rendering its OSCR view"
            elif event.step is not None:
                doing = f"step {event.step}/{event.steps}"
            else:
                doing = "done"
            tile = min(event.done + (event.step is not None or event.rendering), event.total)
            status.message = f"Upscaling: tile {tile}/{event.total} ({event.tile}) {doing}"
            if event.views > 1:  # while the first tile generates, the others' views render together
                status.message = f"Upscaling: rendering the OSCR views of {event.views} more tiles in one go"
            if status.note:
                status.message += f"; {status.note}"
    elif isinstance(event, UpscaleNote):
        status.note = event.text
    elif isinstance(event, UpscaleStopped):
        status.note = event.note
    elif isinstance(event, ServerAway):
        if status.state != "cancelling":
            status.state = "waiting"
            status.message = (
                f"The server went away ({event.reason}). Asking it again for up to {event.retry_s:g} s: "
                "start it again (Server panel) and the job goes on, or Cancel"
            )
    elif isinstance(event, ServerIsBack):
        if status.state != "cancelling":
            status.state = "running"
            why = "The server restarted and lost the job" if event.lost else "The server is back"
            status.message = f"{why}: sending the job again"
    elif isinstance(event, Finished):
        status.state, status.message = "done", f"Done: seed {event.record.seed}"
        status.png_path = event.png_path
    elif isinstance(event, Failed):
        status.state, status.message = "failed", event.message + (f" ({status.note})" if status.note else "")
    elif isinstance(event, Stopped):
        status.state = "cancelled"
        status.message = "Cancelled" + (f": {status.note}" if status.note else "")


RUNNER = JobRunner()
