"""Blender tests run real bpy headless. Each test starts from an empty factory scene."""

from __future__ import annotations

import pytest

bpy = pytest.importorskip("bpy")

from addon_support import tiny_server as start_tiny_server  # noqa: E402 - after the skip without bpy
from conftest import MAIN_PYTHON  # noqa: E402


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


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory):
    """`seethrough serve --tiny` in a subprocess on a free loopback port, ready to generate; one per
    test module."""
    with start_tiny_server(MAIN_PYTHON, tmp_path_factory.mktemp("server") / "server.log") as address:
        yield address
