"""Images in Blender: OSCR renders and masks, step previews, generated results, camera backplates.

A generated image is loaded from the PNG file the worker wrote (with the generation record in its
text chunks) and packed, so the .blend carries those exact bytes and the record survives both
"Save As" and unpacking. Main thread only, like all bpy code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from seethrough_core.in_view import boxes_in_view
from seethrough_core.record import GenerationRecord
from seethrough_core.rendered_layout import RenderedLayout

PROP = "seethrough"  # the ID property group of a generated image's record
PREVIEW_IMAGE = "SeeThrough Preview"
OSCR_IMAGE = "SeeThrough OSCR"
RECORD_KEY = "record_json"  # the record's JSON inside the image's ID property group


def load_file_image(name: str, path: Path) -> bpy.types.Image:
    """The image `name` showing the file at `path`, reloaded if it already exists."""
    image = bpy.data.images.get(name)
    if image is not None and image.packed_file is None:
        image.filepath = str(path)
        image.source = "FILE"
        image.reload()
        return image
    image = bpy.data.images.load(str(path), check_existing=False)
    image.name = name
    return image


def load_oscr_images(oscr: RenderedLayout) -> list[bpy.types.Image]:
    """The OSCR image and every box's masks as images "SeeThrough OSCR", "SeeThrough amodal 000", ..."""
    loaded = [load_file_image(OSCR_IMAGE, oscr.oscr_path)]
    for box in oscr.report["boxes"]:
        for kind in ("amodal", "visible"):
            path = oscr.out_dir / box[f"{kind}_mask"]
            loaded.append(load_file_image(f"SeeThrough {kind} {box['index']:03d}", path))
    # Masks of boxes that no longer exist would mislead: drop them.
    for image in list(bpy.data.images):
        if image.name.startswith(("SeeThrough amodal ", "SeeThrough visible ")) and image not in loaded:
            bpy.data.images.remove(image)
    return loaded


def out_of_frame(oscr: RenderedLayout) -> list[str]:
    """The descriptions of the boxes the camera does not see at all: Generate leaves them out of the
    prompt (the rule of seethrough_core.in_view, as on the command line)."""
    boxes = oscr.report["boxes"]
    return [boxes[i]["description"] for i in boxes_in_view(oscr.token_grids).left_out]


def oscr_summary(oscr: RenderedLayout, shown: bool) -> str:
    """One line for the artist: how the render came about, and which boxes the camera misses."""
    took = "unchanged since the last render" if oscr.cached else f"rendered in {oscr.seconds:.1f} s"
    message = f"OSCR {took}: image {OSCR_IMAGE!r}"
    if not shown:
        message += " (open an Image Editor to see it)"
    hidden = out_of_frame(oscr)
    if hidden:
        message += f"; not in frame, left out of the prompt: {', '.join(hidden)}"
    return message


def show_in_image_editor(image: bpy.types.Image) -> bool:
    """Show the image in the first Image Editor of any open window; False when there is none."""
    window_manager = bpy.context.window_manager
    for window in getattr(window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type == "IMAGE_EDITOR":
                area.spaces.active.image = image
                area.tag_redraw()
                return True
    return False


def set_preview(rgb: np.ndarray) -> bpy.types.Image:
    """Write a uint8 RGB array into the image "SeeThrough Preview" (created or resized as needed)."""
    height, width = rgb.shape[:2]
    image = bpy.data.images.get(PREVIEW_IMAGE)
    if image is None or image.source != "GENERATED":
        image = bpy.data.images.new(PREVIEW_IMAGE, width, height, alpha=False)
    elif tuple(image.size) != (width, height):
        image.scale(width, height)
    rgba = np.ones((height, width, 4), dtype=np.float32)
    rgba[..., :3] = rgb[::-1].astype(np.float32) / 255.0  # Blender's rows run bottom to top
    image.pixels.foreach_set(rgba.ravel())
    image.update()
    return image


def result_image(name: str, png_path: Path, record: GenerationRecord) -> bpy.types.Image:
    """A packed image of the generated PNG, carrying the generation record as ID properties."""
    image = bpy.data.images.load(str(png_path), check_existing=False)
    image.name = name
    image.pack()  # the .blend now holds the PNG bytes, metadata chunks included
    image.use_fake_user = True  # never lost, even when removed from the history
    # The record once, as the PNG's text chunk holds it: read back cheaply (a panel's poll) by
    # image_record, without decoding the packed PNG.
    image[PROP] = {RECORD_KEY: record.to_json()}
    return image


# The last record parsed, by its JSON: a redraw asks for the shown result's record in several polls and
# lines, and parses it once.
_parsed: tuple[str, dict[str, Any]] = ("", {})


def image_record(image: bpy.types.Image) -> dict[str, Any] | None:
    """The record stored on a generated image, as a dict; None for other images. The dict is shared by
    the calls that ask for the same record: read it, never change it."""
    global _parsed
    props = image.get(PROP)
    if props is None or RECORD_KEY not in props:
        return None
    text = props[RECORD_KEY]
    if text != _parsed[0]:
        _parsed = (text, json.loads(text))
    return _parsed[1]


def entry_record(item: bpy.types.PropertyGroup | None) -> dict[str, Any] | None:
    """The record of a Results entry's image; None without an entry, an image or a record."""
    return image_record(item.image) if item is not None and item.image is not None else None


def image_file(image: bpy.types.Image) -> Path | None:
    """The file a result was loaded from (it stays there after packing); None when it has none."""
    return Path(bpy.path.abspath(image.filepath)) if image.filepath else None


def set_camera_background(
    camera: bpy.types.Object, image: bpy.types.Image, sequence: tuple[int, int] | None = None
) -> None:
    """Show the image behind the camera view, replacing an earlier SeeThrough backplate. ``sequence``:
    the image is a sequence of numbered frames (Generate Frames), its first frame number and count;
    each scene frame shows its own."""
    if sequence is not None:
        image[PROP] = {}  # marks the sequence as SeeThrough's backplate (it carries no record)
    data = camera.data
    data.show_background_images = True
    background = next(
        (bg for bg in data.background_images if bg.image is not None and bg.image.get(PROP) is not None),
        None,
    )
    if background is None:
        background = data.background_images.new()
    background.source = "IMAGE"
    background.image = image
    background.alpha = 1.0
    background.display_depth = "BACK"
    background.frame_method = "FIT"
    background.show_background_image = True
    if sequence is not None:
        first, count = sequence
        user = background.image_user
        # scene frame F shows file number F: Blender reads file (F - frame_start + 1 + frame_offset)
        user.frame_start, user.frame_duration, user.frame_offset = first, count, first - 1
        user.use_auto_refresh = True
