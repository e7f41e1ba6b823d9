"""Generate and Cancel."""

from __future__ import annotations

import bpy

from seethrough_core.errors import SeeThroughError

from . import generation
from .generation_jobs import RUNNER
from .preferences import settings


class SEETHROUGH_OT_generate(bpy.types.Operator):  # noqa: N801
    """Check the scene, render its OSCR image and masks, and send them to the SeeThrough server.
    Both run in the background; Blender stays usable meanwhile"""

    bl_idname = "seethrough.generate"
    bl_label = "Generate"

    def execute(self, context: bpy.types.Context) -> set[str]:
        if RUNNER.active:
            self.report({"ERROR"}, "a render or generation is already running; cancel it or wait for it")
            return {"CANCELLED"}
        current = settings()
        try:
            spec = generation.build_spec(context.scene, current)
        except SeeThroughError as exc:  # bad scene, address or setting: nothing was sent
            self.report({"ERROR"}, f"cannot generate: {exc}")
            return {"CANCELLED"}
        generation.start(spec)
        request = spec.settings
        first = "Sending" if spec.oscr is not None else "Rendering OSCR, then sending"
        self.report(
            {"INFO"},
            f"{first} to {spec.endpoint}: {len(request.descriptions)} boxes, "
            f"{request.width}x{request.height}, seed {request.seed}, {request.steps} steps",
        )
        return {"FINISHED"}


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


CLASSES = (SEETHROUGH_OT_generate, SEETHROUGH_OT_cancel)
