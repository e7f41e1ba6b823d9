"""Add-on preferences: the server address, its timeout and retry time, the output folder, the local server.

Everything else reads them through settings(), a plain dataclass, so the worker thread never
touches bpy and the add-on still works (with defaults) when loaded without its preferences.
"""

from __future__ import annotations

import shlex
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import bpy
from bpy.props import BoolProperty, FloatProperty, StringProperty

from seethrough_core.client import DEFAULT_TIMEOUT_S
from seethrough_core.endpoint import DEFAULT_ENDPOINT, EndpointError, parse_endpoint
from seethrough_core.errors import SeeThroughError
from seethrough_core.generate_and_save import safe_name
from seethrough_core.keys import ClientKeys, KeyFileError
from seethrough_core.limits import DEFAULT_SERVER_RETRY_S
from seethrough_core.protocol import SetLoraRequest

from . import server_launcher
from .lora_change import LORA_CHANGE, lora_request

# "bl_ext.user_default.seethrough" when installed as an extension, "blender_addon" from a checkout.
ADDON_ID = __package__
# The LoRA is a preference of its own (LoRA File, absolute), never a path relative to where Blender runs.
DEFAULT_SERVER_ARGUMENTS = "serve --model black-forest-labs/FLUX.1-dev"


@dataclass(frozen=True)
class Settings:
    server_address: str = DEFAULT_ENDPOINT
    timeout_s: float = DEFAULT_TIMEOUT_S
    retry_s: float = DEFAULT_SERVER_RETRY_S  # a server that went away during a job is asked again so long
    output_dir: str = ""
    blend_file: str = ""  # the saved .blend's path (bpy.data.filepath): its output goes beside it
    server_executable: str = "seethrough"
    server_arguments: str = DEFAULT_SERVER_ARGUMENTS
    server_log: str = ""
    start_server_with_blender: bool = False
    server_public_key: str = ""  # CURVE: the server's NAME.key file (empty: no CURVE)
    client_secret_key: str = ""  # CURVE: this workstation's NAME.key_secret file
    lora_file: str = ""  # the SeeThrough3D LoRA: for the local server and Apply LoRAs
    lora_scale: float = 1.0
    style_lora_file: str = ""  # a style LoRA on top (empty: none)
    style_lora_scale: float = 1.0

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
        """The Output Folder, else <temp>/seethrough (the local server's log goes there)."""
        if self.output_dir.strip():
            return Path(bpy.path.abspath(self.output_dir.strip()))
        return Path(tempfile.gettempdir()) / "seethrough"

    @property
    def in_temp(self) -> bool:
        """Renders, results and shots go to the temp folder: no Output Folder, and the .blend is not saved."""
        return not self.output_dir.strip() and not self.blend_file

    def scene_dir(self, scene_name: str) -> Path:
        """Where a scene's OSCR renders, results and shots are written: under the Output Folder; without
        one, beside the saved .blend (seethrough_NAME/, as Blender keeps blendcache_NAME/), so they stay
        with the project: frames are not packed into it; the temp folder only for an unsaved file."""
        if self.output_dir.strip() or not self.blend_file:
            return self.output_root() / safe_name(scene_name)
        blend = Path(self.blend_file)
        return blend.parent / f"seethrough_{blend.stem}" / safe_name(scene_name)

    def log_path(self) -> Path:
        if self.server_log.strip():
            return Path(bpy.path.abspath(self.server_log.strip()))
        return self.output_root() / "server.log"

    def server_command(self) -> server_launcher.ServerCommand:
        return server_launcher.ServerCommand(
            self.server_executable,
            self.server_arguments,
            self.server_address,
            self.log_path(),
            lora=_absolute(self.lora_file),
            lora_scale=self.lora_scale,
            style_lora=_absolute(self.style_lora_file),
            style_lora_scale=self.style_lora_scale,
        )

    def lora_request(self) -> SetLoraRequest:
        """Apply LoRAs: the server's LoRAs as these preferences say."""
        return lora_request(
            _absolute(self.lora_file), self.lora_scale, _absolute(self.style_lora_file), self.style_lora_scale
        )

    def keys_or_none(self) -> ClientKeys | None:
        """The CURVE keys, or None when they are not set or unusable (the Generate panel explains)."""
        try:
            return self.client_keys()
        except KeyFileError:
            return None


def _absolute(path: str) -> str:
    """A preference's file path made absolute ("//" is the .blend's folder); empty stays empty."""
    return str(Path(bpy.path.abspath(path.strip())).absolute()) if path.strip() else ""


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
    blend_file = getattr(bpy.data, "filepath", "")  # none while the add-on registers (restricted data)
    if prefs is None:
        return Settings(blend_file=blend_file)
    return Settings(
        blend_file=blend_file,
        server_address=prefs.server_address.strip(),
        timeout_s=prefs.timeout_s,
        retry_s=prefs.retry_s,
        output_dir=prefs.output_dir,
        server_executable=prefs.server_executable,
        server_arguments=prefs.server_arguments,
        server_log=prefs.server_log,
        start_server_with_blender=prefs.start_server_with_blender,
        server_public_key=prefs.server_public_key,
        client_secret_key=prefs.client_secret_key,
        lora_file=prefs.lora_file,
        lora_scale=prefs.lora_scale,
        style_lora_file=prefs.style_lora_file,
        style_lora_scale=prefs.style_lora_scale,
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
    retry_s: FloatProperty(
        name="Retry For",
        description="Seconds a server that went away during a job (it crashed, or was restarted) is asked "
        "again before the job fails; the job goes on once it answers. 0: the job fails at once",
        default=DEFAULT_SERVER_RETRY_S,
        min=0.0,
        max=3600.0,
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
        description="Where OSCR renders, masks, generated images and frames go (empty: beside the saved "
        ".blend, in seethrough_NAME; the system temp folder while the .blend is not saved)",
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
    lora_file: StringProperty(
        name="LoRA File",
        description="The SeeThrough3D LoRA (lora.safetensors) on this machine: the local server starts with "
        "it, and Apply LoRAs loads it into the running server",
        subtype="FILE_PATH",
    )
    lora_scale: FloatProperty(
        name="LoRA Scale", description="Strength of the SeeThrough3D LoRA (1: as trained)", default=1.0,
        min=0.0, soft_max=2.0,
    )  # fmt: skip
    style_lora_file: StringProperty(
        name="Style LoRA",
        description="An ordinary FLUX.1 LoRA (a style, a character) on top; empty: none",
        subtype="FILE_PATH",
    )
    style_lora_scale: FloatProperty(
        name="Style Scale", description="Strength of the style LoRA", default=1.0, soft_min=0.0, soft_max=2.0
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
            draw_message(col.box(), problem, "ERROR", alert=True, width=90)
        row = col.row(align=True)
        row.prop(self, "timeout_s")
        row.prop(self, "retry_s")
        col.prop(self, "output_dir")

        keys = layout.box()
        keys.label(text="Server Keys (CURVE, for a server on another machine)", icon="LOCKED")
        keys.prop(self, "server_public_key")
        keys.prop(self, "client_secret_key")

        draw_lora_controls(layout.box(), self)

        box = layout.box()
        box.label(text="Local Server", icon="CONSOLE")
        box.prop(self, "server_executable")
        box.prop(self, "server_arguments")
        box.prop(self, "server_log")
        box.prop(self, "start_server_with_blender")
        draw_server_controls(box, show_command=True)


def draw_message(
    layout: bpy.types.UILayout, text: str, icon: str, *, alert: bool = False, width: int = 42
) -> None:
    """A wrapped message: the sidebar cuts long labels, and errors must be readable in full."""
    column = layout.column(align=True)
    column.alert = alert
    for i, line in enumerate(textwrap.wrap(text, width) or [""]):
        column.label(text=line, icon=icon if i == 0 else "BLANK1")


def draw_lora_controls(layout: bpy.types.UILayout, prefs: SEETHROUGH_AP_preferences) -> None:
    """The LoRA files, Apply LoRAs and what the last change did."""
    layout.label(text="LoRAs", icon="MODIFIER")
    layout.prop(prefs, "lora_file")
    layout.prop(prefs, "lora_scale")
    layout.prop(prefs, "style_lora_file")
    layout.prop(prefs, "style_lora_scale")
    change = LORA_CHANGE.state
    row = layout.row()
    row.enabled = change.settled
    row.operator("seethrough.apply_loras", text="Apply LoRAs to the Server", icon="FILE_REFRESH")
    if change.phase != "idle":
        failed = change.phase == "failed"
        draw_message(layout, change.message, "ERROR" if failed else "INFO", alert=failed, width=90)
        for line in change.loaded:
            layout.label(text=line, icon="BLANK1")


def draw_server_controls(layout: bpy.types.UILayout, show_command: bool = False, width: int = 90) -> None:
    """Start / Stop, what the local server is doing, and why it stopped (exit code, log lines)."""
    server = server_launcher.SERVER
    state = server.state
    current = settings()
    try:
        command = current.server_command().argv()
        problem = None
    except SeeThroughError as exc:
        command, problem = [], str(exc)
    if problem is not None and not server.running:
        draw_message(layout, problem, "ERROR", alert=True, width=width)
    elif show_command and not server.running:
        draw_message(layout, "Runs: " + shlex.join(command), "CONSOLE", width=width)
    row = layout.row(align=True)
    icons = {
        "ready": "CHECKMARK",
        "exited": "ERROR",
        "silent": "ERROR",
        "loading": "SORTTIME",
        "starting": "SORTTIME",
    }
    alert = state.phase in ("exited", "silent")
    draw_message(row, state.message, icons.get(state.phase, "DOT"), alert=alert, width=width)
    if server.running:
        row.operator("seethrough.stop_server", text="Stop", icon="CANCEL")
    else:
        row.operator("seethrough.start_server", text="Start", icon="PLAY")
    for line in state.log_lines:
        layout.label(text=line[-110:], icon="BLANK1")


CLASSES = (SEETHROUGH_AP_preferences,)
