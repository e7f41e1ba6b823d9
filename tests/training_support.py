"""A small training dataset written in code (no Blender): two overlapping boxes per sample, saved with
the dataset format's own writer, and a rendered-layout folder for validation images."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
from conftest import BASE_LAYOUT
from PIL import Image

from seethrough_core.dataset_format import DatasetSample, append_sample, sample_dir
from seethrough_core.layout import Layout
from seethrough_core.prompt import compose_prompt
from seethrough_core.token_grid import grid_to_strings, pool_to_token_grid

SCENE = "on mars, sci-fi background, scary."
DESCRIPTIONS = ["mars rover", "spaceship"]
SIDE = 256
# Box 0 in front; box 1 behind it, its left part hidden by box 0.
BOX_FRONT = (slice(64, 192), slice(32, 128))
BOX_BACK = (slice(96, 224), slice(96, 224))


def two_box_masks(side: int = SIDE) -> tuple[np.ndarray, np.ndarray]:
    """(amodal, visible) uint8 [2, side, side] masks, 255 inside; box 0 occludes part of box 1."""
    scale = side / SIDE
    amodal = np.zeros((2, side, side), dtype=np.uint8)
    for index, (rows, cols) in enumerate((BOX_FRONT, BOX_BACK)):
        amodal[index, _scaled(rows, scale), _scaled(cols, scale)] = 255
    visible = amodal.copy()
    visible[1][amodal[0] > 0] = 0
    return amodal, visible


def layout_dict(side: int = SIDE) -> dict:
    layout = copy.deepcopy(BASE_LAYOUT)
    layout["scene_prompt"] = SCENE
    layout["resolution"] = [side, side]
    box = layout["boxes"][0]
    layout["boxes"] = [dict(box, description=text) for text in DESCRIPTIONS]
    return layout


def write_dataset(root: Path, count: int = 2, side: int = SIDE, seed: int = 0) -> Path:
    """``count`` samples of two boxes each; every target image is different."""
    root.mkdir(parents=True, exist_ok=True)
    layout = Layout.from_dict(layout_dict(side))
    prompt = compose_prompt(SCENE, DESCRIPTIONS)
    amodal, visible = two_box_masks(side)
    ratios = [float(visible[i].sum() / amodal[i].sum()) for i in range(2)]
    rng = np.random.default_rng(seed)
    for index in range(count):
        sample_id = f"{index:06d}"
        folder = sample_dir(root, sample_id)
        (folder / "masks").mkdir(parents=True)
        target = np.zeros((side, side, 3), dtype=np.uint8) + rng.integers(0, 80, size=3, dtype=np.uint8)
        target[amodal[1] > 0] = rng.integers(80, 255, size=3)
        target[amodal[0] > 0] = rng.integers(80, 255, size=3)
        Image.fromarray(target).save(folder / "target.png")
        oscr = (rng.random((side, side, 3)) * 255).astype(np.uint8)
        Image.fromarray(oscr).save(folder / "oscr.jpg", quality=90)
        for box in range(2):
            Image.fromarray(amodal[box]).save(folder / "masks" / f"amodal_{box:03d}.png")
            Image.fromarray(visible[box]).save(folder / "masks" / f"visible_{box:03d}.png")
        (folder / "masks.json").write_text(json.dumps({"boxes": []}))
        relative = f"samples/{sample_id}"
        append_sample(
            root,
            DatasetSample(
                id=sample_id,
                target=f"{relative}/target.png",
                oscr=f"{relative}/oscr.jpg",
                amodal_masks=[f"{relative}/masks/amodal_{box:03d}.png" for box in range(2)],
                visible_masks=[f"{relative}/masks/visible_{box:03d}.png" for box in range(2)],
                masks_json=f"{relative}/masks.json",
                layout=layout.to_dict(),
                prompt=prompt.text,
                descriptions=list(prompt.descriptions),
                spans=[list(span) for span in prompt.spans],
                visibility=ratios,
                width=side,
                height=side,
                seed=index,
            ),
        )
    return root


def write_rendered_layout(folder: Path, side: int = SIDE) -> Path:
    """What `seethrough render` writes that validation reads: layout.json, oscr.png, masks.json."""
    folder.mkdir(parents=True, exist_ok=True)
    layout = Layout.from_dict(layout_dict(side))
    (folder / "layout.json").write_text(layout.to_json())
    amodal, _ = two_box_masks(side)
    boxes = [{"index": i, "token_grid": grid_to_strings(pool_to_token_grid(amodal[i]))} for i in range(2)]
    (folder / "masks.json").write_text(json.dumps({"boxes": boxes}))
    oscr = (np.random.default_rng(5).random((side, side, 3)) * 255).astype(np.uint8)
    Image.fromarray(oscr).save(folder / "oscr.png")
    return folder


def _scaled(span: slice, scale: float) -> slice:
    return slice(int(span.start * scale), int(span.stop * scale))
