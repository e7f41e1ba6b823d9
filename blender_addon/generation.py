"""Generate and Render OSCR, on the Blender side: validate, start the job, apply its events.

build_spec() runs on the main thread when the artist presses Generate and refuses a bad scene
before anything is rendered or sent; the OSCR render itself runs in the job, in a separate Blender
process (background_render.py), so Blender stays usable throughout. apply_event() turns the
worker's events into UI state, the OSCR image and masks, preview pixels, the packed result image
and its history entry. The timer callback drives it in Blender; tests call pump() directly because
the bpy module never fires timers.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import bpy

from seethrough_core import __version__
from seethrough_core.edit_plan import PreviousPicture
from seethrough_core.endpoint import parse_endpoint
from seethrough_core.generation_settings import GenerationSettings
from seethrough_core.layout import Layout
from seethrough_core.limits import JOB_RESUBMITS
from seethrough_core.rendered_layout import RenderedLayout, cache_folder, reusable
from seethrough_core.upscale_plan import UpscalePlan, base_layout, plan_upscale
from seethrough_core.vocabulary import DEFAULT_RENDER_ENGINE

from . import images
from .background_render import RenderTask, render_task
from .edit_jobs import EditRequest
from .generation_jobs import (
    RUNNER,
    Event,
    Failed,
    Finished,
    GenerationJob,
    JobSpec,
    Rendered,
    Step,
    UpscaleJob,
    UpscaleStopped,
)
from .headless import run_callback_until_done
from .panel_settings import PanelSettings
from .preferences import Settings
from .scene_checks import scene_layout
from .server_launcher import SERVER

PUMP_INTERVAL_S = 0.1


def build_spec(
    scene: bpy.types.Scene,
    settings: Settings,
    *,
    generate: bool = True,
    engine: str = DEFAULT_RENDER_ENGINE,
    draft: bool = False,
    frame: Layout | None = None,
    panel: PanelSettings | None = None,
) -> JobSpec:
    """Validate the scene, its generation settings and the address, and prepare the job (``draft``:
    the draft preset of the settings, a quick look at the layout; the OSCR render is the same).
    ``frame`` and ``panel``: Generate Frames' layout of one frame and its shot's settings (default: the
    scene's layout and the panel's settings now).

    Above the size the model takes directly, with "Upscale to render size" on, the job generates the
    base picture and upscales it to the render size (docs/upscale.md); a draft is the base alone.

    Raises LayoutError (bad scene), EndpointError (bad address), KeyFileError (unusable key files)
    or SettingError (a setting out of range) with the reason; in each case nothing has been
    rendered or sent.
    """
    frame = scene_layout(scene) if frame is None else frame
    panel = PanelSettings.of(scene) if panel is None else panel
    layout, plan = generation_layout(panel, frame, panel.seed)
    generation_settings = GenerationSettings.for_layout(
        layout,
        seed=panel.seed,
        steps=panel.steps,
        guidance=panel.guidance,
        preview_interval=panel.preview_interval,
    )
    if draft:
        generation_settings = generation_settings.draft()
    generation_settings.check()  # before a render is spent on them
    upscale = None
    if plan is not None and generate and not draft:
        upscale = upscale_job(plan, frame, generation_settings.steps, generation_settings.guidance, engine)
    return job_spec(
        scene, settings, layout, generation_settings, generate=generate, engine=engine, upscale=upscale
    )


def generation_layout(panel: PanelSettings, frame: Layout, seed: int) -> tuple[Layout, UpscalePlan | None]:
    """What the model generates of the scene's frame, and the plan of the two stages: with "Upscale to
    render size" on and a frame the model cannot make directly, the frame's base layout and its plan
    (SettingError naming the setting out of range); else the frame itself and None (one pass)."""
    if not panel.upscale_to_render:
        return frame, None
    plan = plan_upscale(
        frame.width,
        frame.height,
        seed=seed,
        base_megapixels=panel.base_megapixels,
        strength=panel.upscale_strength,
    )
    return (base_layout(frame, plan), plan) if plan.two_stages else (frame, None)


def upscale_job(
    plan: UpscalePlan,
    frame: Layout,
    steps: int,
    guidance: float,
    engine: str,
    base: PreviousPicture | None = None,
    base_file: Path | None = None,
    frame_path: Path | None = None,
    edited: tuple[PreviousPicture, PreviousPicture] | None = None,
) -> UpscaleJob:
    """The upscale stage of a job (the tile views render in background Blender processes); ``edited``:
    an edit's frame and the base it was upscaled from, which lend the tiles the edit does not reach."""
    edited_frame, edited_base = edited or (None, None)
    return UpscaleJob(
        plan, frame, steps, guidance, engine, bpy.app.binary_path, base, base_file, frame_path,
        edited_frame, edited_base,
    )  # fmt: skip


def job_spec(
    scene: bpy.types.Scene,
    settings: Settings,
    layout: Layout,
    generation_settings: GenerationSettings,
    *,
    generate: bool = True,
    engine: str = DEFAULT_RENDER_ENGINE,
    upscale: UpscaleJob | None = None,
    edit_request: EditRequest | None = None,
) -> JobSpec:
    """The job for checked settings: the OSCR render from the cache when the layout is unchanged
    since the last one, else a render task; the server's address and keys when it generates."""
    endpoint = parse_endpoint(settings.server_address).url if generate else ""
    keys = settings.client_keys() if generate else None
    scene_dir = settings.scene_dir(scene.name)
    if upscale is not None and upscale.base is not None:  # the Upscale button renders only tile views
        oscr, render = reusable(cache_folder(scene_dir, layout, engine), layout, engine), None
    else:
        oscr, render = oscr_render(scene_dir, layout, engine)
    return JobSpec(
        endpoint=endpoint,
        keys=keys,
        timeout_s=settings.timeout_s,
        retry_s=settings.retry_s,
        settings=generation_settings,
        metadata={
            "scene": scene.name,
            "camera": layout.camera.name,
            "client": f"SeeThrough for Blender {__version__} (Blender {bpy.app.version_string})",
        },
        layout=layout,
        scene_name=scene.name,
        camera_name=layout.camera.name,
        out_dir=scene_dir / "results",
        oscr=oscr,
        render=render,
        generate=generate,
        upscale=upscale,
        edit_request=edit_request,
    )


def oscr_render(
    scene_dir: Path, layout: Layout, engine: str
) -> tuple[RenderedLayout | None, RenderTask | None]:
    """The layout's OSCR render from the scene's cache, or the task that renders it there."""
    oscr_dir = cache_folder(scene_dir, layout, engine)
    oscr = reusable(oscr_dir, layout, engine)
    return oscr, None if oscr is not None else render_task(layout, oscr_dir, engine, bpy.app.binary_path)


def start(spec: JobSpec) -> GenerationJob:
    job = RUNNER.start(spec)
    if not bpy.app.timers.is_registered(timer_callback):
        bpy.app.timers.register(timer_callback, first_interval=PUMP_INTERVAL_S, persistent=True)
    return job


def pump() -> bool:
    """Apply the job's waiting events; True while it still runs, or while Generate Frames has frames
    left (the next frame's job starts here once the one before is over). The timer calls this."""
    if RUNNER.pump(_apply_safely):
        _restart_local_server(RUNNER.job)
        return True
    from .frame_sequence import SHOT  # here: it builds each frame's job with this module

    return SHOT.advance()


def _restart_local_server(job: GenerationJob) -> None:
    """A job waits for a server that went away: when that is the add-on's own local server and it
    exited on its own (a crash, out of memory), start it again, at most JOB_RESUBMITS times a job (the
    job is sent again no more often), and say so in the job's message."""
    if job.status.state != "waiting" or job.local_restarts >= JOB_RESUBMITS:
        return
    what = SERVER.start_again_for(job.spec.endpoint)
    if what is not None:
        job.local_restarts += 1
        job.status.message = f"{job.status.message} ({what})"
        print(f"SeeThrough: {what}")


def timer_callback() -> float | None:
    return PUMP_INTERVAL_S if pump() else None


def wait_for_job(operator: bpy.types.Operator) -> set[str]:
    """wait=True (background Blender): run the pump until the job is over, then report its outcome;
    a failure raises in the script. Ctrl-C cancels the job first (on the server too)."""
    run_callback_until_done(timer_callback, lambda: RUNNER.job.request_cancel() if RUNNER.job else None)
    status = RUNNER.status
    if status is None or status.state == "done":
        operator.report({"INFO"}, status.message if status else "Done")
        return {"FINISHED"}
    operator.report({"ERROR"} if status.state == "failed" else {"WARNING"}, status.message)
    return {"CANCELLED"}


def stop_timer() -> None:
    if bpy.app.timers.is_registered(timer_callback):
        bpy.app.timers.unregister(timer_callback)


def _apply_safely(job: GenerationJob, event: Event) -> None:
    # An exception here would unregister the timer and strand the job: report it instead.
    try:
        apply_event(job, event)
    except Exception as exc:
        traceback.print_exc()
        job.status.state = "failed"
        where = f" (the image file is kept at {event.png_path})" if isinstance(event, Finished) else ""
        job.status.message = f"could not show the result: {type(exc).__name__}: {exc}{where}"
    tag_redraw()


def apply_event(job: GenerationJob, event: Event) -> None:
    scene = bpy.data.scenes.get(job.spec.scene_name)
    if isinstance(event, Step) and event.preview is not None:
        if scene is None or scene.seethrough.show_previews:
            images.show_in_image_editor(images.set_preview(event.preview))
    elif isinstance(event, Finished) and job.spec.shot_frame is not None:  # frame_sequence.py writes it
        job.status.message = f"Done: frame {job.spec.shot_frame}"
    elif isinstance(event, Finished):
        image = images.result_image(job.spec.image_name, event.png_path, event.record)
        job.status.image_name = image.name
        job.status.message = f"Done: {image.name}" + (f" ({job.status.note})" if job.status.note else "")
        if scene is not None:
            add_history(scene, image, event, job.spec, job.status.note)
        images.show_in_image_editor(image)
    elif isinstance(event, UpscaleStopped) and event.base_png is not None and event.base_record is not None:
        if job.spec.shot_frame is not None:  # Generate Frames makes the frame again (frame_sequence.py)
            return
        # the base goes to the Results list: Upscale on it resumes the kept tiles
        image = images.result_image(f"{job.spec.image_name} base", event.base_png, event.base_record)
        job.status.image_name = image.name
        if scene is not None:
            add_history(scene, image, Finished(event.base_png, event.base_record), job.spec, event.entry)
        images.show_in_image_editor(image)
    elif isinstance(event, Rendered) and event.final:  # Render OSCR: show what was rendered
        loaded = images.load_oscr_images(event.oscr)
        job.status.image_name = loaded[0].name
        job.status.message = images.oscr_summary(event.oscr, images.show_in_image_editor(loaded[0]))
    elif isinstance(event, Failed):
        print(f"SeeThrough: {'generation' if job.spec.generate else 'OSCR render'} failed: {event.message}")


def add_history(
    scene: bpy.types.Scene, image: bpy.types.Image, event: Finished, spec: JobSpec, note: str = ""
) -> None:
    """The result's history entry: which result it was made from and how (``note``: about the upscale's
    kept tiles; an upscale that stopped adds its base picture with it)."""
    history = scene.seethrough.history
    item = history.add()
    item.name = image.name
    item.image = image
    item.seed = str(event.record.seed)
    item.prompt = event.record.prompt
    item.camera = spec.camera_name
    item.created = event.record.created
    upscale = spec.upscale
    is_frame = upscale is not None and event.record.upscale is not None
    changes = []
    if spec.edit is not None:  # which result this one came from, and how
        item.parent = spec.edit.parent_image
        changes.append(spec.edit.summary)
    if upscale is not None and upscale.base is not None:
        item.parent = upscale.base.label
    if is_frame and (spec.edit is not None or upscale.base is not None):
        edited = "its base edited, then " if spec.edit is not None else ""
        changes.append(f"{edited}upscaled to {upscale.size_text}")
    if note:
        changes.append(note)
    item.change = "; ".join(changes)
    scene.seethrough.history_index = len(history) - 1


def tag_redraw() -> None:
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "IMAGE_EDITOR", "PREFERENCES"}:
                area.tag_redraw()
