"""Who holds a TCP port: turns "Address already in use" into a message a user can act on."""

from __future__ import annotations

import os
from pathlib import Path

_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


def port_owner(port: int) -> str | None:
    """Who listens on a port, e.g. "PID 1234 (python -m seethrough serve ...)"; Linux only, else None.

    Reads /proc, so it only sees processes this user may inspect; elsewhere it returns None and
    the caller falls back to naming the tools that can tell (lsof, netstat).
    """
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    proc = Path("/proc")
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            fds = list((pid_dir / "fd").iterdir())
        except OSError:
            continue  # gone meanwhile, or not ours to inspect
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue  # this descriptor closed meanwhile: the others still count
            if target.startswith("socket:[") and target[8:-1] in inodes:
                try:
                    return f"PID {pid_dir.name} ({_command_line(pid_dir)})"
                except OSError:
                    return f"PID {pid_dir.name}"
    return None


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[3] == _LISTEN and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    return inodes


def _command_line(pid_dir: Path) -> str:
    words = (pid_dir / "cmdline").read_bytes().decode(errors="replace").replace("\0", " ").split()
    return " ".join(words)[:120] or "?"
