"""Results: reopen a history entry, put a result behind the camera, make it again, drop it from the list."""

from __future__ import annotations

import bpy
from bpy.props import IntProperty

from seethrough_core.record import GenerationRecord

from . import images
from .panel_settings import use_record_settings


def history_item(context: bpy.types.Context, index: int):
    """The history entry at `index` (-1: the active one), or None."""
    props = context.scene.seethrough
    index = props.history_index if index < 0 else index
    return props.history[index] if 0 <= index < len(props.history) else None


class SEETHROUGH_OT_open_history_item(bpy.types.Operator):  # noqa: N801
    """Show a generated image from the history in the Image Editor"""

    bl_idname = "seethrough.open_history_item"
    bl_label = "Open Result"

    index: IntProperty(name="Index", default=-1, description="History entry (-1: the active one)")

    def execute(self, context: bpy.types.Context) -> set[str]:
        item = history_item(context, self.index)
        if item is None or item.image is None:
            self.report({"ERROR"}, "no such result in the history (was its image deleted?)")
            return {"CANCELLED"}
        if self.index >= 0:
            context.scene.seethrough.history_index = self.index
        if not images.show_in_image_editor(item.image):
            self.report({"INFO"}, f"Open an Image Editor to see {item.image.name!r}")
        return {"FINISHED"}


class SEETHROUGH_OT_use_as_background(bpy.types.Operator):  # noqa: N801
    """Show a generated image behind the active camera's view, as a backplate"""

    bl_idname = "seethrough.use_as_background"
    bl_label = "Use as Camera Background"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(name="Index", default=-1, description="History entry (-1: the active one)")

    def execute(self, context: bpy.types.Context) -> set[str]:
        item = history_item(context, self.index)
        camera = context.scene.camera
        if item is None or item.image is None:
            self.report({"ERROR"}, "pick a result in the history first")
            return {"CANCELLED"}
        if camera is None:
            self.report({"ERROR"}, "the scene has no active camera")
            return {"CANCELLED"}
        images.set_camera_background(camera, item.image)
        self.report(
            {"INFO"}, f"{item.image.name!r} is now behind camera {camera.name!r} (camera view: Numpad 0)"
        )
        return {"FINISHED"}


class SEETHROUGH_OT_use_result_settings(bpy.types.Operator):  # noqa: N801
    """Set the Generate panel's seed (Random off), steps and guidance to the shown result's: Generate,
    or Generate Frames as its first frame, makes that picture again"""

    bl_idname = "seethrough.use_result_settings"
    bl_label = "Use Its Seed"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(name="Index", default=-1, description="History entry (-1: the active one)")

    def execute(self, context: bpy.types.Context) -> set[str]:
        item = history_item(context, self.index)
        record = images.entry_record(item)
        if record is None:
            self.report({"ERROR"}, "pick a generated result in the history first")
            return {"CANCELLED"}
        try:
            settings = use_record_settings(context.scene, GenerationRecord.from_dict(record))
        except (KeyError, TypeError, ValueError) as exc:
            self.report({"ERROR"}, f"the record of {item.name!r} cannot be read: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"The Generate panel now makes {item.name!r}: {settings}")
        return {"FINISHED"}


class SEETHROUGH_OT_remove_history_item(bpy.types.Operator):  # noqa: N801
    """Remove an entry from the history list; the image itself stays in the file"""

    bl_idname = "seethrough.remove_history_item"
    bl_label = "Remove from History"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(name="Index", default=-1, description="History entry (-1: the active one)")

    def execute(self, context: bpy.types.Context) -> set[str]:
        props = context.scene.seethrough
        index = props.history_index if self.index < 0 else self.index
        if not 0 <= index < len(props.history):
            self.report({"ERROR"}, "no such history entry")
            return {"CANCELLED"}
        props.history.remove(index)
        props.history_index = min(index, len(props.history) - 1)
        return {"FINISHED"}


CLASSES = (
    SEETHROUGH_OT_open_history_item,
    SEETHROUGH_OT_use_as_background,
    SEETHROUGH_OT_use_result_settings,
    SEETHROUGH_OT_remove_history_item,
)
