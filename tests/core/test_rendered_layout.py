"""The rendered-layout folder: its files, when it is complete, and the one rule for reusing a render."""

from __future__ import annotations

import json

import numpy as np
import pytest

from seethrough_core.layout import Layout
from seethrough_core.masks import compute_masks
from seethrough_core.png import write_png
from seethrough_core.rendered_layout import (
    OSCR_NAME,
    REPORT_NAME,
    RenderedLayoutError,
    finish,
    is_complete,
    mask_path,
    read_rendered,
    render_key,
    reusable,
    write_masks,
)


def write_folder(folder, layout: Layout, engine: str = "cycles") -> None:
    """What a render writes, in its order, with a stand-in for Blender's OSCR image."""
    masks = compute_masks(layout)
    write_masks(folder, masks)
    write_png(folder / OSCR_NAME, np.zeros((layout.height, layout.width, 3), np.uint8))
    finish(folder, layout, masks.report(layout), engine, "seethrough3d-v1")


def test_a_finished_folder_reads_back_with_the_masks_token_grids(layout_dict, tmp_path):
    layout = Layout.from_dict(layout_dict)
    write_folder(tmp_path, layout)
    rendered = read_rendered(tmp_path)
    assert is_complete(tmp_path) and rendered.layout == layout
    np.testing.assert_array_equal(rendered.token_grids, compute_masks(layout).token_grids())
    assert mask_path(tmp_path, "amodal", 0).is_file() and mask_path(tmp_path, "visible", 0).is_file()
    assert json.loads((tmp_path / REPORT_NAME).read_text())["render"]["key"] == render_key(layout)


def test_a_folder_is_reused_only_for_the_same_layout_engine_and_profile(layout_dict, tmp_path):
    layout = Layout.from_dict(layout_dict)
    write_folder(tmp_path, layout)
    assert reusable(tmp_path, layout) is not None
    assert reusable(tmp_path, layout, engine="eevee") is None
    moved = dict(layout_dict, boxes=[dict(layout_dict["boxes"][0], center=[-5.0, 0.0, 0.75])])
    assert reusable(tmp_path, Layout.from_dict(moved)) is None
    assert render_key(layout) != render_key(layout, profile="another-profile")


def test_an_unfinished_or_foreign_folder_is_rendered_again(layout_dict, tmp_path):
    layout = Layout.from_dict(layout_dict)
    write_folder(tmp_path, layout)
    report = json.loads((tmp_path / REPORT_NAME).read_text())
    (tmp_path / REPORT_NAME).unlink()  # a render killed before its last write
    assert not is_complete(tmp_path) and reusable(tmp_path, layout) is None
    with pytest.raises(RenderedLayoutError, match="masks.json missing"):
        read_rendered(tmp_path)
    del report["render"]["key"]  # a folder from an older build
    (tmp_path / REPORT_NAME).write_text(json.dumps(report))
    assert read_rendered(tmp_path).layout == layout and reusable(tmp_path, layout) is None
