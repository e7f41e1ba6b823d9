"""Regenerate Changed and Vary Box: new pictures made from the result shown in the history.

The shown result is the active history entry. Its packed PNG holds the exact bytes the server's
picture was saved as (its sha256 names the parent in the new record), its pixels and its generation
record (layout, seed, steps, guidance). The plan itself (which region changes, which settings) is the
core's (seethrough_core.edit_plan), the same as `seethrough edit`'s; so is where a camera move samples
the kept pixels from (the pictures the result was edited from, found through its file and the files
beside it: seethrough_core.edit_chain), and the rule for a frame made in two stages: its base picture
(a file beside it) is edited at the base layout of the scene's frame, then upscaled to the render size
again, in the same job. Regenerate Changed is checked here and planned on the job's thread
(edit_jobs.py); Vary Box, quick to plan, is planned here. Main thread only.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import bpy

from seethrough_core.edit_plan import (
    PreviousPicture,
    base_picture_of,
    plan_variation,
    read_previous_file,
    read_previous_picture,
)
from seethrough_core.edit_region import box_changes, full_regeneration_reason
from seethrough_core.errors import LayoutError, SeeThroughError
from seethrough_core.generate_and_save import frame_path_for, upscaled_path_for
from seethrough_core.generation_settings import GenerationSettings
from seethrough_core.layout import Layout
from seethrough_core.upscale_plan import UpscalePlan, frame_layout_at, plan_upscale
from seethrough_core.vocabulary import DEFAULT_RENDER_ENGINE

from . import images
from .box_props import box_objects, is_box
from .edit_jobs import EditRequest
from .generation import generation_layout, job_spec, upscale_job
from .generation_jobs import JobSpec, UpscaleJob
from .panel_settings import PanelSettings
from .preferences import Settings
from .props import MAX_UI_SEED
from .scene_checks import scene_layout
from .scene_io import render_size, scene_to_layout

BASE_REMEDY = "put the base picture back, or Generate the frame again"


class ResultEditError(SeeThroughError):
    """No usable result to start from; the message says what to do."""


def shown_result(scene: bpy.types.Scene) -> bpy.types.PropertyGroup | None:
    """The active history entry, or None."""
    props = scene.seethrough
    return props.history[props.history_index] if 0 <= props.history_index < len(props.history) else None


def previous_picture(scene: bpy.types.Scene) -> PreviousPicture:
    """The shown result as the start of an edit; ResultEditError when it cannot be one."""
    item = shown_result(scene)
    if item is None:
        raise ResultEditError("pick a result in the Results list first: edits start from the shown result")
    image = item.image
    if image is None or image.packed_file is None:
        raise ResultEditError(f"the image of {item.name!r} is gone or no longer packed; generate a new one")
    png = bytes(image.packed_file.data)
    file = images.image_file(image)  # its PNG on disk: where the pictures before it are found
    origin = {"image": image.name, **({"file": str(file)} if file is not None and file.is_file() else {})}
    return read_previous_picture(image.name, origin, png, "generate a new picture first")


@dataclass(frozen=True)
class EditStart:
    """What an edit of the shown result changes, and at which layout. For a frame the scene makes in two
    stages, that is the base picture at the base layout of the scene's frame (the base of the shown frame,
    or the shown picture itself), and the edited base is upscaled to the frame again."""

    shown: PreviousPicture
    previous: PreviousPicture  # the picture edited
    layout: Layout  # the scene's layout at the edit's size
    frame: Layout  # the scene's frame at the render size
    frame_plan: UpscalePlan | None  # None: one pass, the edit is the frame


def edit_start(scene: bpy.types.Scene, panel: PanelSettings) -> EditStart:
    """Where Regenerate Changed and Vary Box start; ResultEditError or PreviousPictureError (a frame's base
    picture is gone) when they cannot."""
    shown = previous_picture(scene)
    return start_at(panel, shown, images.image_file(shown_result(scene).image), scene_layout(scene))


def start_at(panel: PanelSettings, shown: PreviousPicture, file: Path | None, frame: Layout) -> EditStart:
    """An edit of ``shown`` (saved at ``file``) to the layout ``frame`` at the render size."""
    layout, plan = generation_layout(panel, frame, shown.record.seed)
    if plan is None:
        return EditStart(shown, shown, frame, frame, None)
    previous = shown
    if shown.record.upscale is not None:  # an upscaled frame: its base is what changes
        path = base_picture_of(file, shown.record, label=shown.label, remedy=BASE_REMEDY)
        previous = read_previous_file(path, BASE_REMEDY)
    return EditStart(shown, previous, layout, frame, plan)


def regenerate_changed_spec(scene: bpy.types.Scene, settings: Settings) -> JobSpec:
    """The shown result brought to the scene's layout: only the region of the change regenerates; after
    a camera move, the result reprojected into the new camera, regenerated where the move reveals
    something and on the boxes (all of it past the reprojection limit, or after a size or scene-prompt
    change). A frame made in two stages is edited at its base, then upscaled again. The job plans it
    (edit_jobs.EditRequest); raises SeeThroughError with the reason it cannot be made (EditPlanError:
    nothing changed) before anything is rendered or sent."""
    panel = PanelSettings.of(scene)
    return edit_spec(scene, settings, panel, edit_start(scene, panel))


def edit_spec(
    scene: bpy.types.Scene, settings: Settings, panel: PanelSettings, start: EditStart, draft: bool = False
) -> JobSpec:
    """Regenerate Changed from ``start`` (also each frame of Generate Frames after the first; ``draft``:
    of Draft Frames)."""
    request = EditRequest(
        start.previous,
        start.shown.label,
        start.layout,
        margin_px=panel.edit_margin,
        strength=panel.edit_strength,
        preview_interval=panel.preview_interval,
        reproject_limit=panel.reproject_limit,
        draft=draft,
    )
    generation = request.check()
    upscale = _frame_upscale(start, generation)
    return job_spec(scene, settings, start.layout, generation, upscale=upscale, edit_request=request)


def vary_box_spec(scene: bpy.types.Scene, settings: Settings, box: bpy.types.Object) -> JobSpec:
    """New noise inside ``box``'s region of the shown result (and wherever the layout changed since);
    every other pixel stays (a frame made in two stages: of its base, upscaled again)."""
    if not is_box(box):
        raise ResultEditError(f"{box.name!r} is not a SeeThrough box; select a box to vary")
    panel = PanelSettings.of(scene)
    start = edit_start(scene, panel)
    seed = start.previous.record.seed
    while seed == start.previous.record.seed:  # new noise, never the picture's own
        seed = random.randint(0, MAX_UI_SEED)
    plan = plan_variation(
        start.previous,
        start.layout,
        box_objects(scene).index(box),
        seed,
        margin_px=panel.edit_margin,
        strength=panel.edit_strength,
        preview_interval=panel.preview_interval,
    )
    upscale = _frame_upscale(start, plan.settings)
    spec = job_spec(scene, settings, start.layout, plan.settings, upscale=upscale)
    return spec.with_edit(plan, start.shown.label)


def _frame_upscale(start: EditStart, generation: GenerationSettings) -> UpscaleJob | None:
    """For a frame in two stages, the edited base upscaled to the frame in the same job (None: one pass)."""
    if start.frame_plan is None:
        return None
    steps, guidance = generation.steps, generation.guidance
    # a shown frame (not its own base) lends the tiles the edit does not reach
    edited = (start.shown, start.previous) if start.shown is not start.previous else None
    return upscale_job(start.frame_plan, start.frame, steps, guidance, DEFAULT_RENDER_ENGINE, edited=edited)


def upscale_result_spec(scene: bpy.types.Scene, settings: Settings) -> JobSpec:
    """The shown result made into a frame of the scene's render size (docs/upscale.md): its own layout
    and camera at that size, refined in tiles; its seed, steps and guidance. A base picture whose frame
    was not written (NAME_base.png without NAME.png: its upscale stopped) is made into that frame, so the
    tiles kept in NAME.tiles/ are resumed (as are those of a stopped Upscale of any other result). Raises
    SeeThroughError (SettingError naming the setting) before anything is rendered or sent."""
    previous = previous_picture(scene)
    record = previous.record
    size = render_size(scene)
    if size == (record.width, record.height):
        raise ResultEditError(
            f"{previous.label!r} is already {size[0]}x{size[1]}, the render size; "
            "set a larger Resolution under Output Properties"
        )
    panel = PanelSettings.of(scene)
    plan = plan_upscale(
        *size,
        seed=record.seed,
        base_megapixels=panel.base_megapixels,
        strength=panel.upscale_strength,
        base_size=(record.width, record.height),
    )
    frame = frame_layout_at(previous.layout, size)
    # The frame's name follows from the picture's (NAME.png for NAME_base.png, else NAME_WxH.png), so that
    # Upscale again finds the tiles a stopped upscale kept; once that frame is written, a new name.
    file = images.image_file(shown_result(scene).image)
    base_file = file if file is not None and file.is_file() else None
    frame_path = None
    if base_file is not None:
        frame_path = frame_path_for(base_file) or upscaled_path_for(base_file, size)
        frame_path = None if frame_path.exists() else frame_path
    upscale = upscale_job(
        plan, frame, record.steps, record.guidance, DEFAULT_RENDER_ENGINE, previous, base_file, frame_path
    )
    naming = GenerationSettings.for_layout(
        frame, seed=record.seed, steps=record.steps, guidance=record.guidance
    )
    return job_spec(scene, settings, frame, naming, upscale=upscale)


def unchanged_reason(scene: bpy.types.Scene) -> str | None:
    """Why Regenerate Changed has nothing to do now (None: the scene differs from the shown result).

    Cheap enough for a panel's poll: the stored record, and boxes as the viewport shows them."""
    item = shown_result(scene)
    record = images.entry_record(item)
    if record is None:
        return "Pick a generated result in the Results list first"
    try:
        before = Layout.from_dict(record["layout"])
        now = scene_to_layout(scene, follow_links=False)
    except (LayoutError, KeyError, TypeError):
        return None  # let the operator say what is wrong
    if full_regeneration_reason(before, now) is None and not box_changes(before, now):
        return f"The scene's layout is the one of {item.name!r}: move, add, remove or re-describe a box"
    return None


def kept_settings(scene: bpy.types.Scene) -> str | None:
    """What an edit keeps of the shown result although the panel says otherwise (its steps and guidance:
    an edit must match the picture it changes), for a line beside Regenerate Changed; None: the same.
    Cheap enough to draw: the stored record."""
    item = shown_result(scene)
    record = images.entry_record(item)
    if record is None:
        return None
    props = scene.seethrough
    steps, guidance = record.get("steps"), record.get("guidance")
    if not isinstance(steps, int) or not isinstance(guidance, int | float):
        return None
    if steps == props.steps and math.isclose(guidance, props.guidance, rel_tol=1e-6):
        return None
    kept = f"{steps} steps and guidance {guidance:g}"
    return f"Edits keep the shown result's {kept}; the panel's are for Generate"
