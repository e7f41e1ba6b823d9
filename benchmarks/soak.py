"""Soak test: N jobs from M clients with random cancels and disconnects against a real server process.

Each client is a thread with its own DEALER socket (raw protocol, seethrough_core.protocol only),
keeping up to --in-flight jobs open. After a job is accepted the client may cancel it (--cancel
probability) or, now and then, drop its whole connection (--disconnect probability per job) and
open a new one: the jobs of a dropped connection are abandoned, and nothing more can arrive for
them. Every job accepted on a connection that stays open must end with exactly one final message
(result, cancelled or error) carrying its job_id:

    lost        accepted on a live connection, no final message within --timeout
    duplicates  more than one final message for one job

The server is `seethrough serve --tiny` in its own process; its RSS is read from /proc (Linux)
after a warm-up job and at the end.

    python benchmarks/soak.py --jobs 40 --clients 4
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq

from seethrough_core.client import SeeThroughClient
from seethrough_core.generation_settings import GenerationSettings
from seethrough_core.protocol import (
    Accepted,
    Cancelled,
    CancelRequest,
    ErrorReply,
    GenerateRequest,
    Result,
    decode_reply,
)
from seethrough_core.server_process import ServerProcess

SIDE = 256


@dataclass
class Tally:
    submitted: int = 0
    accepted: int = 0
    refused: int = 0  # error instead of accepted (e.g. queue_full)
    unanswered: int = 0  # generate requests with neither accepted nor error by the deadline
    cancels_sent: int = 0
    disconnects: int = 0
    abandoned: int = 0  # accepted jobs on a connection the client dropped
    finals: Counter = field(default_factory=Counter)  # job_id -> final messages seen
    outcomes: Counter = field(default_factory=Counter)  # result / cancelled / error
    lost: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def request(rng: random.Random, steps: int) -> GenerateRequest:
    masks = np.zeros((1, SIDE, SIDE), np.uint8)
    top = rng.randrange(0, SIDE // 2)
    masks[0, top : top + SIDE // 2, 40 : SIDE - 40] = 255
    oscr = np.full((SIDE, SIDE, 3), rng.randrange(256), np.uint8)
    settings = GenerationSettings("on a quiet street", ["a red car"], SIDE, SIDE, rng.randrange(1000), steps)
    return GenerateRequest(settings, oscr, masks)


class SoakClient(threading.Thread):
    def __init__(self, index: int, endpoint: str, jobs: int, args: argparse.Namespace, tally: Tally) -> None:
        super().__init__(name=f"soak-{index}", daemon=True)
        self.endpoint, self.jobs, self.args, self.tally = endpoint, jobs, args, tally
        self.rng = random.Random(args.seed * 1000 + index)

    def _connect(self) -> zmq.Socket:
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(self.endpoint)
        return sock

    def run(self) -> None:
        sock = self._connect()
        waiting: dict[str, str] = {}  # request_id -> "" until accepted
        open_jobs: set[str] = set()  # accepted, no final message yet
        to_send = self.jobs
        deadline = None
        try:
            while to_send or waiting or open_jobs:
                while to_send and len(waiting) + len(open_jobs) < self.args.in_flight:
                    req = request(self.rng, self.args.steps)
                    sock.send_multipart(req.encode(), copy=False)
                    waiting[req.request_id] = ""
                    to_send -= 1
                    with self.tally.lock:
                        self.tally.submitted += 1
                if to_send == 0 and deadline is None:
                    deadline = time.monotonic() + self.args.timeout
                if deadline is not None and time.monotonic() > deadline:
                    break
                if not sock.poll(200):
                    continue
                message = decode_reply(sock.recv_multipart())
                self._on_message(message, sock, waiting, open_jobs)
                if isinstance(message, Accepted) and self.rng.random() < self.args.disconnect:
                    with self.tally.lock:
                        self.tally.disconnects += 1
                        self.tally.abandoned += len(open_jobs)
                        self.tally.submitted -= len(waiting)  # never answered: resent below
                    to_send += len(waiting)
                    waiting.clear()
                    open_jobs.clear()
                    sock.close(linger=0)
                    sock = self._connect()
        finally:
            sock.close(linger=0)
            with self.tally.lock:
                self.tally.lost += len(open_jobs)
                self.tally.unanswered += len(waiting)

    def _on_message(self, message, sock: zmq.Socket, waiting: dict, open_jobs: set) -> None:
        tally = self.tally
        if isinstance(message, Accepted):
            waiting.pop(message.request_id, None)
            open_jobs.add(message.job_id)
            with tally.lock:
                tally.accepted += 1
            if self.rng.random() < self.args.cancel:
                sock.send_multipart(CancelRequest(message.job_id).encode())
                with tally.lock:
                    tally.cancels_sent += 1
            return
        job_id = getattr(message, "job_id", None)
        if isinstance(message, Result | Cancelled) or (isinstance(message, ErrorReply) and job_id):
            with tally.lock:
                tally.finals[job_id] += 1
                tally.outcomes[message.TYPE] += 1
            open_jobs.discard(job_id)
        elif isinstance(message, ErrorReply) and message.request_id in waiting:
            waiting.pop(message.request_id)
            with tally.lock:
                tally.refused += 1


def rss_mib(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40, help="jobs in all (N)")
    parser.add_argument("--clients", type=int, default=4, help="client threads (M)")
    parser.add_argument("--in-flight", type=int, default=2, help="open jobs per client")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--cancel", type=float, default=0.25, help="probability of cancelling a job")
    parser.add_argument(
        "--disconnect",
        type=float,
        default=0.1,
        help="probability of dropping the connection after an accepted",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait after the last submit")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tally = Tally()
    with tempfile.TemporaryDirectory() as tmp, ServerProcess.tiny(Path(tmp) / "server.log") as server:
        server.wait_ready(300)
        with SeeThroughClient(server.endpoint, timeout_s=60) as client:
            while client.info().state != "ready":
                time.sleep(0.2)
            client.submit(request(random.Random(0), args.steps)).wait(timeout_s=120)  # warm-up
        start_rss = rss_mib(server.pid)
        started = time.monotonic()
        shares = [args.jobs // args.clients + (i < args.jobs % args.clients) for i in range(args.clients)]
        clients = [SoakClient(i, server.endpoint, n, args, tally) for i, n in enumerate(shares)]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        elapsed = time.monotonic() - started
        end_rss, peak_rss = rss_mib(server.pid), rss_mib(server.pid, "VmHWM")
        with SeeThroughClient(server.endpoint, timeout_s=30) as client:
            queue_after = client.info().queue_length

    duplicates = sum(1 for count in tally.finals.values() if count > 1)
    print(
        f"jobs {args.jobs} from {args.clients} clients in {elapsed:.1f} s: submitted {tally.submitted}, "
        f"accepted {tally.accepted}, refused {tally.refused}"
    )
    print(
        f"final messages: {dict(tally.outcomes)}; cancels sent {tally.cancels_sent}; "
        f"disconnects {tally.disconnects} (abandoning {tally.abandoned} jobs)"
    )
    print(
        f"lost {tally.lost}, duplicates {duplicates}, unanswered requests {tally.unanswered}, "
        f"server queue after {queue_after}"
    )
    print(
        f"server RSS {start_rss:.0f} MiB after warm-up, {end_rss:.0f} MiB at the end "
        f"({end_rss - start_rss:+.0f} MiB), peak {peak_rss:.0f} MiB"
    )
    return 0 if tally.lost == 0 and duplicates == 0 and tally.unanswered == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
