"""What a client can make the server hold: oversized messages, measured as this process's peak RSS.

The server runs in this process (a thread), so the peak includes the test client's own buffer;
that is added to the bound. benchmarks/oversize_bench.py measures a real server process at the
real limits. Linux only (/proc/self/status, /proc/self/clear_refs).
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgpack
import pytest
import zmq
from server_support import gated_tiny_pipeline, running_server
from zmq.utils.monitor import recv_monitor_message

from seethrough_core.client import SeeThroughClient
from seethrough_core.protocol import ErrorCode, decode_reply

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self")

LIMIT = 8 << 20  # the server's message limit in this test
MIB = 1 << 20
WAIT_MS = 30_000


def _rss_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _peak_above_now(send) -> tuple[int, object]:
    """(peak RSS growth in bytes while `send()` runs, what it returned)."""
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _rss_kib("VmRSS")
    outcome = send()
    return (_rss_kib("VmHWM") - before) * 1024, outcome


@pytest.fixture(scope="module")
def server():
    with running_server(gated_tiny_pipeline(), max_message_bytes=LIMIT) as server:
        yield server


@pytest.fixture
def dealer(server):
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.linger = 0
    monitor = socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    socket.connect(server.endpoint)
    yield socket, monitor
    socket.disable_monitor()
    monitor.close(linger=0)
    socket.close()


HEADER = msgpack.packb({"type": "info", "protocol": 1, "request_id": "big"})


def test_frames_over_the_limit_cost_the_connection_before_the_server_holds_them(server, dealer):
    socket, monitor = dealer
    block = bytes(LIMIT + MIB)  # one buffer, sent 8 times without copies

    def send():
        socket.send_multipart([HEADER, *([block] * 8)], copy=False)
        assert monitor.poll(WAIT_MS), "the server kept the connection"
        return recv_monitor_message(monitor)["event"]

    growth, event = _peak_above_now(send)
    assert event == zmq.EVENT_DISCONNECTED
    # Before the limit matched the largest legal frame, the server held all 8 frames (72 MiB here).
    assert growth < 3 * LIMIT, f"peak RSS grew {growth / MIB:.0f} MiB"
    with SeeThroughClient(server.endpoint, timeout_s=10) as other:
        assert other.info().state == "ready"


def test_a_message_of_legal_frames_over_the_total_is_answered_and_freed(server, dealer):
    socket, _ = dealer
    block = bytes(LIMIT // 2 + 1)

    def send():
        socket.send_multipart([HEADER, *([block] * 3)], copy=False)
        assert socket.poll(WAIT_MS), "no answer"
        return decode_reply(socket.recv_multipart())

    growth, reply = _peak_above_now(send)
    assert (reply.code, reply.field) == (ErrorCode.TOO_LARGE, "frames")
    assert growth < 3 * LIMIT, f"peak RSS grew {growth / MIB:.0f} MiB"
