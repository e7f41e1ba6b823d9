"""Generate, Regenerate Changed, Vary Box and Cancel."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import bpy

from seethrough_core.errors import SeeThroughError

from . import generation
from .frame_sequence import SHOT, wait_for_shot
from .generation_jobs import RUNNER, JobSpec
from .headless import WaitsInBackground
from .panel_settings import PanelSettings
from .preferences import settings
from .result_edits import (
    regenerate_changed_spec,
    shown_result,
    unchanged_reason,
    upscale_result_spec,
    vary_box_spec,
)


class DraftOption:
    """Operator mixin: the ``draft`` option (the Draft button beside the operator's own), described by
    the operator's DRAFT text."""

    DRAFT = ""
    draft: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Draft", default=False, options={"SKIP_SAVE"}
    )

    @classmethod
    def description(cls, context: bpy.types.Context, properties) -> str:
        return cls.DRAFT if properties.draft else cls.__doc__


class SEETHROUGH_OT_generate(DraftOption, WaitsInBackground, bpy.types.Operator):  # noqa: N801
    """Check the scene, render its OSCR image and masks, and send them to the SeeThrough server.
    Both run in the background; Blender stays usable meanwhile"""

    bl_idname = "seethrough.generate"
    bl_label = "Generate"

    DRAFT = (
        "A quick look at the layout: a smaller picture (512 px on the longer side), the OSCR condition "
        "computed once and steps that barely change skipped. Generate for the final image"
    )

    def execute(self, context: bpy.types.Context) -> set[str]:
        if self.refuse_wait_in_ui():
            return {"CANCELLED"}
        if _busy():
            self.report({"ERROR"}, "a render or generation is already running; cancel it or wait for it")
            return {"CANCELLED"}
        current = settings()
        try:
            spec = generation.build_spec(context.scene, current, draft=self.draft)
        except SeeThroughError as exc:  # bad scene, address or setting: nothing was sent
            self.report({"ERROR"}, f"cannot generate: {exc}")
            return {"CANCELLED"}
        chosen = spec.settings
        return _start(
            self,
            spec,
            f"{'draft, ' if self.draft else ''}{len(chosen.descriptions)} boxes to {spec.endpoint}, "
            f"{chosen.width}x{chosen.height}, seed {chosen.seed}, {chosen.steps} steps",
        )


class SEETHROUGH_OT_generate_frames(DraftOption, WaitsInBackground, bpy.types.Operator):  # noqa: N801
    """Generate the scene's frame range (Start to End) as one steady shot: the first frame is generated,
    each later one keeps the frame before and regenerates only what changed (a camera move keeps the
    picture reprojected). The frames are written as a numbered image sequence"""

    bl_idname = "seethrough.generate_frames"
    bl_label = "Generate Frames"

    seed: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Seed",
        description="The shot's seed (-1: the Generate panel's): Resume goes on with a stopped shot's",
        default=-1,
        min=-1,
        options={"SKIP_SAVE"},
    )
    DRAFT = (
        "A quick look at the shot: every frame of the range smaller (512 px on the longer side), the OSCR "
        "condition computed once and steps that barely change skipped, into a folder of its own. Generate "
        "Frames for the final frames"
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _allowed(cls, "A render or generation is running" if _busy() else None)

    def execute(self, context: bpy.types.Context) -> set[str]:
        if self.refuse_wait_in_ui():
            return {"CANCELLED"}
        scene = context.scene
        try:
            panel = PanelSettings.of(scene)
            if self.seed >= 0:  # Resume: the stopped shot's seed
                panel = replace(panel, seed=self.seed)
            what = SHOT.start(scene, settings(), panel, draft=self.draft)
        except SeeThroughError as exc:  # a frame's scene, a setting or the address: nothing was sent
            self.report({"ERROR"}, f"cannot generate frames: {exc}")
            return {"CANCELLED"}
        if self.wait:
            return wait_for_shot(self)
        doing = "Drafting" if self.draft else "Generating"
        self.report({"INFO"}, f"{doing} {what}" if SHOT.running else SHOT.message)
        return {"FINISHED"}


def _busy() -> bool:
    """A job runs, or Generate Frames is between two frames' jobs."""
    return RUNNER.active or SHOT.running


def _start(operator: bpy.types.Operator, spec, what: str) -> set[str]:
    generation.start(spec)
    if operator.wait:
        return generation.wait_for_job(operator)
    if spec.upscale is not None and spec.upscale.base is not None:
        first = "Upscaling"
    else:
        first = "Sending" if spec.oscr is not None else "Rendering OSCR, then sending"
    operator.report({"INFO"}, f"{first}: {what}")
    return {"FINISHED"}


def _start_from_result(
    operator: bpy.types.Operator,
    make_spec: Callable[[], JobSpec],
    failure: str,
    what: Callable[[JobSpec], str],
) -> set[str]:
    """Start a job made from the shown result; nothing is rendered or sent when it cannot be made
    (nothing changed, no usable result, a bad scene, a setting out of range: the reason is reported)."""
    if operator.refuse_wait_in_ui():
        return {"CANCELLED"}
    try:
        spec = make_spec()
    except SeeThroughError as exc:
        operator.report({"ERROR"}, f"{failure}: {exc}")
        return {"CANCELLED"}
    return _start(operator, spec, what(spec))


class SEETHROUGH_OT_regenerate_changed(WaitsInBackground, bpy.types.Operator):  # noqa: N801
    """Regenerate only what changed since the shown result (the boxes moved, added, removed, resized,
    turned or re-described); every other pixel stays the shown result's"""

    bl_idname = "seethrough.regenerate_changed"
    bl_label = "Regenerate Changed"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        reason = "A render or generation is running" if _busy() else unchanged_reason(context.scene)
        return _allowed(cls, reason)

    def execute(self, context: bpy.types.Context) -> set[str]:
        return _start_from_result(
            self,
            lambda: regenerate_changed_spec(context.scene, settings()),
            "cannot regenerate",
            lambda spec: f"what changed since {spec.edit_request.parent_image!r}",
        )


class SEETHROUGH_OT_vary_box(WaitsInBackground, bpy.types.Operator):  # noqa: N801
    """New noise inside the active box's region of the shown result; every other pixel stays"""

    bl_idname = "seethrough.vary_box"
    bl_label = "Vary Box"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        reason = _busy_or_no_result(context, "Generate a picture first: Vary Box changes the shown result")
        return _allowed(cls, reason) and context.active_object is not None

    def execute(self, context: bpy.types.Context) -> set[str]:
        return _start_from_result(
            self,
            lambda: vary_box_spec(context.scene, settings(), context.active_object),
            "cannot vary the box",
            lambda spec: f"{spec.edit.summary}, seed {spec.settings.seed}",
        )


class SEETHROUGH_OT_upscale_result(WaitsInBackground, bpy.types.Operator):  # noqa: N801
    """Make the shown result into a frame of the scene's render size: enlarged, then refined in tiles,
    each conditioned on its own OSCR view (in the background; Blender stays usable)"""

    bl_idname = "seethrough.upscale_result"
    bl_label = "Upscale"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _allowed(cls, _busy_or_no_result(context, "Pick a result in the Results list first"))

    def execute(self, context: bpy.types.Context) -> set[str]:
        return _start_from_result(
            self,
            lambda: upscale_result_spec(context.scene, settings()),
            "cannot upscale",
            lambda spec: (
                f"{spec.upscale.base.label!r} to {spec.upscale.size_text} "
                f"in {len(spec.upscale.plan.tiles)} tiles"
            ),
        )


def _allowed(operator_class, reason: str | None) -> bool:
    """A poll's answer: True, or False with the reason as the button's tooltip."""
    if reason is not None:
        operator_class.poll_message_set(reason)
    return reason is None


def _busy_or_no_result(context: bpy.types.Context, no_result: str) -> str | None:
    """Why an operator on the shown result cannot run now (None: it can)."""
    item = shown_result(context.scene)
    if _busy():
        return "A render or generation is running"
    return no_result if item is None or item.image is None else None


class SEETHROUGH_OT_cancel(bpy.types.Operator):  # noqa: N801
    """Stop the running OSCR render or generation (on the server too)"""

    bl_idname = "seethrough.cancel"
    bl_label = "Cancel"

    def execute(self, context: bpy.types.Context) -> set[str]:
        if SHOT.running:  # Generate Frames: the frame being made, and the frames after it
            SHOT.cancel()
        elif not RUNNER.active or RUNNER.job is None:
            self.report({"WARNING"}, "no render or generation is running")
            return {"CANCELLED"}
        else:
            RUNNER.job.request_cancel()
        generation.tag_redraw()
        self.report({"INFO"}, "Cancelling ...")
        return {"FINISHED"}


CLASSES = (
    SEETHROUGH_OT_generate,
    SEETHROUGH_OT_generate_frames,
    SEETHROUGH_OT_regenerate_changed,
    SEETHROUGH_OT_vary_box,
    SEETHROUGH_OT_upscale_result,
    SEETHROUGH_OT_cancel,
)
