"""Start and stop the local `seethrough serve` process (see server_launcher.py)."""

from __future__ import annotations

import bpy

from seethrough_core.errors import SeeThroughError

from .preferences import settings
from .server_launcher import SERVER


class SEETHROUGH_OT_start_server(bpy.types.Operator):  # noqa: N801
    """Start `seethrough serve` with the arguments from the add-on preferences, output to the log file"""

    bl_idname = "seethrough.start_server"
    bl_label = "Start Local Server"

    def execute(self, context: bpy.types.Context) -> set[str]:
        current = settings()
        try:
            pid = SERVER.start(current.server_command())
        except SeeThroughError as exc:
            self.report({"ERROR"}, f"cannot start the local server: {exc}")
            return {"CANCELLED"}
        self.report(
            {"INFO"},
            f"Local server started (pid {pid}) on {current.server_address}; it loads the model before "
            f"answering. Log: {SERVER.log_path}",
        )
        return {"FINISHED"}


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


CLASSES = (SEETHROUGH_OT_start_server, SEETHROUGH_OT_stop_server)
