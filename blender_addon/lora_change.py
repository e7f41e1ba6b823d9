"""Apply LoRA Files: the preferences' LoRAs sent to the running server (`set_lora`). No bpy.

The request runs on a worker thread: the server answers once the jobs queued before it are done
and the files are loaded, which can take minutes. The panel shows the state this module keeps;
the main thread only reads it (ops_server.poll_lora_change, driven by a timer).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from seethrough_core.client import SeeThroughClient, ServerError
from seethrough_core.errors import SeeThroughError
from seethrough_core.keys import ClientKeys
from seethrough_core.protocol import SetLoraRequest, StyleLoraChoice, describe_loras


@dataclass(frozen=True)
class LoraChangeState:
    phase: str = "idle"  # idle, sending, done, failed
    message: str = ""
    loaded: tuple[str, ...] = ()  # what the server holds now, one line per LoRA (when done)

    @property
    def settled(self) -> bool:
        return self.phase != "sending"


def lora_request(lora: str, lora_scale: float, style_lora: str, style_scale: float) -> SetLoraRequest:
    """The server's LoRAs as the preferences say (absolute paths; an empty LoRA File keeps the server's
    SeeThrough3D LoRA, an empty Style LoRA removes its style LoRAs)."""
    styles = [StyleLoraChoice(style_lora, style_scale)] if style_lora else []
    return SetLoraRequest(lora=lora or None, lora_scale=lora_scale, style_loras=styles)


class LoraChange:
    """At most one change on its way at a time."""

    def __init__(self) -> None:
        self.state = LoraChangeState()

    def start(
        self, endpoint: str, timeout_s: float, keys: ClientKeys | None, request: SetLoraRequest
    ) -> None:
        if not self.state.settled:
            raise SeeThroughError("a LoRA change is already on its way to the server; wait for it")
        request.validate()  # a bad value fails here, on the main thread, with nothing sent
        self.state = LoraChangeState(
            "sending", f"Changing the LoRAs on {endpoint} (after the jobs queued before) ..."
        )
        worker = threading.Thread(
            target=self._run, args=(endpoint, timeout_s, keys, request), name="seethrough-lora", daemon=True
        )
        worker.start()

    def _run(self, endpoint: str, timeout_s: float, keys: ClientKeys | None, request: SetLoraRequest) -> None:
        try:
            with SeeThroughClient(endpoint, timeout_s, keys=keys) as client:
                reply = client.set_lora(request)
        except ServerError as exc:
            self.state = LoraChangeState("failed", f"The server refused the LoRA change: {exc.message}")
        except SeeThroughError as exc:
            self.state = LoraChangeState("failed", f"The LoRA change did not reach the server: {exc}")
        else:
            lines = tuple(describe_loras(reply.model, reply.lora))
            self.state = LoraChangeState("done", f"LoRAs changed in {reply.load_s:.1f} s", lines)


LORA_CHANGE = LoraChange()
