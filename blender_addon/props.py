"""The add-on's properties: ``object.seethrough``, ``scene.seethrough`` and the history entries.

The box and scene groups are the RNA face of the ID properties scene_io reads and writes
(docs/layout.md, "In a .blend file"): the same group name and the same keys, so a .blend authored
with the add-on converts without it, and a layout imported without it shows up in its panels.
"""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from seethrough_core.limits import (
    DEFAULT_BASE_MEGAPIXELS,
    DEFAULT_EDIT_MARGIN_PX,
    DEFAULT_EDIT_STRENGTH,
    DEFAULT_GUIDANCE,
    DEFAULT_REPROJECT_LIMIT,
    DEFAULT_STEPS,
    DEFAULT_UPSCALE_STRENGTH,
    MAX_BASE_MEGAPIXELS,
    MAX_EDIT_MARGIN_PX,
    MAX_GUIDANCE,
    MAX_SEED,
    MAX_STEPS,
    MIN_BASE_MEGAPIXELS,
)
from seethrough_core.vocabulary import DEFAULT_SEED

from .templates import load_templates

# Blender's integer properties are signed 32-bit: the seed field (and the add-on's random picks) stop
# below the protocol's MAX_SEED.
MAX_UI_SEED = min(MAX_SEED, 2**31 - 1)
# An edit's strength lies in (0, 1]; the slider stops at a step the artist can still see.
MIN_UI_EDIT_STRENGTH = 0.05


def template_items() -> list[tuple[str, str, str]]:
    # Built once at import: Blender keeps pointers into enum item strings, so they must stay alive.
    return [
        (t.id, t.label, f"{t.description}: {t.size[0]:g} x {t.size[1]:g} x {t.size[2]:g} m (W x D x H)")
        for t in load_templates()
    ]


TEMPLATE_ITEMS = template_items()


def _box_index_get(self) -> int:
    """The list's active row follows the active object, so selecting in the viewport shows in the list."""
    try:
        active = bpy.context.view_layer.objects.active
    except AttributeError:  # no view layer in this context
        return -1
    if active is None:
        return -1
    for i, obj in enumerate(self.id_data.objects):
        if obj == active:
            return i
    return -1


def _box_index_set(self, value: int) -> None:
    objects = self.id_data.objects
    view_layer = getattr(bpy.context, "view_layer", None)
    if view_layer is None or not 0 <= value < len(objects):
        return
    obj = objects[value]
    for other in view_layer.objects:
        if other.select_get():
            other.select_set(False)
    if obj.name in view_layer.objects:
        obj.select_set(True)
        view_layer.objects.active = obj


def _description_changed(self, context) -> None:
    """A box is named after what it is: when its description changes, the object and its mesh follow,
    so the Outliner never shows "a dog" for a box that now says "a cat"."""
    from .scene_io import name_for_description

    obj = self.id_data
    name = name_for_description(self.description)
    if not name or obj.name == name or obj.name.startswith(f"{name}."):  # ".001": the name was taken
        return
    obj.name = name
    if obj.data is not None and obj.data.users == 1:
        obj.data.name = name


class SEETHROUGH_PG_box(bpy.types.PropertyGroup):  # noqa: N801
    """``object.seethrough``: marks an object as a layout box."""

    is_box: IntProperty(name="Is Box", description="1 when this object is a SeeThrough box", min=0, max=1)
    description: StringProperty(
        name="Description",
        description='What this box is, in a few words, e.g. "a red vintage car"',
        update=_description_changed,
    )
    index: IntProperty(name="Index", description="Order of the box in the layout and its masks", min=0)


class SEETHROUGH_PG_history_item(bpy.types.PropertyGroup):  # noqa: N801
    """One generated image; ``name`` is its label in the history list."""

    image: PointerProperty(name="Image", type=bpy.types.Image)
    seed: StringProperty(name="Seed")  # text: a server-picked seed may exceed 32 bits
    prompt: StringProperty(name="Prompt")
    camera: StringProperty(name="Camera")
    created: StringProperty(name="Created")
    parent: StringProperty(name="Made From", description="The result this one is an edit of")
    change: StringProperty(name="Change", description="What the edit regenerated")


class SEETHROUGH_PG_scene(bpy.types.PropertyGroup):  # noqa: N801
    """``scene.seethrough``: the layout's scene-wide fields plus generation settings and history."""

    # Layout fields, read by scene_io.
    scene_prompt: StringProperty(
        name="Scene Prompt",
        description='What surrounds the objects, e.g. "on a quiet street at dusk"',
    )
    light_seed: IntProperty(
        name="Light Seed",
        description="Seed of the OSCR image's point lights (unset: derived from the layout)",
    )
    extras_json: StringProperty(name="Extras", description="Free-form layout extras, as JSON")

    # Generation settings.
    seed: IntProperty(
        name="Seed", description="Seed used when Random is off", min=0, max=MAX_UI_SEED, default=DEFAULT_SEED
    )
    random_seed: BoolProperty(
        name="Random Seed", description="Pick a new seed for every generation", default=True
    )
    steps: IntProperty(
        name="Steps", description="Denoising steps", min=1, max=MAX_STEPS, default=DEFAULT_STEPS
    )
    guidance: FloatProperty(
        name="Guidance", description="FLUX guidance", min=0.0, max=MAX_GUIDANCE, default=DEFAULT_GUIDANCE
    )
    show_previews: BoolProperty(
        name="Step Previews",
        description='Show a small preview after each step in the image "SeeThrough Preview"',
        default=True,
    )

    # Regenerate Changed and Vary Box (docs/edit.md).
    edit_strength: FloatProperty(
        name="Strength",
        description="1: the changed region regenerates from noise; lower keeps more of the previous picture",
        min=MIN_UI_EDIT_STRENGTH,
        max=1.0,
        default=DEFAULT_EDIT_STRENGTH,
    )
    edit_margin: IntProperty(
        name="Margin",
        description="Pixels the regenerated region grows around the changed boxes (contact, shadows)",
        min=0,
        max=MAX_EDIT_MARGIN_PX,
        soft_max=128,
        default=DEFAULT_EDIT_MARGIN_PX,
        subtype="PIXEL",
    )
    reproject_limit: FloatProperty(
        name="Reproject Limit",
        description="After a camera move the result is reprojected into the new camera and only what the "
        "move reveals (and the boxes) regenerates, unless that is more of the picture than this; "
        "0: always a new picture",
        min=0.0,
        max=1.0,
        default=DEFAULT_REPROJECT_LIMIT,
        subtype="FACTOR",
    )

    # Frames above the model's size: a base picture, then a tiled upscale (docs/upscale.md).
    upscale_to_render: BoolProperty(
        name="Upscale to Render Size",
        description="Above the base size, Generate makes a base picture and upscales it in tiles to the "
        "scene's render size (resolution x percentage); off: the render size is generated directly",
        default=True,
    )
    base_megapixels: FloatProperty(
        name="Base Size (MP)",
        description="The model's working size in megapixels: the base picture and each upscale tile "
        "(1.0 = 1024 x 1024, where the model is at its best)",
        min=MIN_BASE_MEGAPIXELS,
        max=MAX_BASE_MEGAPIXELS,
        default=DEFAULT_BASE_MEGAPIXELS,
    )
    upscale_strength: FloatProperty(
        name="Upscale Strength",
        description="How much each tile may change the enlarged base: lower keeps the base, higher "
        "invents more detail",
        min=MIN_UI_EDIT_STRENGTH,
        max=1.0,
        default=DEFAULT_UPSCALE_STRENGTH,
    )

    # Add Box inputs.
    new_box_template: EnumProperty(
        name="Size", description="Real-world size of the new box", items=TEMPLATE_ITEMS, default="person"
    )
    new_box_description: StringProperty(
        name="Description", description="Description of the new box (empty: the size template's name)"
    )
    box_index: IntProperty(name="Active Box", get=_box_index_get, set=_box_index_set)

    # Results.
    history: CollectionProperty(type=SEETHROUGH_PG_history_item)
    history_index: IntProperty(name="Active Result", default=-1)

    # The last Generate Frames shot, saved with the .blend: after a reopen the panel offers to resume it.
    shot_seed: IntProperty(
        name="Shot Seed", description="The last shot's seed (-1: none)", default=-1, min=-1, max=MAX_UI_SEED
    )
    shot_draft: BoolProperty(name="Draft Shot", description="The last shot was Draft Frames")
    shot_done: BoolProperty(name="Shot Done", description="The last shot was finished", default=True)


CLASSES = (SEETHROUGH_PG_box, SEETHROUGH_PG_history_item, SEETHROUGH_PG_scene)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Object.seethrough = PointerProperty(type=SEETHROUGH_PG_box)
    bpy.types.Scene.seethrough = PointerProperty(type=SEETHROUGH_PG_scene)


def unregister() -> None:
    # The ID properties stay in the file: unregistering only removes their RNA description.
    del bpy.types.Scene.seethrough
    del bpy.types.Object.seethrough
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
