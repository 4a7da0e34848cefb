"""``deepauc resize``: cache every image of a table as S x S JPEGs, once per size, in
worker processes that die with the resizer (layout, decisions and error policy:
docs/pipeline.md, "Resize cache")."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from deepauc.data.image_cache import (
    SHOW,
    current_stamps,
    index_path,
    make_size_folders,
    remove_unfinished,
    stale_copies,
    write_cached,
    write_index,
)
from deepauc.data.image_decode import decode, decode_flag, square
from deepauc.data.image_header import ImageError, image_size, source_format
from deepauc.data.tables import check_unique_names, read_csv_table
from deepauc.processes import arm_parent_death_signal


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
            flag = decode_flag(wh, size)
            if flag not in decoded:
                decoded[flag] = decode(Path(src), size)
            img = decoded[flag]
            if min(img.shape[:2]) < size:
                upscaled.append(size)
            write_cached(square(img, size), Path(dst))
        kind = source_format(src)
    except (ImageError, OSError, cv2.error) as err:
        return str(err), None, []
    return None, (f"{src} ({kind})" if kind else None), upscaled


def _exit_with_parent(*_signal_args) -> None:
    """End this worker at once (its parent is gone), removing a half-written file."""
    remove_unfinished()
    os._exit(1)


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    _exit_with_parent()


def _init_worker(parent_pid: int) -> None:
    # One OpenCV thread per process: the pool already uses every core.
    cv2.setNumThreads(0)
    # A killed resizer must not leave workers blocked on its pipes or writing the cache.
    signal.signal(signal.SIGTERM, _exit_with_parent)
    if not arm_parent_death_signal(signal.SIGTERM):
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

    See docs/pipeline.md ("Resize cache") for the layout and the error policy. ``roots`` gives a
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

    stamps = current_stamps(cache_dir, csv, names, sources, workers)
    jobs, written = stale_copies(cache_dir, csv, names, stamps, overwrite)
    make_size_folders(cache_dir, sizes, jobs)

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

    write_index(cache_dir, csv, names, stamps)
    return written


def _check_sources(csv: Path, sources: dict[int, list[str]], roots: dict) -> None:
    """Raise FileNotFoundError listing the first few missing sources, before any work."""
    missing = sorted({p for paths in sources.values() for p in paths if not os.path.isfile(p)})
    if missing:
        more = f" and {len(missing) - SHOW} more" if len(missing) > SHOW else ""
        where = ", ".join(sorted({str(r) for r in roots.values()}))
        total = len({p for paths in sources.values() for p in paths})
        raise FileNotFoundError(
            f"{csv}: {len(missing)} of {total} source image(s) missing under "
            f"{where}: {', '.join(missing[:SHOW])}{more}"
        )


def _unreadable_message(errors: list[str]) -> str:
    """One line for one unreadable image; an indented list of the first few for several."""
    head = f"{len(errors)} image(s) could not be read (fix or remove them, then rerun):"
    if len(errors) == 1:
        return f"{head} {errors[0]}"
    more = f"\n  ... and {len(errors) - SHOW} more" if len(errors) > SHOW else ""
    return head + "\n  " + "\n  ".join(errors[:SHOW]) + more


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


def format_notes(notes: list[str]) -> str:
    """The resize report line for sources that were converted (not RGB JPEGs)."""
    more = f" and {len(notes) - SHOW} more" if len(notes) > SHOW else ""
    return (
        f"note: {len(notes)} source image(s) were not RGB JPEGs and were converted to RGB: "
        f"{', '.join(notes[:SHOW])}{more}"
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
