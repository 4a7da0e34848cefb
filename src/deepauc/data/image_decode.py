"""One source image to cache pixels: JPEG/PNG decoded to BGR (by libjpeg at 1/2, 1/4 or 1/8
scale when that still covers the size), damaged data refused by name, then the centre square
resized to S x S."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from deepauc.data.image_header import ImageError, check_complete, check_pixels, image_size

_REDUCED = (
    (8, cv2.IMREAD_REDUCED_COLOR_8),
    (4, cv2.IMREAD_REDUCED_COLOR_4),
    (2, cv2.IMREAD_REDUCED_COLOR_2),
)
# libjpeg's warnings that mean the pixel data is damaged (it decodes on, guessing)
_DAMAGED = ("Corrupt JPEG data", "Premature end of JPEG file")


def decode_flag(wh: tuple[int, int] | None, min_side: int) -> int:
    """The coarsest 1/2^k decode whose short side is still >= ``min_side``."""
    if wh is not None:
        for factor, reduced in _REDUCED:
            if min(wh) // factor >= min_side:
                return reduced
    return cv2.IMREAD_COLOR


def decode(path: Path, min_side: int) -> np.ndarray:
    """Decode ``path`` to BGR uint8, at the coarsest 1/2^k scale whose short side is
    still >= ``min_side``; the header's pixel count is checked first (:func:`check_pixels`).

    Grayscale, palette, 16-bit and alpha sources come out as 8-bit BGR (OpenCV's colour
    decode). A truncated file, or JPEG data libjpeg reports as corrupt, raises ImageError.
    """
    check_complete(path)
    wh = image_size(path)
    if wh is not None:
        check_pixels(path, wh)
    flag = decode_flag(wh, min_side)
    img, said = _with_stderr_captured(lambda: cv2.imread(str(path), flag))
    if img is None:
        raise ImageError(f"{path}: cannot decode image (corrupt or not an image)")
    damaged = [line for line in said.splitlines() if line.startswith(_DAMAGED)]
    if damaged:
        raise ImageError(f"{path}: corrupt JPEG data (libjpeg: {damaged[0].strip()})")
    if said:
        os.write(2, said.encode())  # other decoder messages pass through unchanged
    return img


# per process: a temporary file that receives what the decoder prints to stderr
_stderr_sink: dict[int, IO[bytes]] = {}


def _with_stderr_captured(decode):
    """(``decode()``, what it wrote to file descriptor 2).

    libjpeg reports damaged data only as a warning printed to stderr, naming no file.
    """
    if sys.stderr is not None:
        sys.stderr.flush()  # text printed before the decode is not the decoder's
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to watch
        return decode(), ""
    pid = os.getpid()
    if pid not in _stderr_sink:  # a forked worker gets its own
        _stderr_sink.clear()
        _stderr_sink[pid] = tempfile.TemporaryFile()
    sink = _stderr_sink[pid].fileno()  # empty, at offset 0
    os.dup2(sink, 2)
    try:
        result = decode()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    size = os.lseek(sink, 0, os.SEEK_CUR)
    if not size:
        return result, ""
    os.lseek(sink, 0, os.SEEK_SET)
    said = os.read(sink, size).decode(errors="replace")
    os.lseek(sink, 0, os.SEEK_SET)
    os.ftruncate(sink, 0)
    return result, said


def square(img: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to size x size with INTER_AREA.

    A crop, not a stretch: dermoscopy centres the lesion, whose shape (asymmetry, border)
    is diagnostic; 3:2 and 4:3 sources would otherwise be distorted differently.
    """
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = img[top : top + side, left : left + side]
    if side == size:
        return np.ascontiguousarray(crop)
    # INTER_AREA is the right filter for shrinking; upscaling (tiny images) is rare.
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interp)


def resize_image(src: str | os.PathLike, size: int) -> np.ndarray:
    """``src`` decoded, centre-cropped and resized: RGB uint8 of shape (size, size, 3)."""
    bgr = square(decode(Path(src), size), size)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
