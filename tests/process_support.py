"""Running a command whose children may outlive it (torchrun's workers, a CLI's tiny server).

subprocess.run(timeout=...) kills only the command itself; a child that still holds the captured
pipes would then keep the test waiting for their end. Here the command gets its own process group,
and a timeout ends the whole group before the test fails with what the command had printed.
"""

from __future__ import annotations

import os
import signal
import subprocess


def run_command(command: list[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Like subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)."""
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs
    ) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            raise AssertionError(
                f"{' '.join(command[:6])} ... did not finish within {timeout:.0f} s and was stopped with its "
                f"children.\n--- stdout ---\n{out[-2000:]}\n--- stderr ---\n{err[-3000:]}"
            ) from None
    return subprocess.CompletedProcess(command, process.returncode, out, err)
