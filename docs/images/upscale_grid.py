"""Draws docs/images/upscale_grid.png: the tile grid of a 3840 x 2160 frame over the example layout's OSCR.

    PYTHONPATH=. python docs/images/upscale_grid.py

The OSCR is rendered at a quarter of the frame (960 x 540, the frame camera's own framing); the grid is
the upscale's plan for the full frame, drawn at that scale: each tile in its own colour, overlaps
shaded, the base picture's view dashed.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from blender_addon.render import render_oscr_image
from seethrough_core.layout import load_layout
from seethrough_core.upscale_plan import frame_layout_at, plan_upscale

ROOT = Path(__file__).resolve().parents[2]
FRAME = (3840, 2160)
SHOWN = 4  # the picture is the frame at 1/4


def main() -> int:
    layout = frame_layout_at(load_layout(ROOT / "assets/examples/street.json"), FRAME)
    plan = plan_upscale(*FRAME, seed=42)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "oscr.png"
        render_oscr_image(frame_layout_at(layout, (FRAME[0] // SHOWN, FRAME[1] // SHOWN)), path, quiet=True)
        oscr = Image.open(path).convert("RGB")
    canvas = oscr.copy()
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    palette = [(255, 90, 90), (90, 200, 255), (255, 210, 60), (120, 255, 120), (220, 120, 255)]
    for tile in plan.tiles:
        colour = palette[(tile.row + tile.col) % len(palette)]
        box = [v / SHOWN for v in (tile.x, tile.y, tile.x + tile.width - 1, tile.y + tile.height - 1)]
        draw.rectangle(box, fill=(*colour, 28), outline=(*colour, 255), width=2)
        draw.text((box[0] + 6, box[1] + 4), f"{tile.row},{tile.col}", fill=(*colour, 255))
    canvas = Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    rect = plan.base.rect
    x0, y0, x1, y1 = (v / SHOWN for v in (rect.x, rect.y, rect.x + rect.width, rect.y + rect.height))
    for x in np.arange(x0, x1, 12):
        draw.line([(x, max(y0, 0)), (min(x + 6, x1), max(y0, 0))], fill=(255, 255, 255))
        draw.line(
            [(x, min(y1, canvas.height - 1)), (min(x + 6, x1), min(y1, canvas.height - 1))],
            fill=(255, 255, 255),
        )
    caption = (
        f"{FRAME[0]}x{FRAME[1]}: base {plan.base.width}x{plan.base.height}, {len(plan.tiles)} tiles of "
        f"{plan.tile_width} px, overlap >= {plan.overlap} px"
    )
    draw.rectangle([0, canvas.height - 22, canvas.width, canvas.height], fill=(0, 0, 0))
    draw.text((8, canvas.height - 18), caption, fill=(255, 255, 255))
    out = ROOT / "docs/images/upscale_grid.png"
    canvas.save(out, optimize=True)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
