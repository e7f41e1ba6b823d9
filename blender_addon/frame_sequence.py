"""Generate Frames: the scene's frame range as one steady shot (docs/addon.md, Frames of an animation);
Draft Frames: the same at the draft size, a quick look at the shot.

The first frame is generated; every later frame is the frame before it brought to its own layout, as
Regenerate Changed brings a result: only what changed regenerates, after a camera move the picture is
kept reprojected (all of it regenerates past the Reproject Limit), and a frame whose layout did not
change is the frame before, copied. Each frame is a job of its own (generation_jobs.py), started here
on the main thread from the pump once the frame before is over. Every frame's layout is read when the
artist presses Generate Frames, so working on the scene meanwhile changes nothing of the shot.

The frames are files, not results: each is written at once as FOLDER/NNNN.png (an image sequence
Blender, a compositor or an editor reads as it is), nothing is packed into the .blend, and the shot
is shown behind the camera when it is done. Generate Frames again with the same seed goes on after the
last frame written for the same layouts and settings (each frame's record keeps them). Main thread only.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import bpy

from seethrough_core.edit_plan import read_previous_file
from seethrough_core.edit_region import box_changes, full_regeneration_reason
from seethrough_core.errors import SeeThroughError
from seethrough_core.generate_and_save import safe_name
from seethrough_core.layout import Layout
from seethrough_core.record import read_png_file_record
from seethrough_core.time_left import clock, time_left
from seethrough_core.upscale_plan import draft_layout
from seethrough_core.vocabulary import DEFAULT_RENDER_ENGINE

from . import generation, images
from .generation_jobs import RUNNER, GenerationJob, JobSpec
from .headless import run_callback_until_done
from .panel_settings import EDIT_SETTINGS, PanelSettings
from .preferences import Settings
from .render_ahead import AHEAD
from .result_edits import edit_spec, start_at
from .scene_checks import SceneError, scene_layout

FRAME_DIGITS = 4  # 0001.png: the number last, so Blender and editors read the folder as a sequence
SHOT_IMAGE = "SeeThrough Frames"
REMEDY = "Generate Frames again from the first frame: remove the shot's folder"
TEMP_NOTE = (
    "the .blend is not saved and no Output Folder is set, so the frames go to the temp folder, which the "
    "system may empty: save the .blend (they then go beside it) or set an Output Folder to keep them"
)


@dataclass(frozen=True)
class ShotFrame:
    number: int  # the scene frame
    layout: Layout  # the scene's layout at that frame, read when the shot started


def frame_file(folder: Path, number: int) -> Path:
    return folder / f"{number:0{FRAME_DIGITS}d}.png"


def shot_folder(
    settings: Settings, scene_name: str, camera_name: str, seed: int, draft: bool = False
) -> Path:
    """Where a shot's frames go: one folder per scene, camera and seed (and a draft's of its own)."""
    name = f"{camera_name} seed {seed}" + (" draft" if draft else "")
    return settings.scene_dir(scene_name) / "frames" / safe_name(name)


def shot_name(draft: bool) -> str:
    """The button that makes a shot, as the panel names it."""
    return "Draft Frames" if draft else "Generate Frames"


def draft_frame(frame: ShotFrame) -> ShotFrame:
    """The frame of Draft Frames: the same view at the draft size (rendered and generated at that size)."""
    return ShotFrame(frame.number, draft_layout(frame.layout))


def read_frames(scene: bpy.types.Scene, first: int, last: int, step: int = 1) -> list[ShotFrame]:
    """The scene's layout at every ``step``th frame from ``first`` to ``last``; SceneError naming the frame
    where it cannot be used. The scene is put back at the frame it showed."""
    current = scene.frame_current
    frames = []
    try:
        for number in range(first, last + 1, step):
            scene.frame_set(number)
            try:
                frames.append(ShotFrame(number, scene_layout(scene)))
            except SceneError as exc:
                raise SceneError(exc.field, f"frame {number}: {exc}") from None
    finally:
        scene.frame_set(current)
    return frames


def unchanged(before: Layout, after: Layout) -> bool:
    """Whether a frame of layout ``after`` is the picture of ``before`` as it is (nothing to regenerate)."""
    return full_regeneration_reason(before, after) is None and not box_changes(before, after)


def frames_written(folder: Path, frames: list[ShotFrame], shot: dict[str, Any]) -> tuple[int, str]:
    """How many of the shot's first frames are in ``folder`` already, made for these layouts with these
    settings (PanelSettings.shot_settings), and why the next one there is not kept ("": none is there).
    A frame whose layout or settings changed since is made again, and so is every frame after it."""
    for count, frame in enumerate(frames):
        path = frame_file(folder, frame.number)
        if not path.exists():
            return count, ""
        try:
            record = read_png_file_record(path)  # its text chunks only
        except (OSError, ValueError):
            return count, "its file cannot be read"
        if record is None:
            return count, "its file has no SeeThrough record"
        if record.layout != frame.layout.to_dict():
            return count, "its layout changed"
        made_by = shot
        if record.parent is None:  # generated, not edited (or a copy of such a frame): no edit settings
            made_by = {name: value for name, value in shot.items() if name not in EDIT_SETTINGS}
        if why := settings_changed(record.source.get("shot"), made_by):
            return count, why
    return len(frames), ""


def settings_changed(before: object, now: dict[str, Any]) -> str:
    """Why a frame made with the settings ``before`` is not a frame of ``now`` ("": it is), as "the
    settings changed (steps 20 → 28)"."""
    if not isinstance(before, dict):
        return "its record does not hold the settings it was made with"
    changes = [
        f"{name} {_shown(before.get(name))} → {_shown(value)}"
        for name, value in now.items()
        if before.get(name) != value
    ]
    return f"the settings changed ({', '.join(changes)})" if changes else ""


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


class FrameSequence:
    """The shot being made (at most one): its frames, where they go, and how far it got."""

    render_ahead = True  # False: each frame's job renders its own OSCR image (benchmarks/frames_bench.py)

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.state = "idle"  # running, done, failed, cancelled
        self.message = ""
        self.scene_name = ""
        self.settings: Settings | None = None
        self.panel: PanelSettings | None = None
        self.seed = 0
        self.frames: list[ShotFrame] = []
        self.folder = Path()
        self.index = 0  # the frame being made
        self.previous: Path | None = None  # the last frame's picture: what the next frame is made from
        self.kept = self.made = self.copied = 0
        self.draft = False  # Draft Frames
        self.note = ""  # why frames there from before are made again (the panel shows it)
        self.started = 0.0  # time.monotonic() at the press: the pace of the frames made, for the time left
        # which frames need a job: the first, and each whose layout is not the frame before's (a copy)
        self.needs_job: list[bool] = []
        self.jobs = 0  # how many of the frames left at the press need a job
        self.cancel_requested = False
        self.last_job: GenerationJob | None = None  # the job running when the shot ended

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def outcome(self) -> str | None:
        """How the shot ended, while no job has run since (the panel says it instead of that job's)."""
        return self.message if self.state not in ("idle", "running") and self.last_job is RUNNER.job else None

    @property
    def name(self) -> str:
        return shot_name(self.draft)

    @property
    def progress(self) -> str:
        """For the panel: which frame is being made, and the time left at the pace of those made."""
        number = self.frames[self.index].number if self.index < len(self.frames) else self.frames[-1].number
        text = f"Frame {number} ({self.index + 1} of {len(self.frames)})"
        left = time_left(time.monotonic() - self.started, self.made, self.jobs)
        return text if left is None else f"{text}, {clock(left)} left"

    @property
    def fraction(self) -> float:
        """The share of the shot's frames written."""
        return min(self.index / len(self.frames), 1.0) if self.frames else 0.0

    def start(
        self, scene: bpy.types.Scene, settings: Settings, panel: PanelSettings, draft: bool = False
    ) -> str:
        """Read every frame's layout and start the first frame not written yet; returns what is done.
        Every frame is made with ``panel``, the Generate panel's settings of the press. ``draft``: Draft
        Frames, a quick look at the shot: every frame at the draft size, in one pass, with the draft
        preset's speed options. SeeThroughError (nothing started) when a frame's scene or a setting
        cannot be used."""
        if self.running or RUNNER.active:
            raise SeeThroughError("a render or generation is already running; cancel it or wait for it")
        if scene.frame_end < scene.frame_start:
            raise SeeThroughError("the scene's frame range is empty: set Start and End in the Timeline")
        frames = read_frames(scene, scene.frame_start, scene.frame_end, scene.frame_step)
        if draft:
            frames = [draft_frame(frame) for frame in frames]
            panel = replace(panel, upscale_to_render=False)  # a draft is small: one pass
        self._reset()
        self.scene_name, self.settings, self.panel, self.frames = scene.name, settings, panel, frames
        self.draft = draft
        seed = self.seed = panel.seed
        self.folder = shot_folder(settings, scene.name, frames[0].layout.camera.name, seed, draft)
        self.kept, why = frames_written(self.folder, frames, panel.shot_settings())
        self.index = self.kept
        if self.kept:
            self.previous = frame_file(self.folder, frames[self.kept - 1].number)
        self.started = time.monotonic()
        self.needs_job = [True] + [not unchanged(a.layout, b.layout) for a, b in pairwise(frames)]
        self.jobs = sum(self.needs_job[self.kept :])
        self.state = "running"
        props = scene.seethrough  # saved with the .blend: a reopened file offers to resume the shot
        last = props.shot_seed, props.shot_draft, props.shot_done
        props.shot_seed, props.shot_draft, props.shot_done = seed, draft, False
        try:
            self._next(scene)
            if self.render_ahead and self.running:
                self._render_ahead()
        except SeeThroughError:
            self.state = "idle"  # refused before anything was sent: the operator reports why
            props.shot_seed, props.shot_draft, props.shot_done = last
            raise
        kept = f", {self.kept} kept from before" if self.kept else ""
        notes = [TEMP_NOTE] if settings.in_temp else []
        if why:  # the frames there from this one on are replaced: say why
            notes.append(f"frame {frames[self.kept].number} and the frames after it are made again: {why}")
        self.note = "; ".join(notes)
        what = f"{len(frames)} frames (seed {seed}{kept}) into {self.folder}"
        return f"{what}; {self.note}" if self.note else what

    def cancel(self) -> None:
        self.cancel_requested = True
        if RUNNER.job is not None and RUNNER.active:
            RUNNER.job.request_cancel()

    def shutdown(self) -> None:
        """The add-on is disabled: the shot ends here, its renders ahead stopped (the job is the runner's)."""
        if self.running:
            self._end("cancelled", "the add-on was disabled")
        AHEAD.stop()

    def advance(self) -> bool:
        """The pump's call once no job runs: write the frame just made and start the next; True while
        the shot goes on."""
        if not self.running:
            return False
        status = RUNNER.status
        frame = self.frames[self.index]
        if status is None or status.state != "done" or status.png_path is None:
            what = status.message if status is not None else "it never started"
            state = "cancelled" if status is not None and status.state == "cancelled" else "failed"
            self._end(state, f"frame {frame.number} was not made: {what}")
            return False
        try:
            self._write(status.png_path, frame)
        except OSError as exc:
            where = f"it is at {status.png_path}"
            self._end("failed", f"frame {frame.number} could not be written ({exc}); {where}")
            return False
        self.made += 1
        self.index += 1
        scene = bpy.data.scenes.get(self.scene_name)
        if scene is None:
            self._end("failed", f"the scene {self.scene_name!r} is gone")
            return False
        try:
            return self._next(scene)
        except SeeThroughError as exc:
            self._end("failed", f"frame {self.frames[self.index].number}: {exc}")
            return False

    def _next(self, scene: bpy.types.Scene) -> bool:
        """Start the next frame that needs a job, copying the unchanged ones before it; False when the
        shot is complete."""
        while self.index < len(self.frames):
            if self.cancel_requested:
                self._end("cancelled", "cancelled")
                return False
            frame = self.frames[self.index]
            spec = self._job(scene, frame)
            if spec is not None:
                generation.start(spec)
                return True
            assert self.previous is not None  # only a frame after another can be unchanged
            try:
                self._write(self.previous, frame)
            except OSError as exc:
                self._end("failed", f"frame {frame.number} could not be written ({exc})")
                return False
            self.copied += 1
            self.index += 1
        self._end("done", "")
        return False

    def _render_ahead(self) -> None:
        """Queue the OSCR renders of the frames after the one being made, so that each renders while the
        frames before it generate (render_ahead.py): from the end of that frame's own render, or now if
        its job has none to make. A frame that will be a copy renders nothing."""
        settings, panel = self.settings, self.panel
        assert settings is not None and panel is not None
        scene_dir = settings.scene_dir(self.scene_name)
        tasks, seen = [], set()
        for index in range(self.index + 1, len(self.frames)):
            if not self.needs_job[index]:
                continue
            frame = self.frames[index]
            layout, _ = generation.generation_layout(panel, frame.layout, panel.seed)
            _, task = generation.oscr_render(scene_dir, layout, DEFAULT_RENDER_ENGINE)
            if task is not None and task.out_dir not in seen:
                tasks.append(task)
                seen.add(task.out_dir)
        job = RUNNER.job
        AHEAD.queue(tasks, start=job is None or job.spec.render is None)

    def _job(self, scene: bpy.types.Scene, frame: ShotFrame) -> JobSpec | None:
        """The frame's job: the first frame generated, a later one an edit of the frame before; None for a
        frame whose layout is the frame before's."""
        settings, panel = self.settings, self.panel
        assert settings is not None and panel is not None
        if self.previous is None:
            spec = generation.build_spec(scene, settings, draft=self.draft, frame=frame.layout, panel=panel)
            return replace(spec, shot_frame=frame.number, shot_settings=panel.shot_settings())
        shown = self._previous_layout()
        if shown is not None and unchanged(shown, frame.layout):
            return None
        before = read_previous_file(self.previous, REMEDY)
        start = start_at(panel, before, self.previous, frame.layout)
        edit = edit_spec(scene, settings, panel, start, self.draft)
        shot = panel.shot_settings()
        # once the server has made a frame of the shot, silence means it went away: it is waited for
        return replace(edit, shot_frame=frame.number, shot_settings=shot, answered_before=self.made > 0)

    def _previous_layout(self) -> Layout | None:
        """The layout of the last frame's picture, from its record alone (a copy decodes no pixels);
        None when it has no usable record (read_previous_file then says why)."""
        try:
            record = read_png_file_record(self.previous)
            return Layout.from_dict(record.layout) if record is not None else None
        except (OSError, ValueError):  # LayoutError is a ValueError
            return None

    def _write(self, picture: Path, frame: ShotFrame) -> None:
        """The frame's file, written whole or not at all; the next frame is made from ``picture``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        target = frame_file(self.folder, frame.number)
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(picture.read_bytes())
        os.replace(partial, target)
        self.previous = picture
        image = images.load_file_image(SHOT_IMAGE, target)
        images.show_in_image_editor(image)

    def _end(self, state: str, why: str) -> None:
        self.state, self.last_job = state, RUNNER.job
        AHEAD.stop()
        written = self.kept + self.made + self.copied
        done = f"{written} of {len(self.frames)} frames in {self.folder}"
        if self.copied:
            done += f" ({self.copied} unchanged, copied)"
        if state == "done":
            self.message = f"Done: {done}" + (f" ({TEMP_NOTE})" if self.settings.in_temp else "")
            self._show_behind_camera()
            scene = bpy.data.scenes.get(self.scene_name)
            if scene is not None:
                scene.seethrough.shot_done = True
        else:
            again = f"{self.name} again with seed {self.seed} goes on from there"
            self.message = f"Stopped: {why}. {done}; {again}"
        generation.tag_redraw()

    def _show_behind_camera(self) -> None:
        scene = bpy.data.scenes.get(self.scene_name)
        camera = scene.objects.get(self.frames[0].layout.camera.name) if scene is not None else None
        if camera is None or camera.type != "CAMERA":
            return
        first, last = self.frames[0].number, self.frames[-1].number
        image = images.load_file_image(SHOT_IMAGE, frame_file(self.folder, first))
        image.source = "SEQUENCE"
        images.set_camera_background(camera, image, (first, last - first + 1))


def wait_for_shot(operator: bpy.types.Operator) -> set[str]:
    """wait=True (background Blender): run the pump until the shot is over, then report how it ended; a
    failure raises in the script. Ctrl-C cancels it first."""
    run_callback_until_done(generation.timer_callback, SHOT.cancel)
    if SHOT.state == "done":
        operator.report({"INFO"}, SHOT.message)
        return {"FINISHED"}
    operator.report({"ERROR"} if SHOT.state == "failed" else {"WARNING"}, SHOT.message)
    return {"CANCELLED"}


SHOT = FrameSequence()
