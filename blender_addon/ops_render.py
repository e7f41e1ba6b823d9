"""Render OSCR: the scene's OSCR image and box masks, shown as Blender images."""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty

from seethrough_core.errors import LayoutError

from . import images
from .batch.plan import safe_name
from .oscr_cache import OscrInputs, render_cached
from .preferences import settings
from .validation import scene_layout


def load_render_images(oscr: OscrInputs) -> list[bpy.types.Image]:
    """The OSCR image and every box's masks as images "SeeThrough OSCR", "SeeThrough amodal 000", ..."""
    loaded = [images.load_file_image(images.OSCR_IMAGE, oscr.oscr_path)]
    for box in oscr.report["boxes"]:
        for kind in ("amodal", "visible"):
            path = oscr.out_dir / box[f"{kind}_mask"]
            loaded.append(images.load_file_image(f"SeeThrough {kind} {box['index']:03d}", path))
    # Masks of boxes that no longer exist would mislead: drop them.
    for image in list(bpy.data.images):
        if image.name.startswith(("SeeThrough amodal ", "SeeThrough visible ")) and image not in loaded:
            bpy.data.images.remove(image)
    return loaded


class SEETHROUGH_OT_render_oscr(bpy.types.Operator):  # noqa: N801
    """Render the OSCR image and the box masks from the active camera and show them in the Image Editor"""

    bl_idname = "seethrough.render_oscr"
    bl_label = "Render OSCR"

    engine: EnumProperty(
        name="Engine",
        items=[("cycles", "Cycles", "The profile's engine"), ("eevee", "Eevee", "Faster on a GPU")],
        default="cycles",
    )

    def execute(self, context: bpy.types.Context) -> set[str]:
        scene = context.scene
        try:
            layout = scene_layout(scene)
        except LayoutError as exc:
            self.report({"ERROR"}, f"cannot render: {exc}")
            return {"CANCELLED"}
        oscr = render_cached(layout, settings().output_root() / safe_name(scene.name), self.engine)
        loaded = load_render_images(oscr)
        shown = images.show_in_image_editor(loaded[0])
        hidden = [box["description"] for box in oscr.report["boxes"] if not box["in_frame"]]
        took = "unchanged since the last render" if oscr.cached else f"rendered in {oscr.seconds:.1f} s"
        message = f"OSCR {took}: image {loaded[0].name!r}"
        if not shown:
            message += " (open an Image Editor to see it)"
        if hidden:
            message += f"; not in frame: {', '.join(hidden)}"
        self.report({"WARNING"} if hidden else {"INFO"}, message)
        return {"FINISHED"}


CLASSES = (SEETHROUGH_OT_render_oscr,)
