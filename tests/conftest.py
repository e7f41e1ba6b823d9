"""Shared test helpers: small layouts built in code; the end of a run that loaded bpy and torch."""

from __future__ import annotations

import copy
import os
import sys

import pytest

# The interpreter of the main install (Python 3.11: bpy 4.5.15 LTS and the server with torch). The pass
# on another Blender release (.ci/blender52.sh) has no torch: it runs the tiny server, and renders
# the 4.5 reference it compares with, through this interpreter. Unset, it is this one.
MAIN_PYTHON = os.environ.get("SEETHROUGH_MAIN_PYTHON", sys.executable)

BASE_LAYOUT = {
    "format": "seethrough.layout",
    "version": 1,
    "scene_prompt": "on a quiet street",
    "resolution": [256, 256],
    # The reference camera at 30 degrees elevation: on the circle of radius 6 around (-6, 0, 0).
    "camera": {
        "location": [-0.8038, 0.0, 3.0],
        "rotation_euler_deg": [60.0, 0.0, 90.0],
        "lens_mm": 50.0,
        "sensor_width_mm": 36.0,
    },
    "boxes": [
        {
            "description": "a red vintage car",
            "center": [-6.0, 0.0, 0.75],
            "size": [1.8, 2.0, 1.5],
            "rotation_euler_deg": [0.0, 0.0, 30.0],
        },
    ],
}

# The shared layout plus a small, partly hidden second box: a moved dog changes a small region.
DOG = "a small white dog"
LAYOUT_WITH_DOG = {
    **BASE_LAYOUT,
    "boxes": [
        *BASE_LAYOUT["boxes"],
        {"description": DOG, "center": [-4.6, 0.4, 0.3], "size": [0.3, 0.8, 0.6]},
    ],
}


@pytest.fixture
def layout_dict():
    """A fresh, valid layout dict the test may modify."""
    return copy.deepcopy(BASE_LAYOUT)


# bpy 4.5 as a Python module can deadlock after the run, in its C++ static destructors, when torch is
# loaded in the same process and the glTF exporter ran (its audio device's delayed-close thread still
# waits on the condition variable being destroyed; reproduced with `import torch, bpy`, one
# export_scene.gltf and a normal exit). Only a test run loads both: Blender's own processes and the
# server never do. Once pytest has reported, such a run leaves with its exit status and no destructors.
_exit_status = 0


def pytest_sessionfinish(session, exitstatus):
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if "bpy" in sys.modules and "torch" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status)
