"""Render OSCR: the scene's OSCR image and box masks, shown as Blender images.

An unchanged layout shows its cached render at once; otherwise the render runs as a job in a
separate Blender process (background_render.py) and the images appear when it is done.
"""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty

from seethrough_core.errors import SeeThroughError
from seethrough_core.vocabulary import DEFAULT_RENDER_ENGINE, RENDER_ENGINES

from . import generation, images
from .generation_jobs import RUNNER
from .headless import WaitsInBackground
from .preferences import settings

ENGINE_HINTS = {"cycles": "The profile's engine", "eevee": "Faster on a GPU"}
ENGINE_ITEMS = [(name, name.title(), ENGINE_HINTS[name]) for name in RENDER_ENGINES]


class SEETHROUGH_OT_render_oscr(WaitsInBackground, bpy.types.Operator):  # noqa: N801
    """Render the OSCR image and the box masks from the active camera and show them in the Image Editor.
    The render runs in the background; Blender stays usable meanwhile"""

    bl_idname = "seethrough.render_oscr"
    bl_label = "Render OSCR"

    engine: EnumProperty(
        name="Engine",
        items=ENGINE_ITEMS,
        default=DEFAULT_RENDER_ENGINE,
    )

    def execute(self, context: bpy.types.Context) -> set[str]:
        if self.refuse_wait_in_ui():
            return {"CANCELLED"}
        if RUNNER.active:
            self.report({"ERROR"}, "a render or generation is already running; cancel it or wait for it")
            return {"CANCELLED"}
        try:
            spec = generation.build_spec(context.scene, settings(), generate=False, engine=self.engine)
        except SeeThroughError as exc:  # bad scene or setting: nothing was rendered
            self.report({"ERROR"}, f"cannot render: {exc}")
            return {"CANCELLED"}
        if spec.oscr is not None:  # unchanged since the last render: show it now
            loaded = images.load_oscr_images(spec.oscr)
            message = images.oscr_summary(spec.oscr, images.show_in_image_editor(loaded[0]))
            self.report({"WARNING"} if images.out_of_frame(spec.oscr) else {"INFO"}, message)
            return {"FINISHED"}
        generation.start(spec)
        if self.wait:
            return generation.wait_for_job(self)
        self.report({"INFO"}, f"Rendering OSCR in the background (log: {spec.render.log_path})")
        return {"FINISHED"}


CLASSES = (SEETHROUGH_OT_render_oscr,)
