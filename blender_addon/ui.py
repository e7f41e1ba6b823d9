"""The "SeeThrough" tab of the 3D Viewport sidebar (N panel)."""

from __future__ import annotations

import time

import bpy

from seethrough_core.errors import SeeThroughError
from seethrough_core.limits import frame_side_problem, side_problem
from seethrough_core.upscale_plan import plan_upscale

from . import box_links, box_props, compat, scene_io
from .frame_sequence import SHOT, shot_name
from .generation_jobs import RUNNER
from .preferences import address_problem, draw_message, draw_server_controls, preferences, settings
from .result_edits import kept_settings
from .server_launcher import SERVER


class SeeThroughPanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "SeeThrough"


class SEETHROUGH_UL_boxes(bpy.types.UIList):  # noqa: N801
    """The scene's boxes in layout order; their descriptions are edited in place."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0, flt_flag=0):
        row = layout.row(align=True)
        props = item.seethrough
        row.label(text="", icon="MESH_CUBE")
        row.prop(
            props,
            "description",
            text="",
            emboss=False,
            icon="ERROR" if not props.description.strip() else "NONE",
        )
        row.label(text=item.name)

    def filter_items(self, context, data, propname):
        objects = getattr(data, propname)
        keys = [
            (0, box_props.box_index(obj), obj.name) if box_props.is_box(obj) else (1, 0, obj.name)
            for obj in objects
        ]
        flags = [self.bitflag_filter_item if key[0] == 0 else 0 for key in keys]
        order = [0] * len(keys)
        for position, i in enumerate(sorted(range(len(keys)), key=keys.__getitem__)):
            order[i] = position
        return flags, order


class SEETHROUGH_UL_history(bpy.types.UIList):  # noqa: N801
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0, flt_flag=0):
        if item.image is not None:
            # An edit shows which result it was made from.
            text = f"{item.name}  \u2190 {item.parent}" if item.parent else item.name
            layout.label(text=text, icon_value=layout.icon(item.image))
        else:
            layout.label(text=f"{item.name} (image deleted)", icon="ERROR")


class SEETHROUGH_PT_scene(SeeThroughPanel, bpy.types.Panel):  # noqa: N801
    bl_label = "SeeThrough"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        scene = context.scene
        props = scene.seethrough
        layout.prop(
            props,
            "scene_prompt",
            text="",
            **compat.placeholder("Scene prompt, e.g. on a quiet street at dusk"),
        )
        layout.prop(scene, "camera", icon="CAMERA_DATA")
        render = scene.render
        column = layout.column(align=True)
        column.label(text="Output Size")
        row = column.row(align=True)
        row.prop(render, "resolution_x", text="W")
        row.prop(render, "resolution_y", text="H")
        column.prop(render, "resolution_percentage", text="Scale")
        width, height = scene_io.render_size(scene)
        # Upscaled, any frame up to the upscale's limit; otherwise a size the model takes.
        rule = frame_side_problem if scene.seethrough.upscale_to_render else side_problem
        for name, side in (("width", width), ("height", height)):
            problem = rule(side)
            if problem:
                draw_message(layout, f"{width} x {height}: the {name} {problem}", "ERROR", alert=True)
        row = layout.row(align=True)
        row.operator("seethrough.import_layout", text="Import", icon="IMPORT")
        row.operator("seethrough.export_layout", text="Export", icon="EXPORT")


class SEETHROUGH_PT_boxes(SeeThroughPanel, bpy.types.Panel):  # noqa: N801
    bl_label = "Boxes"
    bl_parent_id = "SEETHROUGH_PT_scene"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        scene = context.scene
        props = scene.seethrough
        column = layout.column(align=True)
        column.prop(
            props, "new_box_description", text="", **compat.placeholder("Description, e.g. a red vintage car")
        )
        row = column.row(align=True)
        row.prop(props, "new_box_template", text="")
        op = row.operator("seethrough.add_box", text="Add Box", icon="ADD")
        op.template = props.new_box_template
        op.description = props.new_box_description
        column.operator("seethrough.boxes_from_selection", text="From Selection", icon="MESH_CUBE")

        layout.template_list("SEETHROUGH_UL_boxes", "", scene, "objects", props, "box_index", rows=4)
        obj = context.active_object
        if obj is not None and box_props.is_box(obj):
            column = layout.column(align=True)
            column.prop(obj.seethrough, "description", text="")
            column.prop(obj, "scale", text="Size (m)")
            column.prop(obj, "rotation_euler", index=2, text="Turn")
            source = box_props.get_props(obj).get(box_links.SOURCE_KEY)
            if source:
                linked = box_links.is_linked(obj)
                layout.operator(
                    "seethrough.toggle_link",
                    text=f"Follows {source}" if linked else f"Unlinked from {source}",
                    icon="LINKED" if linked else "UNLINKED",
                    depress=linked,
                )
            row = layout.row(align=True)
            row.operator("seethrough.flip_front", text="Flip Front", icon="LOOP_BACK")
            row.operator("seethrough.remove_box", text="Remove Box", icon="TRASH").name = obj.name
            layout.operator("seethrough.vary_box", text="Vary Box in Result", icon="SHADERFX")


class SEETHROUGH_PT_generate(SeeThroughPanel, bpy.types.Panel):  # noqa: N801
    bl_label = "Generate"
    bl_parent_id = "SEETHROUGH_PT_scene"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        props = context.scene.seethrough
        row = layout.row(align=True)
        row.prop(props, "random_seed", text="Random", toggle=True)
        sub = row.row(align=True)
        sub.enabled = not props.random_seed
        sub.prop(props, "seed")
        column = layout.column(align=True)
        column.prop(props, "steps")
        column.prop(props, "guidance")
        layout.prop(props, "show_previews")
        draw_frame_size(layout, context.scene)

        busy = RUNNER.active or SHOT.running
        row = layout.row(align=True)
        row.enabled = not busy  # one job at a time: an OSCR render or a generation
        row.operator("seethrough.render_oscr", icon="RENDER_STILL")
        row.operator("seethrough.generate", icon="PLAY")
        row.operator("seethrough.generate", text="Draft", icon="SEQ_PREVIEW").draft = True
        scene = context.scene
        row = layout.row(align=True)
        row.enabled = not busy
        frames = f"Generate Frames {scene.frame_start}-{scene.frame_end}"
        row.operator("seethrough.generate_frames", text=frames, icon="RENDER_ANIMATION")
        row.operator("seethrough.generate_frames", text="Draft", icon="SEQ_PREVIEW").draft = True
        # Edits of the shown result: only what changed regenerates (docs/edit.md).
        column = layout.column(align=True)
        column.enabled = not busy
        column.operator("seethrough.regenerate_changed", icon="FILE_REFRESH")
        row = column.row(align=True)
        row.prop(props, "edit_strength")
        row.prop(props, "edit_margin")
        column.prop(props, "reproject_limit")
        if kept := kept_settings(scene):
            draw_message(column, kept, "INFO")

        status = RUNNER.status
        if SHOT.running:
            layout.progress(factor=SHOT.fraction, type="BAR", text=f"{SHOT.name}: {SHOT.progress}")
            if SHOT.note:
                draw_message(layout, SHOT.note[:1].upper() + SHOT.note[1:], "INFO")
        elif SHOT.outcome is not None:
            icon = {"done": "CHECKMARK", "failed": "ERROR"}.get(SHOT.state, "INFO")
            draw_message(layout, SHOT.outcome, icon, alert=SHOT.state == "failed")
            if SHOT.state != "done":
                draw_resume(layout, SHOT.seed, SHOT.draft)
            return
        elif not busy and not props.shot_done and props.shot_seed >= 0:  # a shot of a reopened .blend
            name = shot_name(props.shot_draft)
            draw_message(layout, f"The last {name} (seed {props.shot_seed}) did not finish", "INFO")
            draw_resume(layout, props.shot_seed, props.shot_draft)
        if status is None:
            return
        if busy and RUNNER.active:
            if status.state == "rendering":
                text = "Rendering OSCR (in the background)"
            elif status.state == "waiting":
                text = "Waiting for the server"
            elif status.state == "upscaling":
                text = status.message
            else:
                text = f"Step {status.step}/{status.total}" if status.total else status.message
            elapsed = time.monotonic() - status.started
            layout.progress(factor=status.fraction, type="BAR", text=f"{text} · {elapsed:.0f} s")
            if status.total == 0 or status.state in ("cancelling", "waiting"):
                draw_message(layout, status.message, "TIME")
            layout.operator("seethrough.cancel", icon="CANCEL")
        elif status.state == "failed":
            draw_message(layout, status.message, "ERROR", alert=True)
        else:
            draw_message(layout, status.message, "CHECKMARK" if status.state == "done" else "INFO")
        if status.is_noise:
            draw_message(layout, "The server runs random weights (--tiny): images are noise", "INFO")


def draw_resume(layout: bpy.types.UILayout, seed: int, draft: bool) -> None:
    """Resume a stopped shot: its seed, whatever the panel's is now (Random draws a new one)."""
    name = shot_name(draft)
    resume = layout.operator("seethrough.generate_frames", text=f"Resume {name} (seed {seed})", icon="PLAY")
    resume.seed, resume.draft = seed, draft


def draw_frame_size(layout: bpy.types.UILayout, scene: bpy.types.Scene) -> None:
    """The upscale settings, and what Generate makes of the render size (base, tiles)."""
    props = scene.seethrough
    column = layout.column(align=True)
    column.prop(props, "upscale_to_render")
    if not props.upscale_to_render:
        return
    row = column.row(align=True)
    row.prop(props, "base_megapixels")
    row.prop(props, "upscale_strength", text="Strength")
    width, height = scene_io.render_size(scene)
    try:
        plan = plan_upscale(
            width, height, seed=0, base_megapixels=props.base_megapixels, strength=props.upscale_strength
        )
    except SeeThroughError as exc:
        draw_message(layout, f"Render size {width}x{height}: {exc}", "ERROR", alert=True)
        return
    if plan.needs_tiles:
        text = (
            f"{width}x{height}: base {plan.base.width}x{plan.base.height}, "
            f"then {len(plan.tiles)} tiles of {plan.tile_width}x{plan.tile_height}"
        )
        draw_message(layout, text, "FULLSCREEN_ENTER")


class SEETHROUGH_PT_results(SeeThroughPanel, bpy.types.Panel):  # noqa: N801
    bl_label = "Results"
    bl_parent_id = "SEETHROUGH_PT_scene"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        props = context.scene.seethrough
        layout.template_list("SEETHROUGH_UL_history", "", props, "history", props, "history_index", rows=3)
        row = layout.row(align=True)
        row.operator("seethrough.open_history_item", text="Open", icon="IMAGE_DATA")
        row.operator("seethrough.use_as_background", text="Backplate", icon="CAMERA_DATA")
        row.operator("seethrough.upscale_result", text="Upscale", icon="FULLSCREEN_ENTER")
        row.operator("seethrough.use_result_settings", text="", icon="RECOVER_LAST")
        row.operator("seethrough.remove_history_item", text="", icon="X")
        if 0 <= props.history_index < len(props.history):
            item = props.history[props.history_index]
            draw_message(layout, f"seed {item.seed}, camera {item.camera}: {item.prompt}", "INFO")
            if item.parent:
                draw_message(layout, f"Made from {item.parent}: {item.change}", "FILE_REFRESH")
            elif item.change:  # a base picture whose upscale stopped
                draw_message(layout, item.change, "FULLSCREEN_ENTER")


class SEETHROUGH_PT_server(SeeThroughPanel, bpy.types.Panel):  # noqa: N801
    bl_label = "Server"
    bl_parent_id = "SEETHROUGH_PT_scene"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        prefs = preferences()
        if prefs is not None:
            layout.prop(prefs, "server_address", text="")
            row = layout.row(align=True)
            row.prop(prefs, "timeout_s")
            row.prop(prefs, "retry_s")
        address = settings().server_address
        if problem := address_problem(address):
            draw_message(layout, problem, "ERROR", alert=True)
        status = RUNNER.status
        if status is not None and status.model:
            draw_message(layout, f"Model: {status.model}", "INFO")
        draw_server_controls(layout, width=42)
        for line in SERVER.log_tail(3) if SERVER.running else []:  # loading progress; an exit shows its own
            layout.label(text=line[-60:])


CLASSES = (
    SEETHROUGH_UL_boxes,
    SEETHROUGH_UL_history,
    SEETHROUGH_PT_scene,
    SEETHROUGH_PT_boxes,
    SEETHROUGH_PT_generate,
    SEETHROUGH_PT_results,
    SEETHROUGH_PT_server,
)
