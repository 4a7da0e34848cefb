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
  least the size; one decode serves every size of one source that picks the same scale.
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
* Existing cache files are skipped (``--overwrite`` redoes them), unless their source's
  bytes changed: ``CACHE_DIR/<S>/sources_<csv stem>.csv`` (written just before the index)
  records each source's path, size, mtime, ctime and ``source_sha256``; a source whose
  quick key (size, mtime, ctime) differs is hashed again, and re-resized only if its
  SHA-256 differs (``touch -r`` cannot hide a replacement: it leaves ctime new). A name
  another table cached from other bytes is refused (one test/train namespace per cache).
* Each size is cut from its own decode, so its pixels never depend on the other sizes
  asked for; a header over 100 megapixels (DEEPAUC_MAX_MEGAPIXELS) is refused unread.
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
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import IO

import cv2
import numpy as np
import pandas as pd

from deepauc.data import source_stamps as stamps_mod
from deepauc.data.image_header import (
    ImageError,
    check_complete,
    check_pixels,
    image_size,
    source_format,
)
from deepauc.data.source_stamps import sources_path
from deepauc.data.tables import check_unique_names, read_csv_table
from deepauc.io import atomic_path, is_safe_name, write_csv

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


def _decode_flag(wh: tuple[int, int] | None, min_side: int) -> int:
    """The coarsest 1/2^k decode whose short side is still >= ``min_side``."""
    if wh is not None:
        for factor, reduced in _REDUCED:
            if min(wh) // factor >= min_side:
                return reduced
    return cv2.IMREAD_COLOR


def _decode(path: Path, min_side: int) -> np.ndarray:
    """Decode ``path`` to BGR uint8, at the coarsest 1/2^k scale whose short side is
    still >= ``min_side``; the header's pixel count is checked first (:func:`check_pixels`)."""
    check_complete(path)
    wh = image_size(path)
    if wh is not None:
        check_pixels(path, wh)
    flag = _decode_flag(wh, min_side)
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


def _process(job: tuple[str, list[tuple[int, str]]]) -> tuple[str | None, str | None, list[int]]:
    """Write every (size, destination) of one source image.

    Returns (error or None, note or None, sizes upscaled): the note says the source was
    not an RGB JPEG (PNG, grayscale, ...) and was converted. Each size is cut from its
    own decode (one per 1/2^k scale), so its pixels do not depend on the other sizes.
    """
    src, targets = job
    upscaled = []
    try:
        wh = image_size(src)
        decoded: dict[int, np.ndarray] = {}
        for size, dst in targets:
            flag = _decode_flag(wh, size)
            if flag not in decoded:
                decoded[flag] = _decode(Path(src), size)
            img = decoded[flag]
            if min(img.shape[:2]) < size:
                upscaled.append(size)
            _write_jpeg(_square(img, size), Path(dst))
        kind = source_format(src)
    except (ImageError, OSError, cv2.error) as err:
        return str(err), None, []
    return None, (f"{src} ({kind})" if kind else None), upscaled


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


def _run_jobs(
    jobs: list, workers: int, label: str
) -> list[tuple[str | None, str | None, list[int]]]:
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


def size_sources(
    df: pd.DataFrame, image_root: str | os.PathLike, size_root: str | os.PathLike
) -> list[Path]:
    """Sources of one size read from its own folder, for the rows inside ``image_root``.

    Rows outside it (external sets: ``../`` paths) keep their own files. A row's file is
    looked for at its relative path, then as ``train/``, ``jpeg/train/`` or bare
    ``<name>.jpg`` under ``size_root``, so a resized set can serve a full-size layout.
    """
    default = source_paths(df, image_root)
    root = Path(size_root)
    out = []
    for name, src in zip(df["image_name"], default):
        rel = os.path.relpath(src, image_root)
        if rel.startswith(".."):
            out.append(src)
            continue
        base = f"{name}.jpg"
        tries = [root / rel, root / "train" / base, root / "jpeg" / "train" / base, root / base]
        out.append(next((p for p in tries if p.is_file()), tries[0]))
    return out


def resize_table(
    csv: str | os.PathLike,
    image_root: str | os.PathLike,
    sizes: list[int],
    cache_dir: str | os.PathLike,
    workers: int = 1,
    overwrite: bool = False,
    notes: list[str] | None = None,
    roots: Mapping[int, str | os.PathLike] | None = None,
    upscaled: dict[int, int] | None = None,
) -> dict[int, int]:
    """Cache every image of ``csv`` at each size; return {size: images written}.

    See the module docstring for the layout and the error policy. ``roots`` gives a
    size its own source folder (default ``image_root``). Sources that were not RGB JPEGs
    (converted) are appended to ``notes``, and per size the count of images upscaled
    from a smaller source is added to ``upscaled``, when they are given.
    """
    csv = Path(csv)
    sizes = sorted({int(s) for s in sizes})
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--size must be positive, got {sizes}")
    df = read_csv_table(csv, ["image_name"])
    check_unique_names(df, str(csv))
    names = [str(n) for n in df["image_name"]]
    root_of = {s: (roots or {}).get(s, image_root) for s in sizes}
    sources = {s: [str(p) for p in source_paths(df, image_root)] for s in sizes}
    for s in sizes:
        if root_of[s] != image_root:
            sources[s] = [str(p) for p in size_sources(df, image_root, root_of[s])]
    _check_sources(csv, sources, root_of)

    stamps = _current_stamps(cache_dir, csv, names, sources, workers)
    jobs: dict[str, list[tuple[int, str]]] = {}
    written = dict.fromkeys(sizes, 0)
    for s in sizes:
        recorded = stamps_mod.read_stamps(sources_path(cache_dir, s, csv))
        others = stamps_mod.other_tables(cache_dir, s, csv)
        _check_name_clash(csv, s, names, stamps[s], recorded, others)
        for name, stamp in zip(names, stamps[s]):
            dst = str(cache_path(cache_dir, s, name))
            old = recorded.get(name)
            current = os.path.isfile(dst) and (old is None or old.sha256 == stamp.sha256)
            if overwrite or not current:
                jobs.setdefault(stamp.source, []).append((s, dst))
                written[s] += 1
    for s in sizes:
        (Path(cache_dir) / str(s)).mkdir(parents=True, exist_ok=True)
        _check_inside(
            Path(cache_dir) / str(s), [d for ts in jobs.values() for z, d in ts if z == s]
        )

    results = _run_jobs(list(jobs.items()), workers, f"resize {csv.name}")
    errors = [e for e, _, _ in results if e]
    if notes is not None:
        notes.extend(n for _, n, _ in results if n)
    if upscaled is not None:
        for _, _, up in results:
            for s in up:
                upscaled[s] = upscaled.get(s, 0) + 1
    if errors:
        raise ValueError(_unreadable_message(errors))

    for s in sizes:
        stamps_mod.write_stamps(sources_path(cache_dir, s, csv), names, stamps[s])
        index = pd.DataFrame({"image_name": names, "path": [f"{s}/{n}.jpg" for n in names]})
        write_csv(index, index_path(cache_dir, s, csv))
    return written


def _check_sources(csv: Path, sources: dict[int, list[str]], roots: dict) -> None:
    """Raise FileNotFoundError listing the first few missing sources, before any work."""
    missing = sorted({p for paths in sources.values() for p in paths if not os.path.isfile(p)})
    if missing:
        more = f" and {len(missing) - _SHOW} more" if len(missing) > _SHOW else ""
        where = ", ".join(sorted({str(r) for r in roots.values()}))
        total = len({p for paths in sources.values() for p in paths})
        raise FileNotFoundError(
            f"{csv}: {len(missing)} of {total} source image(s) missing under "
            f"{where}: {', '.join(missing[:_SHOW])}{more}"
        )


def _current_stamps(cache_dir, csv, names, sources, workers) -> dict[int, list]:
    """Per size, each row's content stamp. A file whose quick key matches its record
    keeps the recorded SHA-256; the others are read and hashed once each."""
    quick = {p: stamps_mod.quick_key(p) for paths in sources.values() for p in paths}
    known: dict[str, str] = {}
    for s, paths in sources.items():
        recorded = stamps_mod.read_stamps(sources_path(cache_dir, s, csv))
        for name, path in zip(names, paths):
            old = recorded.get(name)
            if old is not None and old.source == path and old.quick() == quick[path]:
                known[path] = old.sha256
    todo = [p for p in quick if p not in known]
    known.update(zip(todo, stamps_mod.sha256_many(todo, max(4, workers))))
    return {
        s: [stamps_mod.Stamp(p, *quick[p], known[p]) for p in paths] for s, paths in sources.items()
    }


def _check_name_clash(csv, size, names, stamps, recorded, others) -> None:
    """Raise ValueError when an image this table has never cached is already cached under
    its name by another table from other bytes (a test image named like a training
    image): it must neither reuse nor overwrite those pixels."""
    clash = [
        (n, others[n][1])
        for n, st in zip(names, stamps)
        if n not in recorded and n in others and others[n][0] != st.sha256
    ]
    if clash:
        more = f" and {len(clash) - _SHOW} more" if len(clash) > _SHOW else ""
        raise ValueError(
            f"{csv}: {len(clash)} image name(s) already cached at {size} px from other source "
            f"files (recorded in {clash[0][1]}): {', '.join(n for n, _ in clash[:_SHOW])}{more}; "
            "cache this table under another --out, or rename the images"
        )


def _unreadable_message(errors: list[str]) -> str:
    """One line for one unreadable image; an indented list of the first few for several."""
    head = f"{len(errors)} image(s) could not be read (fix or remove them, then rerun):"
    if len(errors) == 1:
        return f"{head} {errors[0]}"
    more = f"\n  ... and {len(errors) - _SHOW} more" if len(errors) > _SHOW else ""
    return head + "\n  " + "\n  ".join(errors[:_SHOW]) + more


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
    parser.add_argument(
        "--image-root-for",
        action="append",
        default=[],
        metavar="SIZE=DIR",
        help="source folder for one size (repeatable; default --image-root)",
    )


def parse_roots(items: list[str], sizes: list[int]) -> dict[int, str]:
    """{size: folder} from ``SIZE=DIR`` items; a size not asked for is an error."""
    roots = {}
    for item in items:
        size, sep, folder = item.partition("=")
        if not sep or not size.strip().isdigit() or not folder:
            raise ValueError(f"--image-root-for {item!r}: expected SIZE=DIR, e.g. 384=data/384")
        if int(size) not in sizes:
            raise ValueError(f"--image-root-for {item!r}: size {int(size)} is not a --size")
        roots[int(size)] = folder
    return roots


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
    upscaled: dict[int, int] = {}
    roots = parse_roots(args.image_root_for, args.size)
    written = resize_table(
        args.csv,
        args.image_root,
        args.size,
        args.out,
        workers=args.workers,
        overwrite=args.overwrite,
        notes=notes,
        roots=roots,
        upscaled=upscaled,
    )
    if notes:
        print(format_notes(notes))
    for size, n in sorted(upscaled.items()):
        print(
            f"warning: size {size}: {n} of {written[size]} image(s) written were upscaled from "
            f"a smaller source; give larger ones with --image-root-for {size}=DIR"
        )
    for size, n in written.items():
        print(f"size {size}: {n} image(s) written, index {index_path(args.out, size, args.csv)}")
    return 0
