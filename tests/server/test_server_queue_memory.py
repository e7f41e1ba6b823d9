"""What waiting jobs hold, and a socket loop that never decodes images: PNG/JPEG OSCR images wait
encoded (decoded when their job runs), raw ones count against a per-client and a total budget, the
loop answers `info` at once while large PNGs arrive, and an image bomb is refused by its header.

The server runs in this process (a thread) on the real tiny pipeline; a gate holds the first job
mid-generation so the others wait in the queue as long as the test needs."""

from __future__ import annotations

import io
import statistics
import struct
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from server_support import build_request, gated_tiny_pipeline, running_server

from seethrough_core.client import SeeThroughClient, ServerError
from seethrough_core.limits import MAX_IMAGE_SIDE, MAX_QUEUED_BYTES_PER_CLIENT
from seethrough_core.protocol import ErrorCode, decode_request

MIB = 1 << 20
BIG = MAX_IMAGE_SIDE  # 4096 px a side: 48 MiB of pixels


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise KeyError("VmRSS")


def big_png() -> bytes:
    """A 4096 x 4096 PNG of about 50 KB (stripes compress well): 48 MiB once decoded."""
    pixels = np.zeros((BIG, BIG, 3), np.uint8)
    pixels[::7] = 200
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def png_bomb(side: int = 20_000) -> bytes:
    """A PNG whose header says side x side (400 megapixels): its data need not even be complete."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    rows = zlib.compress(bytes(64 * (side * 3 + 1)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.fixture
def held_server():
    """A server whose first job ("hold") is paused after its first step, so later jobs wait."""
    pipeline = gated_tiny_pipeline()
    with running_server(pipeline) as server, SeeThroughClient(server.endpoint, 30) as holder:
        pipeline.hold()
        holder.submit(build_request("hold", steps=2))
        pipeline.wait_until_held("hold")
        yield server
        pipeline.release()


def cancel_all(client: SeeThroughClient, jobs) -> None:
    for job in jobs:
        job.cancel()
        for _ in job.events():
            pass


def test_a_png_bomb_is_refused_by_its_header_as_over_4096_px_a_side():
    frames = build_request(oscr_image=png_bomb()).encode()
    with pytest.raises(Exception) as caught:
        decode_request(frames)
    assert (caught.value.code, caught.value.field) == (ErrorCode.INVALID_FIELD, "oscr_image")
    assert "20000x20000 is over 4096 px a side" in caught.value.message


def test_an_encoded_oscr_image_is_checked_but_decoded_only_when_asked():
    request = decode_request(build_request(oscr_image=big_png()).encode())
    assert isinstance(request.oscr_image, bytes) and len(request.oscr_image) < MIB
    assert request.oscr_pixels().shape == (BIG, BIG, 3)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self")
def test_queued_png_jobs_wait_encoded_and_hold_little_memory(held_server):
    png = big_png()
    with SeeThroughClient(held_server.endpoint, 30) as client:
        before = rss()
        jobs = [client.submit(build_request(f"png {i}", oscr_image=png)) for i in range(16)]
        growth = rss() - before
        print(f"16 queued 4096 px PNG jobs: RSS +{growth / MIB:.0f} MiB")
        waiting = [held_server._jobs[job.id] for job in jobs]
        try:
            assert all(isinstance(job.request.oscr_image, bytes) for job in waiting)  # not decoded
            assert held_server._queue.held() < 2 * MIB  # 16 PNGs of 50 KB, not 16 x 48 MiB
            # decoded on the loop, as before, they held 768 MiB
            assert growth < 150 * MIB, f"RSS grew {growth / MIB:.0f} MiB for 16 queued PNG jobs"
        finally:
            cancel_all(client, jobs)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self")
def test_raw_images_past_a_clients_budget_are_refused_as_queue_full(held_server):
    raw = np.full((BIG, BIG, 3), 90, np.uint8)  # 48 MiB
    assert raw.nbytes < MAX_QUEUED_BYTES_PER_CLIENT <= 2 * raw.nbytes  # one fits, two do not
    with (
        SeeThroughClient(held_server.endpoint, 60) as client,
        SeeThroughClient(held_server.endpoint, 60) as other,
    ):
        before = rss()
        accepted, refused = [], []
        for i in range(8):
            try:
                accepted.append(client.submit(build_request(f"raw {i}", oscr_image=raw)))
            except ServerError as exc:
                refused.append(exc)
        growth = rss() - before
        print(f"8 raw 4096 px jobs from one client: {len(accepted)} accepted, RSS +{growth / MIB:.0f} MiB")
        own = other.submit(build_request("other client", oscr_image=raw))  # its own budget
        try:
            assert len(accepted) == 1 and len(refused) == 7
            assert {exc.code for exc in refused} == {ErrorCode.QUEUE_FULL}
            assert "per client" in refused[0].message
            # all eight waiting held 384 MiB
            assert growth < 200 * MIB, f"RSS grew {growth / MIB:.0f} MiB"
        finally:
            cancel_all(client, accepted)
            cancel_all(other, [own])
        assert held_server._queue.held() == 0


def test_info_answers_at_once_while_large_pngs_arrive(held_server):
    """Decoding a 4096 px PNG takes a second or more: on the loop, every other client waited for it."""
    png = big_png()
    latencies: list[float] = []
    jobs = []
    with (
        SeeThroughClient(held_server.endpoint, 60) as sender,
        SeeThroughClient(held_server.endpoint, 30) as asker,
    ):

        def send() -> None:
            for i in range(6):
                jobs.append(sender.submit(build_request(f"big {i}", oscr_image=png)))

        thread = threading.Thread(target=send)
        thread.start()
        while thread.is_alive() or len(latencies) < 5:
            start = time.perf_counter()
            asker.info()
            latencies.append(time.perf_counter() - start)
        thread.join()
        try:
            assert len(jobs) == 6
            median = statistics.median(latencies)
            print(f"info while PNGs arrive: median {median * 1e3:.0f} ms, max {max(latencies) * 1e3:.0f} ms")
            assert median < 0.2, f"info took {median * 1000:.0f} ms (median of {len(latencies)})"
        finally:
            cancel_all(sender, jobs)


def test_an_encoded_image_that_does_not_decode_fails_its_job_not_the_server(held_server):
    """The header and checksums are checked on arrival; pixels that still do not decode fail the job
    with bad_image when it runs, and the server goes on."""
    good = big_png()
    start = good.index(b"IDAT") + 4
    broken = bytearray(good)
    broken[start : start + 64] = bytes(64)  # zlib data broken, checksum fixed up below
    length = int.from_bytes(good[start - 8 : start - 4], "big")
    crc = zlib.crc32(bytes(broken[start - 4 : start + length]))
    broken[start + length : start + length + 4] = struct.pack(">I", crc)
    pipeline = gated_tiny_pipeline()
    with SeeThroughClient(held_server.endpoint, 60) as client:
        job = client.submit(build_request("broken", oscr_image=bytes(broken)))
        pipeline.release()
        with pytest.raises(ServerError) as caught:
            job.wait()
        assert (caught.value.code, caught.value.field) == (ErrorCode.BAD_IMAGE, "oscr_image")
        assert client.info().state == "ready"
