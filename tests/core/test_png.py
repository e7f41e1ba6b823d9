"""The core's PNG reader: every filter and colour type another tool may write, and the writer's own files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from seethrough_core.png import decode_png, encode_png, png_rgb


def _picture(height: int = 24, width: int = 30) -> np.ndarray:
    """Gradients with a noisy patch: rows where each filter type makes a difference."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([(x * 9) % 256, (y * 11) % 256, (x * y) % 256], -1).astype(np.uint8)
    image[5:15, 4:20] = np.random.default_rng(3).integers(0, 256, (10, 16, 3))
    return image


def _filtered_png(image: np.ndarray, filters: list[int]) -> bytes:
    """A PNG whose rows use the given filter types in turn. Filtering only reads the original bytes, so
    this encoder is whole-array arithmetic, independent of the reader's byte-by-byte decoding."""
    height, width, channels = image.shape
    rows = image.reshape(height, width * channels).astype(np.int32)
    up = np.vstack([np.zeros_like(rows[:1]), rows[:-1]])
    left = np.hstack([np.zeros_like(rows[:, :channels]), rows[:, :-channels]])
    corner = np.hstack([np.zeros_like(up[:, :channels]), up[:, :-channels]])
    estimate = left + up - corner
    to_left, to_up, to_corner = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
    paeth = np.where(
        (to_left <= to_up) & (to_left <= to_corner), left, np.where(to_up <= to_corner, up, corner)
    )
    predictions = [np.zeros_like(rows), left, up, (left + up) // 2, paeth]
    kinds = [filters[y % len(filters)] for y in range(height)]
    body = np.stack([(rows[y] - predictions[kind][y]) % 256 for y, kind in enumerate(kinds)]).astype(np.uint8)
    raw = np.hstack([np.array(kinds, np.uint8)[:, None], body]).tobytes()
    color = {1: 0, 2: 4, 3: 2, 4: 6}[channels]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    idat = zlib.compress(raw)
    # two IDAT chunks: a reader must join them
    chunks = (
        chunk(b"IHDR", header) + chunk(b"IDAT", idat[:10]) + chunk(b"IDAT", idat[10:]) + chunk(b"IEND", b"")
    )
    return b"\x89PNG\r\n\x1a\n" + chunks


@pytest.mark.parametrize("filters", [[0], [1], [2], [3], [4], [4, 3, 2, 1, 0]])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_every_row_filter_is_undone_exactly(filters, channels):
    image = _picture()
    image = np.dstack([image, image[:, :, :1]])[:, :, :channels]
    assert np.array_equal(decode_png(_filtered_png(image, filters)), image)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P"])
def test_pngs_another_tool_wrote_read_as_it_reads_them(mode):
    buffer = io.BytesIO()
    Image.fromarray(_picture()).convert(mode).save(buffer, "PNG")
    with Image.open(io.BytesIO(buffer.getvalue())) as expected:
        assert np.array_equal(png_rgb(buffer.getvalue()), np.asarray(expected.convert("RGB")))


def test_the_writers_own_pictures_round_trip():
    image = _picture(40, 50)
    assert np.array_equal(png_rgb(encode_png(image, {"seethrough": "{}"})), image)
    assert np.array_equal(decode_png(encode_png(image[:, :, 0]))[:, :, 0], image[:, :, 0])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda png: b"GIF89a" + png[6:], "not a PNG file"),
        (lambda png: png[:40], "not a complete PNG"),
        (lambda png: png[:-40] + png[-12:], "image data"),
    ],
)
def test_a_damaged_file_is_a_clear_value_error(damage, message):
    with pytest.raises(ValueError, match=message):
        decode_png(damage(encode_png(_picture(40, 50))))


def test_sixteen_bit_files_are_refused_saying_so():
    buffer = io.BytesIO()
    Image.fromarray(_picture()[:, :, 0].astype(np.uint16) * 257).save(buffer, "PNG")
    with pytest.raises(ValueError, match="16-bit"):
        decode_png(buffer.getvalue())
