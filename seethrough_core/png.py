"""A small PNG writer and reader for 8-bit gray/RGB/RGBA arrays, with text metadata.

Pure Python + numpy + zlib, so the same code runs inside Blender (which ships no Pillow), on any thread
(Blender's own image loader is main-thread only), and on the server. Files are written to a temporary
name and renamed, so a crash never leaves half a PNG.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel (3: palette index)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def encode_png(image: np.ndarray, text: dict[str, str] | None = None, compression: int = 6) -> bytes:
    """PNG bytes of a uint8 array H x W (gray), H x W x 3 (RGB) or H x W x 4 (RGBA).

    ``text`` becomes iTXt chunks (UTF-8), readable by Pillow, Blender and exiftool.
    """
    pixels = np.asarray(image)
    if pixels.dtype == np.bool_:
        pixels = pixels.astype(np.uint8) * 255
    if pixels.dtype != np.uint8:
        raise ValueError(f"PNG pixels must be uint8, got {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in _COLOR_TYPES:
        raise ValueError(f"cannot write an image of shape {image.shape} as PNG")
    height, width, channels = pixels.shape
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
    # Filter type 0 (none) on every row: simple, and zlib does well on flat masks and renders.
    raw = np.concatenate([np.zeros((height, 1), np.uint8), pixels.reshape(height, width * channels)], axis=1)
    chunks = [_chunk(b"IHDR", header)]
    for key, value in (text or {}).items():
        chunks.append(_chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8")))
    chunks.append(_chunk(b"IDAT", zlib.compress(raw.tobytes(), compression)))
    chunks.append(_chunk(b"IEND", b""))
    return _SIGNATURE + b"".join(chunks)


def write_png(path: str | Path, image: np.ndarray, text: dict[str, str] | None = None) -> None:
    """Write a PNG atomically: a temporary file in the same folder, then a rename."""
    write_bytes_atomic(path, encode_png(image, text))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write a file atomically; on any failure (a full disk) the temporary file is removed again."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # the folder itself cannot be written: nothing was left there either
        raise


def read_png_text(data: bytes) -> dict[str, str]:
    """The text chunks (tEXt, zTXt, iTXt) of PNG file bytes, without decoding any pixel.

    Pure Python like the writer, so the add-on (Blender ships no Pillow) reads records the same way.
    Raises ValueError when ``data`` is not a PNG.
    """
    return _read_text_chunks(io.BytesIO(data))


def read_png_file_text(path: str | Path) -> dict[str, str]:
    """read_png_text of a file, reading only its text chunks (the image data is skipped, not read)."""
    with open(path, "rb") as handle:
        return _read_text_chunks(handle)


def _read_text_chunks(stream: BinaryIO) -> dict[str, str]:
    if stream.read(8) != _SIGNATURE:
        raise ValueError("not a PNG file (its first bytes are not the PNG signature)")
    text: dict[str, str] = {}
    while len(head := stream.read(8)) == 8:
        length, kind = struct.unpack(">I", head[:4])[0], head[4:]
        if kind == b"IEND":
            break
        if kind not in (b"tEXt", b"zTXt", b"iTXt"):
            stream.seek(length + 4, io.SEEK_CUR)  # the chunk and its CRC
            continue
        body = stream.read(length)
        stream.seek(4, io.SEEK_CUR)
        key, _, rest = body.partition(b"\0")
        name = key.decode("latin-1")
        if kind == b"tEXt":
            text[name] = rest.decode("latin-1")
        elif kind == b"zTXt":
            text[name] = zlib.decompress(rest[1:]).decode("latin-1")
        elif kind == b"iTXt":
            compressed, rest = rest[0], rest[2:]  # compression flag, method
            _language, _, rest = rest.partition(b"\0")
            _translated, _, value = rest.partition(b"\0")
            text[name] = (zlib.decompress(value) if compressed else value).decode("utf-8")
    return text


def decode_png(data: bytes) -> np.ndarray:
    """The pixels of an 8-bit PNG as uint8 H x W x C (C: 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA; a
    palette image comes out RGB). Every filter type is read; the writer's own files (filter 0) decode
    at zlib's speed. ValueError, saying what is unsupported, for 16-bit, low-bit and interlaced files."""
    header, palette, compressed = _image_chunks(data)
    width, height, depth, color_type, _compression, _filter, interlace = struct.unpack(">IIBBBBB", header)
    if color_type not in _CHANNELS:
        raise ValueError(f"not a valid PNG (colour type {color_type})")
    if depth != 8 or interlace != 0:
        what = f"{depth}-bit" if depth != 8 else "interlaced"
        raise ValueError(f"cannot read a {what} PNG: pictures are read as 8-bit, non-interlaced PNGs")
    channels = _CHANNELS[color_type]
    stride = width * channels
    try:
        raw = zlib.decompress(compressed)
    except zlib.error as exc:
        raise ValueError(f"the PNG's image data is damaged: {exc}") from None
    if len(raw) != height * (stride + 1):
        raise ValueError(f"the PNG's image data is cut short ({len(raw)} of {height * (stride + 1)} bytes)")
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    filters = rows[:, 0]
    if filters.max(initial=0) > 4:
        raise ValueError(f"not a valid PNG (row filter {int(filters.max())})")
    pixels = rows[:, 1:].copy()
    if filters.any():
        _unfilter(pixels, filters, channels)
    image = pixels.reshape(height, width, channels)
    if color_type == 3:
        if palette is None:
            raise ValueError("not a valid PNG (a palette image without its palette)")
        table = np.frombuffer(palette, np.uint8).reshape(-1, 3)
        if int(image.max(initial=0)) >= len(table):
            raise ValueError("not a valid PNG (a palette index past the palette)")
        image = table[image[:, :, 0]]
    return image


def png_rgb(data: bytes) -> np.ndarray:
    """A PNG's pixels as uint8 H x W x 3 (alpha dropped, gray repeated): how pictures are edited."""
    image = decode_png(data)
    if image.shape[2] in (1, 2):
        return np.repeat(image[:, :, :1], 3, axis=2)
    return image[:, :, :3]


def read_png_rgb(path: str | Path) -> np.ndarray:
    """png_rgb of a file; OSError when it cannot be read, ValueError when it is not a readable PNG."""
    return png_rgb(Path(path).read_bytes())


def _image_chunks(data: bytes) -> tuple[bytes, bytes | None, bytes]:
    """IHDR, PLTE (None when absent) and the IDAT chunks joined."""
    if data[:8] != _SIGNATURE:
        raise ValueError("not a PNG file (its first bytes are not the PNG signature)")
    header, palette, idat = None, None, []
    offset = 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        body = data[offset + 8 : offset + 8 + length]
        if len(body) != length:
            break
        if kind == b"IHDR":
            header = body
        elif kind == b"PLTE":
            palette = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        offset += length + 12  # length, kind, body, CRC
    if header is None or len(header) != 13 or not idat:
        raise ValueError("not a complete PNG file (its header or image data is missing)")
    return header, palette, b"".join(idat)


def _unfilter(pixels: np.ndarray, filters: np.ndarray, bpp: int) -> None:
    """Undo the PNG row filters in place (``pixels``: H x stride, filter bytes removed). Sub and Up are
    whole-row numpy operations; Average and Paeth depend on the byte just decoded, so they run byte by
    byte (other tools' files only: this module writes filter 0)."""
    previous = np.zeros(pixels.shape[1], np.uint8)
    for y, kind in enumerate(filters.tolist()):
        row = pixels[y]
        if kind == 1:
            per_pixel = row.reshape(-1, bpp)
            np.cumsum(per_pixel, axis=0, dtype=np.uint8, out=per_pixel)  # uint8 sums wrap mod 256
        elif kind == 2:
            row += previous
        elif kind in (3, 4):
            out = bytearray(row.tobytes())
            up = previous.tobytes()
            for i in range(len(out)):
                left = out[i - bpp] if i >= bpp else 0
                if kind == 3:
                    out[i] = (out[i] + ((left + up[i]) >> 1)) & 0xFF
                else:
                    corner = up[i - bpp] if i >= bpp else 0
                    out[i] = (out[i] + _paeth(left, up[i], corner)) & 0xFF
            row[:] = np.frombuffer(out, np.uint8)
        previous = row


def _paeth(left: int, up: int, corner: int) -> int:
    estimate = left + up - corner
    to_left, to_up, to_corner = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
    if to_left <= to_up and to_left <= to_corner:
        return left
    return up if to_up <= to_corner else corner
