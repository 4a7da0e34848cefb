"""Image file headers read without decoding: JPEG/PNG width, height and components, a
truncated JPEG's missing end marker, and the pixel cap checked before any decode.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

# Largest decode accepted (width x height): ISIC's largest images are about 24 megapixels.
MAX_PIXELS = 100_000_000


class ImageError(ValueError):
    """An image file cannot be decoded (empty, truncated, not an image)."""


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) from a JPEG or PNG header without decoding; None if unknown."""
    header = _header(path)
    return None if header is None else header[1:3]


def source_format(path: str | os.PathLike) -> str | None:
    """None for an 8-bit RGB (3-component) JPEG, else what the file is instead:
    ``"PNG"``, ``"grayscale JPEG"``, ``"CMYK JPEG"``, ``"not a JPEG or PNG"``."""
    header = _header(path)
    if header is None:
        return "not a JPEG or PNG"
    kind, _, _, components = header
    if kind == "png":
        return "PNG"
    return {3: None, 1: "grayscale JPEG", 4: "CMYK JPEG"}.get(
        components, f"{components}-component JPEG"
    )


def _header(path: str | os.PathLike) -> tuple[str, int, int, int] | None:
    """(kind, width, height, JPEG components or 0) from a JPEG or PNG header; None if unknown."""
    with open(path, "rb") as fh:
        return _read_header(fh)


def _read_header(fh) -> tuple[str, int, int, int] | None:
    """:func:`_header` of an open file; a JPEG's is left just after its frame header."""
    head = fh.read(26)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        w, h = struct.unpack(">II", head[16:24])
        return "png", int(w), int(h), 0
    if head[:2] != b"\xff\xd8":
        return None
    fh.seek(2)
    while True:
        byte = fh.read(1)
        while byte and byte != b"\xff":
            byte = fh.read(1)
        while byte == b"\xff":  # fill bytes
            byte = fh.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue  # markers without a length field
        length_bytes = fh.read(2)
        if len(length_bytes) < 2:
            return None
        (length,) = struct.unpack(">H", length_bytes)
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            data = fh.read(6)
            if len(data) < 6:
                return None
            h, w = struct.unpack(">HH", data[1:5])
            return "jpeg", int(w), int(h), int(data[5])
        fh.seek(length - 2, os.SEEK_CUR)


def check_complete(path: Path) -> None:
    """Raise ImageError for an empty file or a JPEG without an end-of-image marker.

    The marker is looked for after the frame header (an embedded thumbnail before it
    has its own) to the end of the file: bytes after it (padding, appended data) are
    allowed, and entropy-coded data cannot contain it (0xFF bytes there are stuffed or RSTn).
    """
    with open(path, "rb") as fh:
        head = fh.read(2)
        if not head:
            raise ImageError(f"{path}: empty file (0 bytes)")
        if head != b"\xff\xd8":
            return
        fh.seek(0)
        if _read_header(fh) is None:
            return  # no frame header, no image to cut short: the decoder reports it
        start = fh.tell()
        end = fh.seek(0, os.SEEK_END)
        fh.seek(max(start, end - 4096))
        if b"\xff\xd9" in fh.read():
            return  # the usual case: the marker ends the file
        fh.seek(start)
        if fh.read().rfind(b"\xff\xd9") < 0:  # rfind: from the end, past any padding
            raise ImageError(f"{path}: truncated JPEG (no end-of-image marker)")


def check_pixels(path: str | os.PathLike, wh: tuple[int, int], cap: int | None = None) -> None:
    """Raise ImageError when a header's width x height exceeds ``cap`` pixels (default
    MAX_PIXELS, or the DEEPAUC_MAX_MEGAPIXELS environment variable): refused before any
    decode, since a small file can expand to gigabytes."""
    if cap is None:
        cap = int(float(os.environ.get("DEEPAUC_MAX_MEGAPIXELS", MAX_PIXELS / 1e6)) * 1e6)
    if wh[0] * wh[1] > cap:
        raise ImageError(
            f"{path}: {wh[0]} x {wh[1]} = {wh[0] * wh[1] / 1e6:.0f} megapixels, over the cap "
            f"of {cap / 1e6:g} (set DEEPAUC_MAX_MEGAPIXELS to allow it)"
        )
