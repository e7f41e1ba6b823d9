"""Stopping long work cleanly: the first Ctrl-C (or SIGTERM) asks for a clean stop, a second Ctrl-C
raises KeyboardInterrupt at once. The server and the trainer both stop this way."""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType


def install_stop_handlers(request_stop: Callable[[], None]) -> Callable[[], None]:
    """Call ``request_stop`` on the first SIGINT or SIGTERM; returns a function restoring the old handlers.

    Must run in the main thread (Python delivers signals there).
    """
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C leaves at once
        request_stop()

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
