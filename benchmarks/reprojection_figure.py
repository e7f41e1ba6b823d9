"""The picture of a reprojected frame in docs/edit.md: `python benchmarks/reprojection_figure.py`.

A stand-in "previous frame" is painted from the layout's own geometry (a checkered floor, a sky
gradient, flat-coloured boxes), so the warp can be judged by eye: the checkers must line up. The camera
then pans 5 degrees and steps 60 cm to the side; the figure shows the previous frame, the reprojected
one (pixels it cannot fill in magenta), and the region that regenerates over it.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

import numpy as np  # noqa: E402  (after the path fix-up above)
from PIL import Image, ImageDraw  # noqa: E402

from seethrough_core.geometry import CameraModel  # noqa: E402
from seethrough_core.layout import Box, Camera, Layout  # noqa: E402
from seethrough_core.masks import compute_masks  # noqa: E402
from seethrough_core.reprojection import BOX, FLOOR, layout_depth, reproject  # noqa: E402

WIDTH, HEIGHT, MARGIN = 384, 256, 8
BOXES = (
    Box("a red car", (1.6, 9.0, 0.75), (1.8, 4.5, 1.5)),
    Box("a woman", (-0.9, 6.0, 0.85), (0.5, 0.4, 1.7)),
)
COLOURS = np.array([[196, 64, 52], [70, 120, 200]], dtype=np.float64)


def paint(layout: Layout) -> np.ndarray:
    """The layout as a picture: checkers on the floor, a sky gradient, each box in its colour."""
    depth = layout_depth(layout)
    cam = CameraModel(layout.camera, layout.width, layout.height)
    rays = cam.pixel_rays() @ cam.rotation.T
    points = cam.position + rays * np.where(depth.inverse_depth > 0, depth.depth, 0.0)[..., None]
    checker = (np.floor(points[..., 0]) + np.floor(points[..., 1])) % 2
    floor = np.where(checker[..., None] > 0, [150.0, 150.0, 140.0], [90.0, 95.0, 90.0])
    sky = np.array([170.0, 200.0, 235.0]) * (0.75 + 0.25 * np.linspace(0, 1, layout.height))[:, None, None]
    image = np.where((depth.surface == FLOOR)[..., None], floor, sky)
    visible = compute_masks(layout).visible
    for i, colour in enumerate(COLOURS):
        shade = 0.8 + 0.2 * np.clip(rays[..., 2] + 0.5, 0, 1)  # a little variation along the box
        image = np.where((visible[i] & (depth.surface == BOX))[..., None], colour * shade[..., None], image)
    return np.clip(image, 0, 255).astype(np.uint8)


def tinted(picture: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``picture`` with ``region`` (what regenerates) tinted red."""
    shown = picture.astype(np.float64)
    shown[region] = 0.45 * shown[region] + 0.55 * np.array([255.0, 40.0, 40.0])
    return shown.astype(np.uint8)


def strip(panels: list[tuple[np.ndarray, str]]) -> Image.Image:
    """The pictures side by side, each with its caption above it."""
    gap, label = 8, 22
    sheet = Image.new("RGB", (len(panels) * WIDTH + (len(panels) - 1) * gap, HEIGHT + label), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (panel, caption) in enumerate(panels):
        x = k * (WIDTH + gap)
        sheet.paste(Image.fromarray(np.asarray(panel, dtype=np.uint8)), (x, label))
        draw.text((x + 4, 5), caption, fill="black")
    return sheet


def main() -> None:
    camera = Camera((0.0, 0.0, 1.6), (82.0, 0.0, 0.0), lens_mm=30.0)
    before = Layout("a street", (WIDTH, HEIGHT), camera, BOXES)
    moved = replace(camera, location=(0.6, 0.0, 1.6), rotation_euler_deg=(82.0, 0.0, 5.0))
    after = replace(before, camera=moved)
    previous = paint(before)
    result = reproject(previous, before, after, MARGIN)

    shown = result.image.copy()
    shown[~result.seen] = (220, 0, 200)  # what the previous frame does not show
    sheet = strip(
        [
            (previous, "previous frame"),
            (shown, "reprojected into the moved camera"),
            (tinted(result.image, result.region), f"region that regenerates ({result.share:.0%})"),
        ]
    )
    path = REPO / "docs" / "images" / "reprojection.png"
    sheet.save(path, optimize=True)
    print(f"{path}: {result.share:.1%} regenerates, {(~result.seen).mean():.1%} not seen")


if __name__ == "__main__":
    main()
