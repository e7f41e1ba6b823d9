"""Free memory for the info reply: GPU memory on CUDA, otherwise the system's available RAM."""

from __future__ import annotations

import os
import sys


def memory_kind(device: str) -> str:
    """Which memory free_memory() measures for a device: "gpu" for CUDA, else "system"."""
    return "gpu" if device.startswith("cuda") else "system"


def free_memory(device: str) -> tuple[int | None, str]:
    """(bytes free or None when unknown, memory_kind(device))."""
    if memory_kind(device) == "gpu":
        import torch  # only the CUDA path needs it; the loop stays light otherwise

        if not torch.cuda.is_available():
            return None, "gpu"
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free), "gpu"
    return available_ram(), "system"


def available_ram() -> int | None:
    """RAM that new allocations can get without swapping, or None where we cannot tell."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if sys.platform == "win32":
        return _windows_available_ram()
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _windows_available_ram() -> int | None:
    import ctypes

    class MemoryStatus(ctypes.Structure):
        _fields_ = [
            ("length", ctypes.c_uint32),
            ("memory_load", ctypes.c_uint32),
            ("total_phys", ctypes.c_uint64),
            ("avail_phys", ctypes.c_uint64),
            ("total_page_file", ctypes.c_uint64),
            ("avail_page_file", ctypes.c_uint64),
            ("total_virtual", ctypes.c_uint64),
            ("avail_virtual", ctypes.c_uint64),
            ("avail_extended_virtual", ctypes.c_uint64),
        ]

    status = MemoryStatus()
    status.length = ctypes.sizeof(MemoryStatus)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
        return None
    return int(status.avail_phys)
