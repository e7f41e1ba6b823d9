"""OSCR image + all box masks: our pipeline against a one-render-per-box baseline, same run.

Ours: one Cycles render for the OSCR image, and every mask (amodal, visible, token grids,
depth order) from exact ray casting, no render. Baseline: the same OSCR render plus one render
per box with that box alone (what the reference does), made as cheap as a render can be here:
an opaque flat emission box, 1 sample, no denoising.

    python benchmarks/render_bench.py             # 1, 4, 8, 16 boxes at 512 and 1024 px
    python benchmarks/render_bench.py --sizes 512 --counts 1 4
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import bpy
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from blender_addon.compat import new_node_material  # noqa: E402
from blender_addon.oscr_scene import TemporaryScene  # noqa: E402
from blender_addon.render import blender_stdout_silenced, render_oscr_image  # noqa: E402
from blender_addon.scene_io import add_box, add_camera  # noqa: E402
from seethrough_core.layout import Layout, load_layout  # noqa: E402
from seethrough_core.masks import compute_masks  # noqa: E402
from seethrough_core.rendered_layout import write_masks  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "assets" / "examples" / "street.json"


def make_layout(count: int, size: int, seed: int = 0) -> Layout:
    rng = random.Random(seed)
    data = load_layout(EXAMPLE).to_dict()
    data["resolution"] = [size, size]
    data["boxes"] = [
        {
            "description": f"object {i}",
            "center": [rng.uniform(-10.0, -3.0), rng.uniform(-2.5, 2.5), 0.6],
            "size": [rng.uniform(0.4, 2.0), rng.uniform(0.4, 2.0), 1.2],
            "rotation_euler_deg": [0.0, 0.0, rng.uniform(-180.0, 180.0)],
        }
        for i in range(count)
    ]
    return Layout.from_dict(data)


def baseline_masks(layout: Layout, folder: Path) -> list[np.ndarray]:
    """One render per box, that box alone: the reference's way to get amodal masks."""
    masks = []
    for i, box in enumerate(layout.boxes):
        temp = TemporaryScene("baseline mask")
        try:
            scene = temp.scene
            scene.render.engine = "CYCLES"
            scene.cycles.samples = 1
            scene.cycles.use_denoising = False
            scene.render.resolution_x, scene.render.resolution_y = layout.resolution
            scene.render.resolution_percentage = 100
            scene.view_settings.view_transform = "Standard"
            camera = add_camera(scene, layout.camera)
            temp.own(bpy.data.objects, camera)
            temp.own(bpy.data.cameras, camera.data)
            scene.camera = camera
            obj = add_box(scene, box, i)
            temp.own(bpy.data.objects, obj)
            temp.own(bpy.data.meshes, obj.data)
            material, tree = new_node_material("flat")
            temp.own(bpy.data.materials, material)
            emission = tree.nodes.new("ShaderNodeEmission")
            output = tree.nodes.new("ShaderNodeOutputMaterial")
            tree.links.new(emission.outputs[0], output.inputs[0])
            obj.data.materials.append(material)
            path = folder / f"baseline_{i:03d}.png"
            scene.render.filepath = str(path)
            with blender_stdout_silenced():
                bpy.ops.render.render(write_still=True, scene=scene.name)
        finally:
            temp.remove()
        image = bpy.data.images.load(str(path))
        pixels = np.empty(len(image.pixels), dtype=np.float32)
        image.pixels.foreach_get(pixels)
        bpy.data.images.remove(image)
        masks.append(pixels.reshape(layout.height, layout.width, 4)[::-1, :, 0] > 0.5)
    return masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 4, 8, 16])
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for size in args.sizes:
            for count in args.counts:
                layout = make_layout(count, size)
                start = time.perf_counter()
                render_oscr_image(layout, folder / "oscr.png", quiet=True)
                oscr_s = time.perf_counter() - start
                start = time.perf_counter()
                masks = compute_masks(layout)
                write_masks(folder, masks)
                masks.report(layout)
                ours_masks_s = time.perf_counter() - start
                start = time.perf_counter()
                reference = baseline_masks(layout, folder)
                baseline_masks_s = time.perf_counter() - start
                agreement = min(
                    (m & r).sum() / max((m | r).sum(), 1) if (m | r).any() else 1.0
                    for m, r in zip(masks.silhouette, reference, strict=True)
                )
                rows.append((size, count, oscr_s, ours_masks_s, baseline_masks_s, agreement))
                print(f"  done {size}px x {count} boxes", file=sys.stderr, flush=True)

    print(f"\nBlender {bpy.app.version_string}, Cycles on CPU; OSCR render counted in both totals.\n")
    header = (
        "| px | boxes | OSCR render s | ours: masks s | ours: total s | baseline: N renders s "
        "| baseline: total s | speed-up (total) | speed-up (masks) | min mask IoU |"
    )
    print(header)
    print("|---" * 10 + "|")
    for size, count, oscr_s, ours_s, base_s, agreement in rows:
        print(
            f"| {size} | {count} | {oscr_s:.2f} | {ours_s:.3f} | {oscr_s + ours_s:.2f} | {base_s:.2f} "
            f"| {oscr_s + base_s:.2f} | {(oscr_s + base_s) / (oscr_s + ours_s):.2f}x "
            f"| {base_s / ours_s:.1f}x "
            f"| {agreement:.4f} |"
        )


if __name__ == "__main__":
    main()
