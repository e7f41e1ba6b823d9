"""Authoring operators: add and remove boxes, import and export layout files."""

from __future__ import annotations

import math

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty
from bpy_extras.io_utils import ExportHelper, ImportHelper
from mathutils import Vector

from seethrough_core.errors import LayoutError
from seethrough_core.layout import Box
from seethrough_core.limits import MAX_BOXES
from seethrough_core.png import write_bytes_atomic
from seethrough_core.record import RESULT_SUFFIX, load_layout_or_result, read_result_record

from . import box_links, box_props, look, scene_io
from .panel_settings import use_record_settings
from .props import TEMPLATE_ITEMS
from .scene_checks import scene_layout
from .templates import get_template


def box_center_at_cursor(cursor: Vector, height: float) -> tuple[float, float, float]:
    """Where a new box goes: under the 3D cursor, resting on the ground (z = 0), or on the cursor
    when the cursor is above the ground (snap it to a table top to stand a bottle there)."""
    bottom = max(cursor.z, 0.0)
    return (cursor.x, cursor.y, bottom + height / 2.0)


def yaw_facing(center: tuple[float, float, float], target: Vector) -> float:
    """Z rotation in degrees that turns a box's front (+Y) towards the target, in the ground plane."""
    dx, dy = target.x - center[0], target.y - center[1]
    if math.hypot(dx, dy) < 1e-6:
        return 0.0
    return round(math.degrees(math.atan2(-dx, dy)), 1) + 0.0


def reindex_boxes(scene: bpy.types.Scene) -> None:
    """Make the boxes' indices 0..n-1 again, keeping their order (after a removal)."""
    for index, obj in enumerate(box_props.box_objects(scene)):
        box_props.get_props(obj)["index"] = index


def remove_box_object(obj: bpy.types.Object) -> None:
    mesh = obj.data
    bpy.data.objects.remove(obj, do_unlink=True)
    if mesh is not None and mesh.users == 0:
        bpy.data.meshes.remove(mesh)


class SEETHROUGH_OT_add_box(bpy.types.Operator):  # noqa: N801
    """Add a box at the 3D cursor, sized like a real object, its front (red) facing the camera"""

    bl_idname = "seethrough.add_box"
    bl_label = "Add Box"
    bl_options = {"REGISTER", "UNDO"}

    template: EnumProperty(name="Size", items=TEMPLATE_ITEMS, default="person")
    description: StringProperty(
        name="Description", description="What the box is (empty: the size template's name)"
    )
    face_camera: BoolProperty(
        name="Face Camera", description="Turn the box's front towards the active camera", default=True
    )

    def execute(self, context: bpy.types.Context) -> set[str]:
        scene = context.scene
        count = len(box_props.box_objects(scene))
        if count >= MAX_BOXES:
            self.report({"ERROR"}, f"a layout holds at most {MAX_BOXES} boxes; this scene has {count}")
            return {"CANCELLED"}
        template = get_template(self.template)
        description = self.description.strip() or template.description
        center = box_center_at_cursor(scene.cursor.location, template.size[2])
        yaw = 0.0
        if self.face_camera and scene.camera is not None:
            yaw = yaw_facing(center, scene.camera.matrix_world.translation)
        next_index = 1 + max((box_props.box_index(o, -1) for o in box_props.box_objects(scene)), default=-1)
        obj = scene_io.add_box(scene, Box(description, center, template.size, (0.0, 0.0, yaw)), next_index)
        look.style_box(obj)
        for other in context.view_layer.objects:
            if other.select_get():
                other.select_set(False)
        obj.select_set(True)
        context.view_layer.objects.active = obj
        self.report(
            {"INFO"}, f'Added box "{obj.name}" ({template.label}, {len(box_props.box_objects(scene))} boxes)'
        )
        return {"FINISHED"}


class SEETHROUGH_OT_boxes_from_selection(bpy.types.Operator):  # noqa: N801
    """Add one box per selected object, fitted to it as it is drawn (modifiers, pose, parents applied);
    its front (red) on the object's own front"""

    bl_idname = "seethrough.boxes_from_selection"
    bl_label = "Boxes From Selection"
    bl_options = {"REGISTER", "UNDO"}

    upright: BoolProperty(
        name="Upright",
        description="Boxes stand on the floor and turn about Z only, as the model was trained "
        "(off: a box along the object's own axes, tilted if the object is)",
        default=True,
    )

    def execute(self, context: bpy.types.Context) -> set[str]:
        from seethrough_core.box_fitting import description_from_name

        from .object_points import fits

        scene = context.scene
        sources = [o for o in context.selected_objects if fits(o) and not box_props.is_box(o)]
        if not sources:
            self.report(
                {"ERROR"},
                "select the objects to turn into boxes (meshes, curves, text, metaballs, or empties "
                "standing for a group); SeeThrough boxes, cameras and lights are not fitted",
            )
            return {"CANCELLED"}
        existing = len(box_props.box_objects(scene))
        if existing + len(sources) > MAX_BOXES:
            self.report(
                {"ERROR"},
                f"{len(sources)} objects selected and the scene has {existing} boxes; a layout holds at "
                f"most {MAX_BOXES}: select fewer objects or remove boxes",
            )
            return {"CANCELLED"}
        depsgraph = context.evaluated_depsgraph_get()
        fitted = []
        for obj in sources:
            box = box_links.fit_to(obj, depsgraph, self.upright)
            if box is None:
                self.report({"ERROR"}, f'"{obj.name}" has no geometry to fit a box to; nothing was added')
                return {"CANCELLED"}
            description = str(obj.get("seethrough_description", "")).strip() or description_from_name(
                obj.name
            )
            fitted.append((obj, box, description or "object"))
        next_index = 1 + max((box_props.box_index(o, -1) for o in box_props.box_objects(scene)), default=-1)
        for other in context.view_layer.objects:
            if other.select_get():
                other.select_set(False)
        for offset, (source, box, description) in enumerate(fitted):
            obj = scene_io.add_box(
                scene, Box(description, box.center, box.size, box.rotation_euler_deg), next_index + offset
            )
            box_links.link(obj, source, self.upright)
            look.style_box(obj)
            obj.select_set(True)
            context.view_layer.objects.active = obj
        self.report({"INFO"}, f"Added {len(fitted)} boxes linked to the selection: they follow its changes")
        return {"FINISHED"}


class SEETHROUGH_OT_flip_front(bpy.types.Operator):  # noqa: N801
    """Turn the active box half a turn about Z: its front (red) to the other side"""

    bl_idname = "seethrough.flip_front"
    bl_label = "Flip Front"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        obj = context.active_object
        if obj is None or not box_props.is_box(obj):
            self.report({"ERROR"}, "select a SeeThrough box to flip")
            return {"CANCELLED"}
        if box_links.is_linked(obj):  # it follows its object: remember the flip for every refit
            props = box_props.get_props(obj)
            props[box_links.FLIPPED_KEY] = int(not props.get(box_links.FLIPPED_KEY, 0))
            box_links.refit(obj, context.evaluated_depsgraph_get())
        else:
            obj.rotation_euler.z = math.remainder(obj.rotation_euler.z + math.pi, 2 * math.pi)
        return {"FINISHED"}


class SEETHROUGH_OT_toggle_link(bpy.types.Operator):  # noqa: N801
    """Linked: the box follows its source object (moves, edits, pose, animation). Unlink it to edit
    the box by hand; link it again to snap it back onto the object"""

    bl_idname = "seethrough.toggle_link"
    bl_label = "Linked"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        obj = context.active_object
        if obj is None or not box_props.is_box(obj) or not box_props.get_props(obj).get(box_links.SOURCE_KEY):
            self.report({"ERROR"}, "select a box made with Boxes From Selection")
            return {"CANCELLED"}
        linked = not box_links.is_linked(obj)
        if linked and bpy.data.objects.get(str(box_props.get_props(obj)[box_links.SOURCE_KEY])) is None:
            self.report({"ERROR"}, f"its object {box_props.get_props(obj)[box_links.SOURCE_KEY]!r} is gone")
            return {"CANCELLED"}
        box_links.set_linked(obj, linked)
        if linked:
            box_links.refit(obj, context.evaluated_depsgraph_get())
        return {"FINISHED"}


class SEETHROUGH_OT_remove_box(bpy.types.Operator):  # noqa: N801
    """Delete a box (the active one unless named) and renumber the others"""

    bl_idname = "seethrough.remove_box"
    bl_label = "Remove Box"
    bl_options = {"REGISTER", "UNDO"}

    name: StringProperty(name="Box", description="Object name of the box (empty: the active object)")

    def execute(self, context: bpy.types.Context) -> set[str]:
        obj = bpy.data.objects.get(self.name) if self.name else context.active_object
        if obj is None or not box_props.is_box(obj):
            self.report({"ERROR"}, "select a SeeThrough box to remove")
            return {"CANCELLED"}
        name = obj.name
        remove_box_object(obj)
        reindex_boxes(context.scene)
        self.report({"INFO"}, f'Removed box "{name}"')
        return {"FINISHED"}


class SEETHROUGH_OT_import_layout(bpy.types.Operator, ImportHelper):  # noqa: N801
    """Import a layout .json, or restore the scene of a result PNG saved by SeeThrough: its boxes, its
    camera (made active), prompt and output size; from a result also its seed, steps and guidance"""

    bl_idname = "seethrough.import_layout"
    bl_label = "Import Layout"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".json"
    filter_glob: StringProperty(default="*.json;*.png", options={"HIDDEN"})
    replace_boxes: BoolProperty(
        name="Replace Boxes", description="Delete the scene's SeeThrough boxes first", default=True
    )

    def execute(self, context: bpy.types.Context) -> set[str]:
        is_result = self.filepath.lower().endswith(RESULT_SUFFIX)
        try:
            layout = load_layout_or_result(self.filepath)
            record = read_result_record(self.filepath) if is_result else None
        except LayoutError as exc:
            self.report({"ERROR"}, f"{bpy.path.basename(self.filepath)}: {exc}")
            return {"CANCELLED"}
        scene = context.scene
        if self.replace_boxes:
            for obj in box_props.box_objects(scene):
                remove_box_object(obj)
        for obj in scene_io.layout_to_scene(layout, scene):
            look.style_box(obj)
        message = f"Imported {len(layout.boxes)} boxes and camera {scene.camera.name!r}"
        if record is not None:  # the settings it was made with, so Generate makes it again
            message += f", {use_record_settings(scene, record)}"
        self.report({"INFO"}, message)
        return {"FINISHED"}


class SEETHROUGH_OT_export_layout(bpy.types.Operator, ExportHelper):  # noqa: N801
    """Export the scene's boxes, active camera, prompt and output size as a layout .json"""

    bl_idname = "seethrough.export_layout"
    bl_label = "Export Layout"

    filename_ext = ".json"
    filter_glob: StringProperty(default="*.json", options={"HIDDEN"})

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            layout = scene_layout(context.scene)
        except LayoutError as exc:
            self.report({"ERROR"}, f"cannot export: {exc}")
            return {"CANCELLED"}
        write_bytes_atomic(self.filepath, layout.to_json().encode("utf-8"))
        self.report({"INFO"}, f"Exported {len(layout.boxes)} boxes to {self.filepath}")
        return {"FINISHED"}


CLASSES = (
    SEETHROUGH_OT_add_box,
    SEETHROUGH_OT_boxes_from_selection,
    SEETHROUGH_OT_flip_front,
    SEETHROUGH_OT_toggle_link,
    SEETHROUGH_OT_remove_box,
    SEETHROUGH_OT_import_layout,
    SEETHROUGH_OT_export_layout,
)
