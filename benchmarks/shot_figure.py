"""The picture of a steady shot in docs/addon.md (Frames of an animation): `python benchmarks/shot_figure.py`.

Four frames of a shot as Generate Frames makes them, each painted from its layout's own geometry
(reprojection_figure.paint: a checkered floor, a sky, flat-coloured boxes) in place of a generated
picture: frame 1 is generated whole; frame 2's layout is frame 1's, so it is a copy; at frame 3 the
woman has moved, and only her old and new places regenerate; at frame 4 the camera pans, frame 3 is
reprojected into it, and only what the pan reveals, and the boxes, regenerate. The regions are the
ones the add-on computes (edit_region.layout_change, reprojection.reproject), in red.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from reprojection_figure import BOXES, HEIGHT, MARGIN, WIDTH, paint, strip, tinted  # noqa: E402

from seethrough_core.edit_region import layout_change  # noqa: E402
from seethrough_core.layout import Camera, Layout  # noqa: E402
from seethrough_core.reprojection import reproject  # noqa: E402


def main() -> None:
    camera = Camera((0.0, 0.0, 1.6), (82.0, 0.0, 0.0), lens_mm=30.0)
    first = Layout("a street", (WIDTH, HEIGHT), camera, BOXES)
    woman = BOXES[1]
    moved = replace(first, boxes=(BOXES[0], replace(woman, center=(-0.1, 6.0, woman.center[2]))))
    panned = replace(moved, camera=replace(camera, rotation_euler_deg=(82.0, 0.0, 4.0)))

    frame_1 = paint(first)
    change = layout_change(first, moved, MARGIN)
    frame_3 = paint(moved)  # stands in for the edit: outside its region it is frame 2's, exactly
    frame_3[~change.region] = frame_1[~change.region]
    pan = reproject(frame_3, moved, panned, MARGIN)
    sheet = strip(
        [
            (frame_1, "1: generated whole"),
            (frame_1, "2: layout unchanged: frame 1, copied"),
            (tinted(frame_3, change.region), f"3: the woman moved: {change.region.mean():.0%} regenerates"),
            (tinted(pan.image, pan.region), f"4: the camera pans: {pan.share:.0%} regenerates"),
        ]
    )
    path = REPO / "docs" / "images" / "shot_frames.png"
    sheet.save(path, optimize=True)
    print(f"{path}: frame 3 regenerates {change.region.mean():.1%}, frame 4 {pan.share:.1%}")


if __name__ == "__main__":
    main()
