"""Peak server memory for oversized messages: a real `seethrough serve --tiny` process, attacked.

Each case sends one multipart message ([info header] + COUNT frames of SIZE MiB, one buffer sent
COUNT times so the client stays small), waits for the server's answer or for it to drop the
connection, checks that the server still answers, and reads the server process's peak RSS (VmHWM,
reset before each case through /proc/PID/clear_refs). Linux only.

    python benchmarks/oversize_bench.py                     # the two cases of issue 10
    python benchmarks/oversize_bench.py --case 3x200 --case 20x8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import msgpack
import zmq
from zmq.utils.monitor import recv_monitor_message

from seethrough_core.client import SeeThroughClient
from seethrough_core.limits import MAX_MESSAGE_BYTES
from seethrough_core.server_process import ServerProcess

MIB = 1 << 20


@dataclass
class Outcome:
    case: str
    idle_rss_mib: float
    peak_rss_mib: float
    answer: str  # the server's reply type and code, or "disconnected"

    @property
    def above_idle_mib(self) -> float:
        return self.peak_rss_mib - self.idle_rss_mib


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def attack(endpoint: str, pid: int, count: int, size_mib: int, timeout_s: float) -> Outcome:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    idle = status_kib(pid, "VmRSS") / 1024
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    sock.connect(endpoint)
    try:
        header = msgpack.packb({"type": "info", "protocol": 1, "request_id": "oversize"})
        block = bytes(size_mib * MIB)
        sock.send_multipart([header, *([block] * count)], copy=False)
        del block
        answer = "nothing within the timeout"
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready = dict(poller.poll(100))
            if sock in ready:
                reply = msgpack.unpackb(sock.recv_multipart()[0])
                answer = f"{reply['type']} {reply.get('code', '')}: {reply.get('message', '')}".strip()
                break
            if monitor in ready:
                recv_monitor_message(monitor)
                answer = "disconnected by the server"
                break
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)
    with SeeThroughClient(endpoint, timeout_s=30) as client:
        client.info()  # still serving
    peak = status_kib(pid, "VmHWM") / 1024
    return Outcome(f"[info] + {count} x {size_mib} MiB", idle, peak, answer)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--case", action="append", metavar="COUNTxMIB", help="frames x MiB (default: 8x150 and 40x24)"
    )
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    cases = [tuple(int(v) for v in case.split("x")) for case in (args.case or ["8x150", "40x24"])]
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess.tiny(Path(tmp) / "server.log")
        with server:
            server.wait_ready(300)
            with SeeThroughClient(server.endpoint, timeout_s=30) as client:
                while client.info().state != "ready":  # idle means the model is loaded
                    time.sleep(0.2)
            print(f"server pid {server.pid}; documented maximum message {MAX_MESSAGE_BYTES / MIB:.0f} MiB")
            for count, size in cases:
                outcome = attack(server.endpoint, server.pid, count, size, args.timeout)
                ratio = outcome.above_idle_mib * MIB / MAX_MESSAGE_BYTES
                print(
                    f"{outcome.case:>24}: idle {outcome.idle_rss_mib:.0f} MiB, "
                    f"peak {outcome.peak_rss_mib:.0f} MiB (+{outcome.above_idle_mib:.0f} MiB = "
                    f"{ratio:.2f} x the maximum message); {outcome.answer}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
