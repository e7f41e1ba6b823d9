"""Blender tests run real bpy headless. Each test starts from an empty factory scene."""

from __future__ import annotations

import pytest

bpy = pytest.importorskip("bpy")


@pytest.fixture
def empty_blender():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    yield bpy
    bpy.ops.wm.read_factory_settings(use_empty=True)


@pytest.fixture
def addon(empty_blender):
    """The SeeThrough add-on enabled from this checkout (as Blender enables it), on an empty scene."""
    import addon_utils

    assert addon_utils.enable("blender_addon", default_set=True) is not None
    yield bpy
    addon_utils.disable("blender_addon", default_set=True)
