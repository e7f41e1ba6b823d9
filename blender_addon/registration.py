"""Registers the add-on's classes and properties; unregistering also ends what it started."""

from __future__ import annotations

import bpy

from . import (
    box_links,
    generation,
    ops_author,
    ops_generate,
    ops_render,
    ops_results,
    ops_server,
    preferences,
    props,
    ui,
)
from .frame_sequence import SHOT
from .generation_jobs import RUNNER
from .server_launcher import SERVER

CLASSES = (
    *preferences.CLASSES,
    *ops_author.CLASSES,
    *ops_render.CLASSES,
    *ops_generate.CLASSES,
    *ops_results.CLASSES,
    *ops_server.CLASSES,
    *ui.CLASSES,
)


def register() -> None:
    props.register()
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    box_links.register_handlers()
    current = preferences.settings()
    if current.start_server_with_blender and not SERVER.running:
        try:
            ops_server.start_local_server(current)
        except Exception as exc:  # never let a server problem keep the add-on from loading
            print(f"SeeThrough: could not start the local server: {exc}")


def unregister() -> None:
    # First stop what runs in the background: the job's thread, its timer, the local server.
    SHOT.shutdown()
    RUNNER.shutdown()
    generation.stop_timer()
    for timer in (ops_server.poll_local_server, ops_server.poll_lora_change):
        if bpy.app.timers.is_registered(timer):
            bpy.app.timers.unregister(timer)
    box_links.unregister_handlers()
    SERVER.stop()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
    props.unregister()
