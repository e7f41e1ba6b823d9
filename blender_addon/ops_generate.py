"""Generate, Regenerate Changed, Vary Box and Cancel."""

from __future__ import annotations

import bpy

from seethrough_core.errors import SeeThroughError

from . import generation
from .generation_jobs import RUNNER
from .headless import WaitsInBackground
from .preferences import settings
from .result_edits import regenerate_changed_spec, shown_result, unchanged_reason, vary_box_spec


class SEETHROUGH_OT_generate(WaitsInBackground, bpy.types.Operator):  # noqa: N801
    """Check the scene, render its OSCR image and masks, and send them to the SeeThrough server.
    Both run in the background; Blender stays usable meanwhile"""

    bl_idname = "seethrough.generate"
    bl_label = "Generate"

    def execute(self, context: bpy.types.Context) -> set[str]:
        if self.refuse_wait_in_ui():
            return {"CANCELLED"}
        if RUNNER.active:
            self.report({"ERROR"}, "a render or generation is already running; cancel it or wait for it")
            return {"CANCELLED"}
        current = settings()
        try:
            spec = generation.build_spec(context.scene, current)
        except SeeThroughError as exc:  # bad scene, address or setting: nothing was sent
            self.report({"ERROR"}, f"cannot generate: {exc}")
            return {"CANCELLED"}
        request = spec.settings
        return _start(
            self,
            spec,
            f"{len(request.descriptions)} boxes to {spec.endpoint}, "
            f"{request.width}x{request.height}, seed {request.seed}, {request.steps} steps",
        )


def _start(operator: bpy.types.Operator, spec, what: str) -> set[str]:
    generation.start(spec)
    if operator.wait:
        return generation.wait_for_job(operator)
    first = "Sending" if spec.oscr is not None else "Rendering OSCR, then sending"
    operator.report({"INFO"}, f"{first}: {what}")
    return {"FINISHED"}


class SEETHROUGH_OT_regenerate_changed(WaitsInBackground, bpy.types.Operator):  # noqa: N801
    """Regenerate only what changed since the shown result (the boxes moved, added, removed, resized,
    turned or re-described); every other pixel stays the shown result's"""

    bl_idname = "seethrough.regenerate_changed"
    bl_label = "Regenerate Changed"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        reason = "A render or generation is running" if RUNNER.active else unchanged_reason(context.scene)
        if reason is not None:
            cls.poll_message_set(reason)
        return reason is None

    def execute(self, context: bpy.types.Context) -> set[str]:
        if self.refuse_wait_in_ui():
            return {"CANCELLED"}
        try:
            spec = regenerate_changed_spec(context.scene, settings())
        except SeeThroughError as exc:  # nothing changed, no usable result, a bad scene: nothing sent
            self.report({"ERROR"}, f"cannot regenerate: {exc}")
            return {"CANCELLED"}
        return _start(self, spec, f"{spec.edit.summary} (from {spec.edit.parent_image!r})")


class SEETHROUGH_OT_vary_box(WaitsInBackground, bpy.types.Operator):  # noqa: N801
    """New noise inside the active box's region of the shown result; every other pixel stays"""

    bl_idname = "seethrough.vary_box"
    bl_label = "Vary Box"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        item = shown_result(context.scene)
        if RUNNER.active:
            cls.poll_message_set("A render or generation is running")
        elif item is None or item.image is None:
            cls.poll_message_set("Generate a picture first: Vary Box changes the shown result")
        else:
            return context.active_object is not None
        return False

    def execute(self, context: bpy.types.Context) -> set[str]:
        if self.refuse_wait_in_ui():
            return {"CANCELLED"}
        try:
            spec = vary_box_spec(context.scene, settings(), context.active_object)
        except SeeThroughError as exc:
            self.report({"ERROR"}, f"cannot vary the box: {exc}")
            return {"CANCELLED"}
        return _start(self, spec, f"{spec.edit.summary}, seed {spec.settings.seed}")


class SEETHROUGH_OT_cancel(bpy.types.Operator):  # noqa: N801
    """Stop the running OSCR render or generation (on the server too)"""

    bl_idname = "seethrough.cancel"
    bl_label = "Cancel"

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not RUNNER.active or RUNNER.job is None:
            self.report({"WARNING"}, "no render or generation is running")
            return {"CANCELLED"}
        RUNNER.job.request_cancel()
        generation.tag_redraw()
        self.report({"INFO"}, "Cancelling ...")
        return {"FINISHED"}


CLASSES = (
    SEETHROUGH_OT_generate,
    SEETHROUGH_OT_regenerate_changed,
    SEETHROUGH_OT_vary_box,
    SEETHROUGH_OT_cancel,
)
