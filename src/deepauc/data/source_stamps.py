"""Content stamps of source images: a quick key (size, mtime, ctime) and the SHA-256 of
the bytes, recorded per cache size in ``sources_<csv stem>.csv`` next to the resize index.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from deepauc.data.tables import read_csv_table
from deepauc.io import write_csv

COLUMNS = [
    "image_name",
    "source",
    "source_bytes",
    "source_mtime_ns",
    "source_ctime_ns",
    "source_sha256",
]


class Stamp(NamedTuple):
    """What a cached image was made from: its source file, quick key and content hash."""

    source: str
    size: int
    mtime_ns: int
    ctime_ns: int
    sha256: str

    def quick(self) -> tuple[int, int, int]:
        return self.size, self.mtime_ns, self.ctime_ns


def file_sha256(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def quick_key(path: str | os.PathLike) -> tuple[int, int, int]:
    """(size, mtime_ns, ctime_ns): any write changes ctime, which ``touch -r`` cannot restore."""
    st = os.stat(path)
    return int(st.st_size), int(st.st_mtime_ns), int(st.st_ctime_ns)


def sha256_many(paths: list[str], workers: int = 4) -> list[str]:
    """:func:`file_sha256` of each path (hashlib releases the GIL: threads run in parallel)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(file_sha256, paths))


def sources_path(cache_dir: str | os.PathLike, size: int, csv: str | os.PathLike) -> Path:
    """The record of the sources behind ``index_<stem>.csv``: ``cache_dir/<size>/sources_<stem>.csv``."""
    return Path(cache_dir) / str(int(size)) / f"sources_{Path(csv).stem}.csv"


def sources_files(cache_dir: str | os.PathLike, size: int) -> list[Path]:
    """Every ``sources_<stem>.csv`` recorded at ``size``, in name order."""
    return sorted((Path(cache_dir) / str(int(size))).glob("sources_*.csv"))


def read_sources(path: str | os.PathLike) -> pd.DataFrame:
    """The rows of one sources CSV with names and content hashes as text (a record of the older
    layout has no ``source_sha256``); FileNotFoundError or ValueError naming it when unreadable."""
    return read_csv_table(path, ["image_name"], text_columns=["source_sha256"])


def read_stamps(path: Path) -> dict[str, Stamp]:
    """image_name -> Stamp from one sources CSV; empty when it is missing, unreadable or
    of the older layout without content hashes."""
    try:
        rows = read_sources(path)[COLUMNS].itertuples(index=False, name=None)
        return {n: Stamp(s, int(b), int(m), int(c), str(h)) for n, s, b, m, c, h in rows}
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        return {}


def write_stamps(path: Path, names: list[str], stamps: list[Stamp]) -> None:
    rows = [(n, *s) for n, s in zip(names, stamps)]
    write_csv(pd.DataFrame(rows, columns=COLUMNS), path)


def other_tables(cache_dir: str | os.PathLike, size: int, csv: str | os.PathLike) -> dict:
    """image_name -> (sha256, sources CSV) over the other tables cached at ``size``: the
    pixels a file of that name in the cache was made from."""
    own = sources_path(cache_dir, size, csv).name
    out: dict[str, tuple[str, str]] = {}
    for path in sources_files(cache_dir, size):
        if path.name != own:
            for name, stamp in read_stamps(path).items():
                out.setdefault(name, (stamp.sha256, str(path)))
    return out
