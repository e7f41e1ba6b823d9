"""A small PNG writer for 8-bit gray/RGB/RGBA arrays, with text metadata.

Pure Python + numpy + zlib, so the same code runs inside Blender (which ships no Pillow) and on
the server. Files are written to a temporary name and renamed, so a crash never leaves half a PNG.
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
