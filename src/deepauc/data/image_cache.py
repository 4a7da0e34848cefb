"""The resize cache on disk: where each S x S copy of an image lives, reading and writing
it, which copies are stale against their sources' recorded stamps, and the per-table index
written last that says every image of the table is cached at a size."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from deepauc.data import source_stamps as stamps_mod
from deepauc.data.image_header import ImageError
from deepauc.data.source_stamps import sources_path
from deepauc.io import atomic_path, is_safe_name, write_csv

JPEG_QUALITY = 95
SHOW = 5  # names a message lists before "and N more"

# (size, destination) pairs to write, per source image
Jobs = dict[str, list[tuple[int, str]]]


def cache_path(cache_dir: str | os.PathLike, size: int, image_name: str) -> Path:
    """Where the S x S copy of ``image_name`` lives: ``cache_dir/<size>/<image_name>.jpg``.

    A name that would address a file outside that folder raises ValueError.
    """
    if not is_safe_name(str(image_name)):
        raise ValueError(f"image_name {image_name!r} is a path, not a plain name")
    return Path(cache_dir) / str(int(size)) / f"{image_name}.jpg"


def index_path(cache_dir: str | os.PathLike, size: int, csv: str | os.PathLike) -> Path:
    """The stamp/index file of ``csv`` at ``size``: ``cache_dir/<size>/index_<stem>.csv``."""
    return Path(cache_dir) / str(int(size)) / f"index_{Path(csv).stem}.csv"


def load_cached(cache_dir: str | os.PathLike, size: int, image_name: str) -> np.ndarray:
    """The cached image as an RGB uint8 array of shape (size, size, 3)."""
    path = cache_path(cache_dir, size, image_name)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        if not path.exists():
            raise FileNotFoundError(f"{path}: not cached (run `deepauc resize` first)")
        raise ImageError(f"{path}: cannot decode cached image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# the temporary file this process is writing, removed if it dies with its parent
_unfinished: list[Path] = []


def write_cached(bgr: np.ndarray, path: Path) -> None:
    """``bgr`` as a JPEG (quality ``JPEG_QUALITY``) at ``path``, written atomically."""
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ImageError(f"{path}: JPEG encoding failed")
    # SIGTERM (the parent died) waits until the new temporary file is registered, so the
    # handler can remove it: arriving between its creation and the append, it left it behind
    blocked = _block_sigterm()
    try:
        with atomic_path(path) as tmp:
            _unfinished.append(tmp)
            _restore_mask(blocked)
            tmp.write_bytes(buf.tobytes())
    finally:
        _restore_mask(blocked)
        _unfinished.clear()


def _block_sigterm() -> set[int | signal.Signals] | None:
    if not hasattr(signal, "pthread_sigmask"):
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def _restore_mask(mask: set[int | signal.Signals] | None) -> None:
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def remove_unfinished() -> None:
    """Delete the half-written file of :func:`write_cached`, if any (a worker about to die)."""
    for tmp in _unfinished:
        with contextlib.suppress(OSError):
            tmp.unlink()


def check_cached(names, cache_dir: str | os.PathLike, size: int, table: str | os.PathLike) -> None:
    """Raise FileNotFoundError listing the first few of ``names`` not cached at ``size``."""
    missing = [n for n in names if not cache_path(cache_dir, size, n).is_file()]
    if missing:
        more = f" and {len(missing) - SHOW} more" if len(missing) > SHOW else ""
        raise FileNotFoundError(
            f"{table}: {len(missing)} of {len(names)} image(s) not cached at {size} px under "
            f"{Path(cache_dir) / str(int(size))}: {', '.join(missing[:SHOW])}{more} "
            f"(run `deepauc resize --csv {table} --size {size} --out {cache_dir}` first)"
        )


def current_stamps(cache_dir, csv, names, sources, workers) -> dict[int, list]:
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


def stale_copies(
    cache_dir, csv, names: list[str], stamps: dict[int, list], overwrite: bool
) -> tuple[Jobs, dict[int, int]]:
    """The copies to (re)write, per source, and their count per size.

    A copy is current when its file exists and its source's SHA-256 is the one recorded
    (or none is recorded); ``overwrite`` redoes every copy. Name clashes with other
    tables are refused first (:func:`check_name_clash`).
    """
    jobs: Jobs = {}
    written = dict.fromkeys(stamps, 0)
    for s in stamps:
        recorded = stamps_mod.read_stamps(sources_path(cache_dir, s, csv))
        others = stamps_mod.other_tables(cache_dir, s, csv)
        check_name_clash(csv, s, names, stamps[s], recorded, others)
        for name, stamp in zip(names, stamps[s]):
            dst = str(cache_path(cache_dir, s, name))
            old = recorded.get(name)
            current = os.path.isfile(dst) and (old is None or old.sha256 == stamp.sha256)
            if overwrite or not current:
                jobs.setdefault(stamp.source, []).append((s, dst))
                written[s] += 1
    return jobs, written


def check_name_clash(csv, size, names, stamps, recorded, others) -> None:
    """Raise ValueError when an image this table has never cached is already cached under
    its name by another table from other bytes (a test image named like a training
    image): it must neither reuse nor overwrite those pixels."""
    clash = [
        (n, others[n][1])
        for n, st in zip(names, stamps)
        if n not in recorded and n in others and others[n][0] != st.sha256
    ]
    if clash:
        more = f" and {len(clash) - SHOW} more" if len(clash) > SHOW else ""
        raise ValueError(
            f"{csv}: {len(clash)} image name(s) already cached at {size} px from other source "
            f"files (recorded in {clash[0][1]}): {', '.join(n for n, _ in clash[:SHOW])}{more}; "
            "cache this table under another --out, or rename the images"
        )


def make_size_folders(cache_dir, sizes: list[int], jobs: Jobs) -> None:
    """Create ``cache_dir/<size>/``; refuse any destination not directly inside it."""
    for s in sizes:
        (Path(cache_dir) / str(s)).mkdir(parents=True, exist_ok=True)
        _check_inside(
            Path(cache_dir) / str(s), [d for ts in jobs.values() for z, d in ts if z == s]
        )


def _check_inside(folder: Path, paths: list[str]) -> None:
    """Raise ValueError unless every path resolves to a file directly inside ``folder``."""
    root = folder.resolve()
    outside = [p for p in paths if Path(p).parent.resolve() != root]
    if outside:
        raise ValueError(f"refusing to write outside {folder}: {', '.join(outside[:SHOW])}")


def write_index(cache_dir, csv, names: list[str], stamps: dict[int, list]) -> None:
    """Per size: the sources' stamps, then (last) the index that marks the table complete."""
    for s in stamps:
        stamps_mod.write_stamps(sources_path(cache_dir, s, csv), names, stamps[s])
        index = pd.DataFrame({"image_name": names, "path": [f"{s}/{n}.jpg" for n in names]})
        write_csv(index, index_path(cache_dir, s, csv))
