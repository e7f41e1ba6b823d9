"""Watching the server's connections: a bound on how much of one unfinished message a client can make
the server hold, and the log of failed CURVE handshakes.

ZeroMQ delivers a multipart message only once all its frames have arrived, and has no limit on the
number of frames, so a client sending one message of a thousand legal-size frames would make the
server store all of them first. The guard watches each TCP connection of the server's ROUTER from
its own thread: the kernel's count of bytes received on it (TCP_INFO) against the count when the
socket loop last took a complete message from it. With one complete message at most waiting per
connection (receive high-water mark 1), ZeroMQ stops reading a connection whose next message is
not taken yet, so a client that keeps to the limits never gets more than one maximum message plus
the kernel's receive buffer ahead of the loop. More than `limit_bytes` ahead means one unfinished
message is already over the limit: the guard shuts that connection down, ZeroMQ frees what it held,
and the guard logs it once per connection.

Linux only (TCP_INFO's byte counts); elsewhere `available()` is False and the server relies on
the frame size limit alone.
"""

from __future__ import annotations

import logging
import socket
import struct
import sys
import threading

import zmq
from zmq.utils.monitor import parse_monitor_message

from .auth import HANDSHAKE_FAILURES, HandshakeLog

log = logging.getLogger(__name__)

_TCP_INFO_BYTES = 256
_BYTES_RECEIVED_OFFSET = 128  # struct tcp_info: tcpi_bytes_received (u64), Linux 4.1 and later
_INTERVAL_S = 0.002  # how often open connections are measured
_IDLE_POLL_MS = 100


def available() -> bool:
    return sys.platform == "linux" and hasattr(socket, "TCP_INFO")


def bytes_received(fd: int) -> int | None:
    """The kernel's count of bytes received on a TCP socket, without taking the descriptor over."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_BYTES)
    except OSError:
        return None
    finally:
        sock.detach()  # the descriptor stays ZeroMQ's
    if len(info) < _BYTES_RECEIVED_OFFSET + 8:
        return None
    return struct.unpack_from("=Q", info, _BYTES_RECEIVED_OFFSET)[0]


def _shut_down(fd: int) -> None:
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)  # ZeroMQ sees the connection end and drops what it held
    except OSError:
        pass
    finally:
        sock.detach()


class IntakeGuard(threading.Thread):
    """Call taken(frames) from the socket loop for every message; start(); stop() at shutdown."""

    def __init__(self, router: zmq.Socket, limit_bytes: int, handshakes: HandshakeLog | None = None) -> None:
        super().__init__(name="seethrough-intake-guard", daemon=True)
        self.limit_bytes = limit_bytes
        self._handshakes = handshakes
        self._measure = available()
        # ZeroMQ allows one monitor per socket: this one also reports failed CURVE handshakes.
        # Created here (before the router binds), used only by the guard thread from start() on.
        events = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | (HANDSHAKE_FAILURES if handshakes else 0)
        self._monitor = router.get_monitor_socket(events)
        self._router = router
        self._baseline: dict[int, int] = {}  # fd -> bytes received when its last message was taken
        self._stopping = threading.Event()
        self.dropped = 0  # connections shut down (tests, monitoring)

    def taken(self, frames: list[zmq.Frame]) -> None:
        """The loop took a complete message: what the connection received so far is accounted for."""
        if not self._measure:
            return
        try:
            fd = int(frames[-1].get(zmq.SRCFD))
        except zmq.ZMQError:
            return
        received = bytes_received(fd)
        if received is not None and fd in self._baseline:
            self._baseline[fd] = received

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                while self._monitor.poll(0):
                    event = parse_monitor_message(self._monitor.recv_multipart())
                    fd = int(event["value"])
                    if event["event"] & HANDSHAKE_FAILURES:
                        if self._handshakes is not None:
                            self._handshakes.on_failure(event["event"])
                    elif event["event"] == zmq.EVENT_ACCEPTED:
                        if self._measure:
                            self._baseline[fd] = bytes_received(fd) or 0
                    else:
                        self._baseline.pop(fd, None)
                for fd, base in list(self._baseline.items()):
                    received = bytes_received(fd)
                    if received is not None and received - base > self.limit_bytes:
                        self._baseline.pop(fd, None)
                        _shut_down(fd)
                        self.dropped += 1
                        log.warning(
                            "dropped a connection that sent %d MiB of one unfinished message (the limit is "
                            "%d MiB in all): too many frames. Its data is discarded; other clients are not "
                            "affected.",
                            (received - base) >> 20,
                            self.limit_bytes >> 20,
                        )
                if self._baseline:
                    self._stopping.wait(_INTERVAL_S)
                else:  # nothing to measure: sleep until a connection comes (or stop is due)
                    self._monitor.poll(_IDLE_POLL_MS)
        finally:
            self._monitor.close(linger=0)

    def stop(self) -> None:
        """Stop watching (before the router closes); safe when the thread never started."""
        self._stopping.set()
        if self.is_alive():
            self.join(5.0)
        else:
            self._monitor.close(linger=0)
        self._router.disable_monitor()
