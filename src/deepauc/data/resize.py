"""``deepauc resize``: cache every image of a table as S x S JPEGs, once per size.

Layout: ``CACHE_DIR/<S>/<image_name>.jpg`` (RGB, JPEG quality 95) and, written
last and atomically, ``CACHE_DIR/<S>/index_<csv stem>.csv`` with columns
image_name and path (relative to CACHE_DIR, e.g. ``256/ISIC_0015719.jpg``). The
index is the Makefile's file target: it exists only when every image of the table
is cached at that size.

Decisions:

* Non-square images are **centre-cropped** to a square on the short side, then
  resized with ``cv2.INTER_AREA``. Dermoscopy centres the lesion; a crop keeps the
  lesion's shape (its asymmetry and border are diagnostic) where a plain resize
  would stretch 3:2 competition and 4:3 ISIC images differently. The cost: at most
  the outer 1/6 (3:2) of the long side, usually background, is lost.
* Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale (``cv2.IMREAD_REDUCED_COLOR_*``,
  done by libjpeg inside the decoder) whenever the reduced short side still has at
  least the largest requested size; one decode serves all requested sizes.
* Grayscale, palette, 16-bit and alpha images (PNG or JPEG content, whatever the
  extension) are converted to 8-bit RGB by OpenCV's colour decode: **converted and
  reported** (the run goes on; the first few such files and their count are printed),
  since the cached copy is exactly what an RGB JPEG of the same picture would give.
* Missing files are checked before any work: the first few names and the count
  are reported and nothing is written. An unreadable, zero-byte or truncated file
  (a JPEG without an end-of-image marker after its frame header; OpenCV would silently
  return a half-grey image for it) or a JPEG whose data libjpeg reports as corrupt
  stops the run with an error naming the file(s): images finished so far stay cached
  (each is written atomically) and the index is not written, so a rerun after the fix
  only does the rest. Bytes after the end-of-image marker are ignored, as decoders do.
* Workers die with the resizer: a killed parent never leaves them writing to the cache
  or holding its output pipe open.
* Existing cache files are skipped (``--overwrite`` redoes them), unless their source
  changed: ``CACHE_DIR/<S>/sources_<csv stem>.csv`` (written just before the index)
  records each source's path, size and modification time, and a source whose size or
  time differs from that record is cached again.
* ``deepauc train`` checks that every row of its table is cached (:func:`check_cached`)
  before any work, listing the first few missing names and the count.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import multiprocessing
import os
import signal
import struct
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import IO

import cv2
import numpy as np
import pandas as pd

from deepauc.data.tables import check_unique_names, is_safe_name, read_csv_table
from deepauc.io import atomic_path, write_csv

JPEG_QUALITY = 95
_REDUCED = (
    (8, cv2.IMREAD_REDUCED_COLOR_8),
    (4, cv2.IMREAD_REDUCED_COLOR_4),
    (2, cv2.IMREAD_REDUCED_COLOR_2),
)
_SHOW = 5
# libjpeg's warnings that mean the pixel data is damaged (it decodes on, guessing)
_DAMAGED = ("Corrupt JPEG data", "Premature end of JPEG file")
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class ImageError(ValueError):
    """An image file cannot be decoded (empty, truncated, not an image)."""


def cache_path(cache_dir: str | os.PathLike, size: int, image_name: str) -> Path:
    """Where the S x S copy of ``image_name`` lives: ``cache_dir/<size>/<image_name>.jpg``.

    A name that would address a file outside that folder raises ValueError.
    """
    if not is_safe_name(str(image_name)):
        raise ValueError(f"image_name {image_name!r} is a path, not a plain name")
    return Path(cache_dir) / str(int(size)) / f"{image_name}.jpg"


def _check_inside(folder: Path, paths: list[str]) -> None:
    """Raise ValueError unless every path resolves to a file directly inside ``folder``."""
    root = folder.resolve()
    outside = [p for p in paths if Path(p).parent.resolve() != root]
    if outside:
        raise ValueError(f"refusing to write outside {folder}: {', '.join(outside[:_SHOW])}")


def load_cached(cache_dir: str | os.PathLike, size: int, image_name: str) -> np.ndarray:
    """The cached image as an RGB uint8 array of shape (size, size, 3)."""
    path = cache_path(cache_dir, size, image_name)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        if not path.exists():
            raise FileNotFoundError(f"{path}: not cached (run `deepauc resize` first)")
        raise ImageError(f"{path}: cannot decode cached image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


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


def _decode(path: Path, min_side: int) -> np.ndarray:
    """Decode ``path`` to BGR uint8, at the coarsest 1/2^k scale whose short side is
    still >= ``min_side``."""
    check_complete(path)
    flag = cv2.IMREAD_COLOR
    wh = image_size(path)
    if wh is not None:
        short = min(wh)
        for factor, reduced in _REDUCED:
            if short // factor >= min_side:
                flag = reduced
                break
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


def _square(img: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to size x size with INTER_AREA."""
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
    bgr = _square(_decode(Path(src), size), size)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# the temporary file this process is writing, removed if it dies with its parent
_unfinished: list[Path] = []


def _write_jpeg(bgr: np.ndarray, path: Path) -> None:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ImageError(f"{path}: JPEG encoding failed")
    try:
        with atomic_path(path) as tmp:
            _unfinished.append(tmp)
            tmp.write_bytes(buf.tobytes())
    finally:
        _unfinished.clear()


def _process(job: tuple[str, list[tuple[int, str]]]) -> tuple[str | None, str | None]:
    """Write every (size, destination) of one source image.

    Returns (error or None, note or None): the note says the source was not an RGB JPEG
    (PNG, grayscale, ...) and was converted.
    """
    src, targets = job
    try:
        img = _decode(Path(src), max(s for s, _ in targets))
        for size, dst in targets:
            _write_jpeg(_square(img, size), Path(dst))
        kind = source_format(src)
    except (ImageError, OSError, cv2.error) as err:
        return str(err), None
    return None, (f"{src} ({kind})" if kind else None)


def _exit_with_parent(*_signal_args) -> None:
    """End this worker at once (its parent is gone), removing a half-written file."""
    for tmp in _unfinished:
        with contextlib.suppress(OSError):
            tmp.unlink()
    os._exit(1)


def _parent_death_signal(sig: int) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    return prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    _exit_with_parent()


def _init_worker(parent_pid: int) -> None:
    # One OpenCV thread per process: the pool already uses every core.
    cv2.setNumThreads(0)
    # A killed resizer must not leave workers blocked on its pipes or writing the cache.
    signal.signal(signal.SIGTERM, _exit_with_parent)
    if not _parent_death_signal(signal.SIGTERM):
        threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    elif os.getppid() != parent_pid:  # the parent died before the signal was armed
        _exit_with_parent()


def _pool_context():
    # fork keeps the resizer the direct parent of its workers, which _init_worker checks
    return multiprocessing.get_context("fork") if sys.platform.startswith("linux") else None


def _run_jobs(jobs: list, workers: int, label: str) -> list[tuple[str | None, str | None]]:
    """:func:`_process` of every job, in order, with a progress bar (DEEPAUC_PROGRESS=0: none)."""
    from tqdm import tqdm

    quiet = os.environ.get("DEEPAUC_PROGRESS", "1") == "0"
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=_pool_context(),
            initializer=_init_worker,
            initargs=(os.getpid(),),
        ) as pool:
            # the bar (and its monitor thread) starts after the workers are forked
            done = pool.map(_process, jobs, chunksize=16)
            return list(tqdm(done, total=len(jobs), desc=label, leave=False, disable=quiet))
    return [_process(job) for job in tqdm(jobs, desc=label, leave=False, disable=quiet)]


def source_paths(df: pd.DataFrame, image_root: str | os.PathLike) -> list[Path]:
    """Source image of each row: image_root/image_path, else image_root/<image_name>.jpg."""
    root = Path(image_root)
    if "image_path" in df.columns and df["image_path"].notna().all():
        return [root / p for p in df["image_path"]]
    if "image_path" in df.columns:
        return [
            root / p if isinstance(p, str) else root / f"{n}.jpg"
            for n, p in zip(df["image_name"], df["image_path"])
        ]
    return [root / f"{n}.jpg" for n in df["image_name"]]


def resize_table(
    csv: str | os.PathLike,
    image_root: str | os.PathLike,
    sizes: list[int],
    cache_dir: str | os.PathLike,
    workers: int = 1,
    overwrite: bool = False,
    notes: list[str] | None = None,
) -> dict[int, int]:
    """Cache every image of ``csv`` at each size; return {size: images written}.

    See the module docstring for the layout and the error policy. Sources that were not
    RGB JPEGs (converted) are appended to ``notes`` when it is given.
    """
    csv = Path(csv)
    sizes = sorted({int(s) for s in sizes})
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--size must be positive, got {sizes}")
    df = read_csv_table(csv, ["image_name"])
    check_unique_names(df, str(csv))
    names = list(df["image_name"])
    sources = source_paths(df, image_root)
    missing = [str(p) for p in sources if not p.is_file()]
    if missing:
        more = f" and {len(missing) - _SHOW} more" if len(missing) > _SHOW else ""
        raise FileNotFoundError(
            f"{csv}: {len(missing)} of {len(sources)} source image(s) missing under "
            f"{image_root}: {', '.join(missing[:_SHOW])}{more}"
        )

    stamps = [source_stamp(p) for p in sources]
    recorded = {s: read_source_stamps(cache_dir, s, csv) for s in sizes}
    jobs = []
    written = dict.fromkeys(sizes, 0)
    for name, src, stamp in zip(names, sources, stamps):
        targets = [(s, str(cache_path(cache_dir, s, name))) for s in sizes]
        if not overwrite:  # kept: cached and, where recorded, from this very source file
            targets = [
                (s, d)
                for s, d in targets
                if not os.path.isfile(d) or recorded[s].get(name, stamp) != stamp
            ]
        if targets:
            jobs.append((str(src), targets))
            for s, _ in targets:
                written[s] += 1
    for s in sizes:
        (Path(cache_dir) / str(s)).mkdir(parents=True, exist_ok=True)
        _check_inside(Path(cache_dir) / str(s), [d for _, ts in jobs for z, d in ts if z == s])

    results = _run_jobs(jobs, workers, f"resize {csv.name}")
    errors = [e for e, _ in results if e]
    if notes is not None:
        notes.extend(n for _, n in results if n)
    if errors:
        raise ValueError(_unreadable_message(errors))

    for s in sizes:
        write_source_stamps(cache_dir, s, csv, names, sources, stamps)
        index = pd.DataFrame({"image_name": names, "path": [f"{s}/{n}.jpg" for n in names]})
        write_csv(index, index_path(cache_dir, s, csv))
    return written


def _unreadable_message(errors: list[str]) -> str:
    """One line for one unreadable image; an indented list of the first few for several."""
    head = f"{len(errors)} image(s) could not be read (fix or remove them, then rerun):"
    if len(errors) == 1:
        return f"{head} {errors[0]}"
    more = f"\n  ... and {len(errors) - _SHOW} more" if len(errors) > _SHOW else ""
    return head + "\n  " + "\n  ".join(errors[:_SHOW]) + more


def source_stamp(path: str | os.PathLike) -> tuple[int, int]:
    """(size in bytes, modification time in ns) of a source image: changes when it is replaced."""
    st = os.stat(path)
    return int(st.st_size), int(st.st_mtime_ns)


def sources_path(cache_dir: str | os.PathLike, size: int, csv: str | os.PathLike) -> Path:
    """The record of the sources behind ``index_<stem>.csv``: ``cache_dir/<size>/sources_<stem>.csv``."""
    return Path(cache_dir) / str(int(size)) / f"sources_{Path(csv).stem}.csv"


def read_source_stamps(cache_dir, size: int, csv) -> dict[str, tuple[int, int]]:
    """image_name -> source stamp recorded by the last complete run (empty if none or unreadable)."""
    path = sources_path(cache_dir, size, csv)
    try:
        df = pd.read_csv(path, dtype={"image_name": str})
        return {
            n: (int(b), int(t))
            for n, b, t in zip(df["image_name"], df["source_bytes"], df["source_mtime_ns"])
        }
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        return {}  # no usable record: cached files count as current, as before records existed


def write_source_stamps(cache_dir, size: int, csv, names, sources, stamps) -> None:
    frame = pd.DataFrame(
        {
            "image_name": names,
            "source": [str(p) for p in sources],
            "source_bytes": [b for b, _ in stamps],
            "source_mtime_ns": [t for _, t in stamps],
        }
    )
    write_csv(frame, sources_path(cache_dir, size, csv))


def index_path(cache_dir: str | os.PathLike, size: int, csv: str | os.PathLike) -> Path:
    """The stamp/index file of ``csv`` at ``size``: ``cache_dir/<size>/index_<stem>.csv``."""
    return Path(cache_dir) / str(int(size)) / f"index_{Path(csv).stem}.csv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--csv", required=True, help="table with image_name (and image_path)")
    parser.add_argument(
        "--image-root",
        required=True,
        help="folder that image_path (or <image_name>.jpg) is relative to",
    )
    parser.add_argument(
        "--size",
        type=int,
        action="append",
        required=True,
        help="output side in pixels; repeat for several sizes",
    )
    parser.add_argument("--out", required=True, help="cache folder (CACHE_DIR)")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes (default: CPU count)",
    )
    parser.add_argument("--overwrite", action="store_true", help="redo images already cached")


def check_cached(names, cache_dir: str | os.PathLike, size: int, table: str | os.PathLike) -> None:
    """Raise FileNotFoundError listing the first few of ``names`` not cached at ``size``."""
    missing = [n for n in names if not cache_path(cache_dir, size, n).is_file()]
    if missing:
        more = f" and {len(missing) - _SHOW} more" if len(missing) > _SHOW else ""
        raise FileNotFoundError(
            f"{table}: {len(missing)} of {len(names)} image(s) not cached at {size} px under "
            f"{Path(cache_dir) / str(int(size))}: {', '.join(missing[:_SHOW])}{more} "
            f"(run `deepauc resize --csv {table} --size {size} --out {cache_dir}` first)"
        )


def format_notes(notes: list[str]) -> str:
    """The resize report line for sources that were converted (not RGB JPEGs)."""
    more = f" and {len(notes) - _SHOW} more" if len(notes) > _SHOW else ""
    return (
        f"note: {len(notes)} source image(s) were not RGB JPEGs and were converted to RGB: "
        f"{', '.join(notes[:_SHOW])}{more}"
    )


def run(args: argparse.Namespace) -> int:
    notes: list[str] = []
    written = resize_table(
        args.csv,
        args.image_root,
        args.size,
        args.out,
        workers=args.workers,
        overwrite=args.overwrite,
        notes=notes,
    )
    if notes:
        print(format_notes(notes))
    for size, n in written.items():
        print(f"size {size}: {n} image(s) written, index {index_path(args.out, size, args.csv)}")
    return 0
