"""A client that stops reading still gets its job's final message (docs/protocol.md, slow readers).

The client floods the server with info requests without reading until the server reports that it
is holding messages for it, lets the job finish while it is behind, and only then reads.
"""

from __future__ import annotations

import logging
import time

import zmq
from server_support import build_request, gated_tiny_pipeline, running_server

from seethrough_core.protocol import (
    Accepted,
    ErrorReply,
    InfoReply,
    InfoRequest,
    Progress,
    Result,
    decode_reply,
)

FLOOD_LIMIT = 200_000  # info requests at most; the pipe fills after a few thousand on loopback
WAIT_S = 60.0


def _slow_dealer(endpoint: str) -> zmq.Socket:
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.linger = 0
    # Small buffers both ways: the server's pipe to us fills after fewer replies, and our sends
    # block (flow control) instead of queueing thousands of requests ahead of the server.
    dealer.rcvhwm = dealer.sndhwm = 1
    dealer.rcvbuf = dealer.sndbuf = 4096
    dealer.sndtimeo = int(WAIT_S * 1000)
    dealer.connect(endpoint)
    return dealer


def test_a_client_that_does_not_read_still_gets_its_result(caplog):
    caplog.set_level(logging.INFO, logger="inference_server.server")
    pipeline = gated_tiny_pipeline()
    with running_server(pipeline) as server:
        dealer = _slow_dealer(server.endpoint)
        try:
            pipeline.hold()
            request = build_request("slow reader", boxes=1, steps=1)
            dealer.send_multipart(request.encode())
            pipeline.wait_until_held("slow reader")
            info = InfoRequest().encode()
            sent = 0
            while server.owed_messages() == 0 and not server.clients_behind():
                assert sent < FLOOD_LIMIT, "the server never filled this client's pipe"
                dealer.send_multipart(info)
                sent += 1
            pipeline.release()  # the job ends while the client is still not reading
            deadline = time.monotonic() + WAIT_S
            while server.owed_messages() == 0:  # the result is waiting in the outbox
                assert time.monotonic() < deadline, "the job's final message was never queued"
                dealer.send_multipart(info)  # keep the pipe full meanwhile
                sent += 1

            counts = {"accepted": 0, "progress": 0, "result": 0, "info_reply": 0, "other": 0}
            job_id = None
            while counts["result"] == 0:
                assert dealer.poll(WAIT_S * 1000), f"no result after {counts}"
                message = decode_reply(dealer.recv_multipart())
                if isinstance(message, Accepted):
                    counts["accepted"] += 1
                    job_id = message.job_id
                elif isinstance(message, Result):
                    assert message.job_id == job_id
                    counts["result"] += 1
                elif isinstance(message, Progress):
                    counts["progress"] += 1
                elif isinstance(message, InfoReply):
                    counts["info_reply"] += 1
                else:
                    assert not isinstance(message, ErrorReply), message
                    counts["other"] += 1
            assert counts["accepted"] == 1 and counts["other"] == 0
            assert counts["info_reply"] < sent  # some replies were dropped: the client was behind
            # Nothing after the result belongs to the job: exactly one final message.
            while dealer.poll(1000):
                message = decode_reply(dealer.recv_multipart())
                assert isinstance(message, InfoReply), message
            assert server.owed_messages() == 0 and not server.clients_behind()
        finally:
            dealer.close()
    drops = [r for r in caplog.records if "is not reading its messages" in r.getMessage()]
    assert len(drops) == 1  # once per client, not once per dropped message
