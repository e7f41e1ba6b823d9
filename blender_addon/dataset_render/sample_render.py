"""One dataset sample's files: the target render, the OSCR image (as the checkpoint's JPEG) and the masks.

<dir>/target.png            the assets rendered with Cycles
<dir>/oscr.jpg              the OSCR image (profile seethrough3d-v1), JPEG at the profile's quality
<dir>/masks/amodal_NNN.png, visible_NNN.png, masks.json, layout.json   as `seethrough render` writes
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from seethrough_core.dataset_format import OSCR_JPEG_QUALITY, OSCR_NAME, TARGET_NAME
from seethrough_core.dataset_scenes import TargetLook
from seethrough_core.layout import Layout
from seethrough_core.oscr_spec import DEFAULT_PROFILE, encode_condition_jpeg, get_profile
from seethrough_core.png import write_bytes_atomic
from seethrough_core.rendered_layout import OSCR_NAME as RENDERED_OSCR_NAME
from seethrough_core.vocabulary import DEFAULT_RENDER_ENGINE

from ..render import render_layout
from .asset_library import AssetLibrary
from .target_render import render_target


def render_sample(
    layout: Layout,
    asset_ids: list[str],
    library: AssetLibrary,
    look: TargetLook,
    out_dir: Path,
    *,
    samples: int,
    engine: str = DEFAULT_RENDER_ENGINE,
    profile: str = DEFAULT_PROFILE,
) -> dict:
    """Write every file of one sample into ``out_dir`` (emptied first: an interrupted attempt's leftovers
    go). Returns its files (relative to ``out_dir``), each box's visibility ratio and the seconds spent
    per part."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    start = time.perf_counter()
    render_target(layout, asset_ids, library, look, out_dir / TARGET_NAME, samples=samples)
    target_s = time.perf_counter() - start

    result = render_layout(layout, out_dir, engine=engine, profile=profile, quiet=True)
    start = time.perf_counter()
    png = out_dir / RENDERED_OSCR_NAME
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"))
    quality = get_profile(profile).condition_jpeg_quality or OSCR_JPEG_QUALITY
    write_bytes_atomic(out_dir / OSCR_NAME, encode_condition_jpeg(pixels, quality))
    png.unlink()
    timings = {
        "target_s": round(target_s, 4),
        "oscr_s": round(result.timings["oscr_s"] + time.perf_counter() - start, 4),
        "masks_s": round(result.timings["masks_s"], 4),
    }
    boxes = result.report["boxes"]
    return {
        "files": {
            "target": TARGET_NAME,
            "oscr": OSCR_NAME,
            "amodal_masks": [box["amodal_mask"] for box in boxes],
            "visible_masks": [box["visible_mask"] for box in boxes],
            "masks_json": "masks.json",
        },
        "visibility": [box["visibility_ratio"] for box in boxes],
        "timings": timings,
    }
