"""Start and stop the local `seethrough serve` process (server_launcher.py), and Apply LoRAs
(lora_change.py). The work runs on threads; timers bring the outcome to the panel. Tests and
background scripts call the timer callbacks directly (the bpy module never fires timers)."""

from __future__ import annotations

import bpy

from seethrough_core.endpoint import parse_endpoint
from seethrough_core.errors import SeeThroughError

from . import generation
from .headless import WaitsInBackground, run_callback_until_done
from .lora_change import LORA_CHANGE
from .preferences import Settings, settings
from .server_launcher import SERVER

WATCH_INTERVAL_S = 0.25


def start_local_server(current: Settings) -> int:
    """Start the server and the timer that shows how its start goes; returns its pid."""
    pid = SERVER.start(current.server_command(), current.keys_or_none())
    if not bpy.app.timers.is_registered(poll_local_server):
        bpy.app.timers.register(poll_local_server, first_interval=WATCH_INTERVAL_S, persistent=True)
    return pid


def poll_local_server() -> float | None:
    """Main-thread callback while the local server starts: redraw, and say how it went once it is ready
    or has ended (the watcher thread keeps the state). None when there is nothing more to wait for."""
    generation.tag_redraw()
    state = SERVER.state
    if not state.settled:
        return WATCH_INTERVAL_S
    print(f"SeeThrough: {state.message}", *state.log_lines, sep="\n  ")
    return None


def poll_lora_change() -> float | None:
    """Main-thread callback while a LoRA change is on its way: redraw; None once it is answered."""
    generation.tag_redraw()
    state = LORA_CHANGE.state
    if not state.settled:
        return WATCH_INTERVAL_S
    print(f"SeeThrough: {state.message}", *state.loaded, sep="\n  ")
    return None


class SEETHROUGH_OT_start_server(WaitsInBackground, bpy.types.Operator):  # noqa: N801
    """Start `seethrough serve` with the arguments and LoRA files from the add-on preferences, output to
    the log file. It counts as started once it answers; the panel shows how the start goes"""

    bl_idname = "seethrough.start_server"
    bl_label = "Start Local Server"

    def execute(self, context: bpy.types.Context) -> set[str]:
        if self.refuse_wait_in_ui():
            return {"CANCELLED"}
        current = settings()
        try:
            pid = start_local_server(current)
        except SeeThroughError as exc:
            self.report({"ERROR"}, f"cannot start the local server: {exc}")
            return {"CANCELLED"}
        if not self.wait:
            self.report({"INFO"}, f"Starting the local server (pid {pid}); log: {SERVER.log_path}")
            return {"FINISHED"}
        run_callback_until_done(poll_local_server, SERVER.stop)
        state = SERVER.state
        if state.answering:  # a script may go on: jobs sent while the model loads wait in its queue
            self.report({"INFO"}, f"{state.message}. Log: {SERVER.log_path}")
            return {"FINISHED"}
        self.report({"ERROR"}, "\n".join([state.message, *state.log_lines]))
        return {"CANCELLED"}


class SEETHROUGH_OT_stop_server(bpy.types.Operator):  # noqa: N801
    """Stop the local server started from Blender (frees its GPU memory)"""

    bl_idname = "seethrough.stop_server"
    bl_label = "Stop Local Server"

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not SERVER.running:
            self.report({"WARNING"}, "no local server is running")
            return {"CANCELLED"}
        code = SERVER.stop()
        self.report({"INFO"}, f"Local server stopped (exit code {code})")
        return {"FINISHED"}


class SEETHROUGH_OT_apply_loras(WaitsInBackground, bpy.types.Operator):  # noqa: N801
    """Load the preferences' LoRA files into the server at the Server Address without restarting it.
    It takes effect after the jobs already queued there"""

    bl_idname = "seethrough.apply_loras"
    bl_label = "Apply LoRAs"

    def execute(self, context: bpy.types.Context) -> set[str]:
        if self.refuse_wait_in_ui():
            return {"CANCELLED"}
        current = settings()
        try:
            endpoint = parse_endpoint(current.server_address).url
            LORA_CHANGE.start(endpoint, current.timeout_s, current.client_keys(), current.lora_request())
        except SeeThroughError as exc:
            self.report({"ERROR"}, f"cannot change the LoRAs: {exc}")
            return {"CANCELLED"}
        if not self.wait:
            if not bpy.app.timers.is_registered(poll_lora_change):
                bpy.app.timers.register(poll_lora_change, first_interval=WATCH_INTERVAL_S)
            self.report({"INFO"}, LORA_CHANGE.state.message)
            return {"FINISHED"}
        run_callback_until_done(poll_lora_change, lambda: None)  # the server finishes a change it began
        state = LORA_CHANGE.state
        if state.phase != "done":
            self.report({"ERROR"}, state.message)
            return {"CANCELLED"}
        self.report({"INFO"}, "; ".join([state.message, *state.loaded]))
        return {"FINISHED"}


CLASSES = (SEETHROUGH_OT_start_server, SEETHROUGH_OT_stop_server, SEETHROUGH_OT_apply_loras)
