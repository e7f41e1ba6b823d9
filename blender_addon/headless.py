"""Scripts in background Blender (`blender -b --python script.py`): operators that return when done.

In the UI, Render OSCR, Generate, Start and the LoRA change return at once and a timer brings their
outcome in; background Blender runs no timers while a script runs. With ``wait=True`` these
operators run their main-thread callback themselves until the work is over, then report the outcome:
an error raises RuntimeError in the script, as for any operator. Only in background Blender: the UI
never waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import bpy
from bpy.props import BoolProperty

CALLBACK_INTERVAL_S = 0.05


class WaitsInBackground:
    """Operator mixin: the ``wait`` option."""

    wait: BoolProperty(
        name="Wait",
        description="For scripts in background Blender (blender -b): return only when done, with the "
        "outcome (an error raises). Not available in the UI, which never waits",
        default=False,
        options={"SKIP_SAVE"},
    )

    def refuse_wait_in_ui(self) -> bool:
        """True (and reported) when wait=True was asked for in an interactive Blender."""
        if self.wait and not bpy.app.background:
            self.report(  # type: ignore[attr-defined]
                {"ERROR"},
                "wait=True is for scripts in background Blender (blender -b); here the work runs in the "
                "background and the panel shows its progress",
            )
            return True
        return False


def run_callback_until_done(callback: Callable[[], float | None], on_interrupt: Callable[[], None]) -> None:
    """Call a timer callback as Blender's timer would until it returns None. Ctrl-C: ``on_interrupt``
    (a cancel), then wait for the callback to finish, then raise KeyboardInterrupt."""
    try:
        while callback() is not None:
            time.sleep(CALLBACK_INTERVAL_S)
    except KeyboardInterrupt:
        on_interrupt()
        while callback() is not None:
            time.sleep(CALLBACK_INTERVAL_S)
        raise
