"""`seethrough train --validate LAYOUT.json`: the layout's render is reused while the file is unchanged,
and rendered again once it changes (the one reuse rule of seethrough_core.rendered_layout)."""

from __future__ import annotations

import json

import pytest

from seethrough.train_command import _validation_folders
from seethrough_core.layout import Layout
from seethrough_core.rendered_layout import OSCR_NAME, REPORT_NAME, render_key

pytestmark = pytest.mark.slow  # one Blender render


def test_a_validation_layout_is_rendered_once_and_again_when_it_changes(empty_blender, layout_dict, tmp_path):
    path = tmp_path / "street.json"
    path.write_text(json.dumps(layout_dict))
    run = tmp_path / "run"
    (folder,) = _validation_folders([path], run)
    oscr = folder / OSCR_NAME
    rendered_at = oscr.stat().st_mtime_ns
    assert _validation_folders([path], run) == [folder] and oscr.stat().st_mtime_ns == rendered_at

    layout_dict["boxes"][0]["center"] = [-5.5, 0.0, 0.75]  # the artist moved the car
    path.write_text(json.dumps(layout_dict))
    _validation_folders([path], run)
    assert oscr.stat().st_mtime_ns != rendered_at
    report = json.loads((folder / REPORT_NAME).read_text())
    assert report["render"]["key"] == render_key(Layout.from_dict(layout_dict))
