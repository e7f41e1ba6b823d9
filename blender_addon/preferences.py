"""Add-on preferences: the server address, the timeout, the output folder and the local server.

Everything else reads them through settings(), a plain dataclass, so the worker thread never
touches bpy and the add-on still works (with defaults) when loaded without its preferences.
"""

from __future__ import annotations

import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import bpy
from bpy.props import BoolProperty, FloatProperty, StringProperty

from seethrough_core.client import DEFAULT_TIMEOUT_S
from seethrough_core.endpoint import DEFAULT_ENDPOINT, EndpointError, parse_endpoint
from seethrough_core.keys import ClientKeys, KeyFileError

from . import server_launcher

# "bl_ext.user_default.seethrough" when installed as an extension, "blender_addon" from a checkout.
ADDON_ID = __package__
DEFAULT_SERVER_ARGUMENTS = (
    "serve --model black-forest-labs/FLUX.1-dev --lora checkpoints/seethrough3d_release/lora.safetensors"
)


@dataclass(frozen=True)
class Settings:
    server_address: str = DEFAULT_ENDPOINT
    timeout_s: float = DEFAULT_TIMEOUT_S
    output_dir: str = ""
    server_executable: str = "seethrough"
    server_arguments: str = DEFAULT_SERVER_ARGUMENTS
    server_log: str = ""
    start_server_with_blender: bool = False
    server_public_key: str = ""  # CURVE: the server's NAME.key file (empty: no CURVE)
    client_secret_key: str = ""  # CURVE: this workstation's NAME.key_secret file

    def client_keys(self) -> ClientKeys | None:
        """The CURVE keys to connect with, None when neither file is set; KeyFileError if unusable."""
        server, client = self.server_public_key.strip(), self.client_secret_key.strip()
        if not server and not client:
            return None
        if not server or not client:
            raise KeyFileError(
                "set both Server Keys in the add-on preferences: the server's public key file (NAME.key) "
                "and this workstation's secret key file (NAME.key_secret), or neither"
            )
        return ClientKeys.from_files(bpy.path.abspath(server), bpy.path.abspath(client))

    def output_root(self) -> Path:
        """Where renders and results are written: the preference, else <temp>/seethrough."""
        if self.output_dir.strip():
            return Path(bpy.path.abspath(self.output_dir.strip()))
        return Path(tempfile.gettempdir()) / "seethrough"

    def log_path(self) -> Path:
        if self.server_log.strip():
            return Path(bpy.path.abspath(self.server_log.strip()))
        return self.output_root() / "server.log"

    def server_command(self) -> server_launcher.ServerCommand:
        return server_launcher.ServerCommand(
            self.server_executable, self.server_arguments, self.server_address, self.log_path()
        )


def address_problem(address: str) -> str | None:
    """None for a usable address, else what is wrong with it (http://, no port, ...)."""
    try:
        parse_endpoint(address)
    except EndpointError as exc:
        return str(exc)
    return None


def settings() -> Settings:
    addon = bpy.context.preferences.addons.get(ADDON_ID)
    prefs = getattr(addon, "preferences", None)
    if prefs is None:
        return Settings()
    return Settings(
        server_address=prefs.server_address.strip(),
        timeout_s=prefs.timeout_s,
        output_dir=prefs.output_dir,
        server_executable=prefs.server_executable,
        server_arguments=prefs.server_arguments,
        server_log=prefs.server_log,
        start_server_with_blender=prefs.start_server_with_blender,
        server_public_key=prefs.server_public_key,
        client_secret_key=prefs.client_secret_key,
    )


def preferences() -> bpy.types.AddonPreferences | None:
    addon = bpy.context.preferences.addons.get(ADDON_ID)
    return getattr(addon, "preferences", None)


class SEETHROUGH_AP_preferences(bpy.types.AddonPreferences):  # noqa: N801
    bl_idname = ADDON_ID

    server_address: StringProperty(
        name="Server Address",
        description="ZeroMQ address of `seethrough serve`: tcp://host:port (not http://)",
        default=DEFAULT_ENDPOINT,
    )
    timeout_s: FloatProperty(
        name="Timeout",
        description="Seconds without an answer before the server counts as unreachable",
        default=DEFAULT_TIMEOUT_S,
        min=0.2,
        max=600.0,
        subtype="TIME_ABSOLUTE",
        unit="TIME_ABSOLUTE",
    )
    server_public_key: StringProperty(
        name="Server Public Key",
        description="For a server started with --server-key: its public key file (NAME.key). "
        "Empty: connect without CURVE (a server on this machine, or one started with --allow-remote)",
        subtype="FILE_PATH",
    )
    client_secret_key: StringProperty(
        name="Client Secret Key",
        description="This workstation's secret key file (NAME.key_secret from `seethrough keys create`); "
        "its NAME.key must be in the server's --client-keys folder",
        subtype="FILE_PATH",
    )
    output_dir: StringProperty(
        name="Output Folder",
        description="Where OSCR renders, masks and generated images go (empty: the system temp folder)",
        subtype="DIR_PATH",
    )
    server_executable: StringProperty(
        name="Executable",
        description="The `seethrough` command of the environment the server is installed in "
        "(a full path if Blender does not see it on PATH), or a Python interpreter",
        default="seethrough",
        subtype="FILE_PATH",
    )
    server_arguments: StringProperty(
        name="Arguments",
        description="Arguments for it; --bind is added from the server address. With a Python "
        "interpreter as executable, start with -m seethrough",
        default=DEFAULT_SERVER_ARGUMENTS,
    )
    server_log: StringProperty(
        name="Log File",
        description="Where the local server's output goes (empty: server.log in the output folder)",
        subtype="FILE_PATH",
    )
    start_server_with_blender: BoolProperty(
        name="Start with Blender",
        description="Start the local server when the add-on is enabled; it stops when Blender closes",
        default=False,
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        col = layout.column()
        col.prop(self, "server_address")
        if problem := address_problem(self.server_address):
            box = col.box()
            box.alert = True
            for i, line in enumerate(textwrap.wrap(problem, 90)):
                box.label(text=line, icon="ERROR" if i == 0 else "BLANK1")
        col.prop(self, "timeout_s")
        col.prop(self, "output_dir")

        keys = layout.box()
        keys.label(text="Server Keys (CURVE, for a server on another machine)", icon="LOCKED")
        keys.prop(self, "server_public_key")
        keys.prop(self, "client_secret_key")

        box = layout.box()
        box.label(text="Local Server", icon="CONSOLE")
        box.prop(self, "server_executable")
        box.prop(self, "server_arguments")
        box.prop(self, "server_log")
        box.prop(self, "start_server_with_blender")
        draw_server_controls(box)


def draw_server_controls(layout: bpy.types.UILayout) -> None:
    server = server_launcher.SERVER
    row = layout.row(align=True)
    if server.running:
        row.label(text=f"Running (pid {server.pid})", icon="CHECKMARK")
        row.operator("seethrough.stop_server", text="Stop", icon="CANCEL")
    else:
        row.label(text=server.describe_exit(), icon="DOT")
        row.operator("seethrough.start_server", text="Start", icon="PLAY")


CLASSES = (SEETHROUGH_AP_preferences,)
