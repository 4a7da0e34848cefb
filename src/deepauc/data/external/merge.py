"""Merging the competition table with the external sets, dropping repeated images."""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from deepauc.data.external.files import file_digest, listed
from deepauc.data.external.registry import (
    EXTERNAL_SOURCES,
    Folder,
    detect_external,
    layout_spec,
    source_folders,
)
from deepauc.data.external.sources import load_competition
from deepauc.data.layouts import detect_competition
from deepauc.data.tables import TRAIN_COLUMNS

# Every value of the ``source`` column, in merge priority order.
SOURCES = ["competition", *EXTERNAL_SOURCES]
MARKED_DUPLICATE = "marked duplicate (tfrecord -1)"


def _content_digests(files: list[str], workers: int) -> list[str | None]:
    """Digest of each file whose size is shared with another file; None otherwise."""
    sizes = [os.path.getsize(f) for f in files]
    counts = pd.Series(sizes).value_counts()
    todo = [i for i, s in enumerate(sizes) if counts[s] > 1]
    digests: list[str | None] = [None] * len(files)
    # hashlib and file reads release the GIL, so threads overlap I/O and hashing.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, d in zip(todo, pool.map(file_digest, [files[i] for i in todo])):
            digests[i] = f"{sizes[i]}:{d}"
    return digests


_DROPPED_COLUMNS = [
    "image_name",
    "source",
    "target",
    "image_path",
    "reason",
    "kept_image_name",
    "kept_source",
]


def _dropped_rows(
    df: pd.DataFrame, drop_idx: pd.Index, kept_idx: np.ndarray, reason: str
) -> pd.DataFrame:
    """Rows ``drop_idx`` of ``df`` with the reason and the name and source of their keeper."""
    rows = df.loc[drop_idx].copy()
    rows["reason"] = reason
    rows["kept_image_name"] = df.loc[kept_idx, "image_name"].to_numpy()
    rows["kept_source"] = df.loc[kept_idx, "source"].to_numpy()
    return rows


def _drop_same_name(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Keep the first row of each image name; return (kept, dropped or None)."""
    first = df.groupby("image_name", sort=False).head(1)
    keeper = pd.Series(first.index, index=first["image_name"])
    dup_name = df["image_name"].duplicated(keep="first")
    dropped = None
    if dup_name.any():
        kept = keeper[df.loc[dup_name, "image_name"]].to_numpy()
        dropped = _dropped_rows(df, df.index[dup_name], kept, "same image name")
    return df[~dup_name].reset_index(drop=True), dropped


def _drop_same_content(
    df: pd.DataFrame, workers: int
) -> tuple[pd.DataFrame, pd.DataFrame | None, int]:
    """Keep the first row of each byte content, competition rows always.

    Returns (kept, dropped or None, number of competition rows that repeat an
    earlier row's bytes).
    """
    missing = [f for f in df["_file"] if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image file(s) not found for the content check: "
            f"{listed(missing)} (or pass --no-content-dedup)"
        )
    digest = pd.Series(_content_digests(list(df["_file"]), workers), index=df.index)
    hashed = df[digest.notna()].assign(_digest=digest[digest.notna()])
    firsts = hashed.groupby("_digest", sort=False).head(1)
    keep_of = pd.Series(firsts.index, index=firsts["_digest"])
    repeat = hashed["_digest"].duplicated(keep="first")
    kept_idx = keep_of[hashed.loc[repeat, "_digest"]].to_numpy()
    is_comp = (hashed.loc[repeat, "source"] == "competition").to_numpy()
    drop_idx = hashed.index[repeat][~is_comp]
    dropped = None
    if len(drop_idx):
        dropped = _dropped_rows(df, drop_idx, kept_idx[~is_comp], "same image content")
        df = df.drop(index=drop_idx).reset_index(drop=True)
    return df, dropped, int(is_comp.sum())


def deduplicate(
    df: pd.DataFrame, content: bool = True, workers: int = 4
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Drop repeated images from ``df`` (rows in priority order, ``_file`` column set).

    Returns (kept rows, dropped rows with ``reason``, ``kept_image_name``,
    ``kept_source``, number of byte-identical pairs inside the competition set).
    """
    df, by_name = _drop_same_name(df.reset_index(drop=True))
    by_content, internal = None, 0
    if content:
        df, by_content, internal = _drop_same_content(df, workers)
    dropped = [rows for rows in (by_name, by_content) if rows is not None]
    dropped_df = (
        pd.concat(dropped, ignore_index=True)[_DROPPED_COLUMNS]
        if dropped
        else pd.DataFrame(columns=_DROPPED_COLUMNS)
    )
    return df, dropped_df, internal


def _load_sources(
    train_csv: Path, folders: dict[str, Folder]
) -> tuple[pd.DataFrame, dict[str, str]]:
    """The competition rows, then those of each given external folder, in SOURCES order,
    and the layout detected for each source.

    ``folders`` maps an external source (a key of EXTERNAL_SOURCES) to its folder.
    """
    frames = [load_competition(train_csv)]
    layouts = {"competition": detect_competition(train_csv).name}
    for source, folder in folders.items():
        layout = detect_external(folder, source)
        layouts[source] = layout.name
        frames.append(layout_spec(layout.name).read(folder, train_csv.parent))
    return pd.concat(frames, ignore_index=True), layouts


def drop_marked(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop the rows the publisher marked as duplicates (``_duplicate_mark``).

    Returns (kept rows, dropped rows in the dropped-report columns; the kept copy is
    not named by the mark, so ``kept_image_name`` and ``kept_source`` are empty).
    """
    marked = df["_duplicate_mark"].fillna(False).astype(bool).to_numpy()
    dropped = df.loc[marked, ["image_name", "source", "target", "image_path"]].assign(
        reason=MARKED_DUPLICATE, kept_image_name=np.nan, kept_source=np.nan
    )
    return df[~marked].reset_index(drop=True), dropped.reset_index(drop=True)


def _source_counts(merged: pd.DataFrame, kept: pd.DataFrame, dropped: pd.DataFrame) -> pd.DataFrame:
    """Images in, dropped by reason, out and malignant out per source, and a total row."""
    before = merged["source"].value_counts()
    after = kept["source"].value_counts()
    mal = kept.groupby("source")["target"].sum()
    present = [s for s in SOURCES if s in before.index]

    def n_dropped(source: str, reason: str) -> int:
        return int(((dropped["source"] == source) & (dropped["reason"] == reason)).sum())

    marked = {}
    if (dropped["reason"] == MARKED_DUPLICATE).any():
        marked = {"dropped_marked_duplicate": [n_dropped(s, MARKED_DUPLICATE) for s in present]}
    counts = pd.DataFrame(
        {
            "source": present,
            "images_in": [int(before.get(s, 0)) for s in present],
            **marked,
            "dropped_same_name": [n_dropped(s, "same image name") for s in present],
            "dropped_same_content": [n_dropped(s, "same image content") for s in present],
            "images_out": [int(after.get(s, 0)) for s in present],
            "malignant_out": [int(mal.get(s, 0)) for s in present],
        }
    )
    total = counts.drop(columns="source").sum()
    counts = pd.concat(
        [counts, pd.DataFrame([{"source": "total", **total.to_dict()}])], ignore_index=True
    )
    counts["malignant_ratio"] = counts["malignant_out"] / counts["images_out"].clip(lower=1)
    return counts


def build_training_table(
    train_csv: str | os.PathLike,
    *folders: Folder | None,
    external: Mapping[str, Folder] | list[tuple[str, Folder]] | None = None,
    content_dedup: bool = True,
    workers: int = 4,
    **source_dirs: Folder | None,
) -> tuple[pd.DataFrame, dict]:
    """Merge the competition table with the given external sets and deduplicate.

    The external folders are given as ``external`` (source -> folder, or the pairs of
    ``--external SOURCE=DIR``), as ``<source>_dir=`` keywords (``isic2019_dir=``, ...)
    or positionally in registry order (isic2019, isic2018, isic2017, malignant); see
    :mod:`deepauc.data.external.registry`.

    Returns (table, report) where table has the train columns (plus any extra
    competition columns), ``source`` and ``image_path``; report holds ``counts``
    (per source before/after), ``dropped`` (one row per dropped image) and
    ``competition_content_duplicates`` and ``layouts`` (source -> detected layout,
    see :mod:`deepauc.data.layouts`).

    ``source`` is one of SOURCES. ``image_path`` is the original image as a POSIX path
    relative to the data root, the folder of ``train_csv`` (competition rows:
    ``jpeg/train/<name>.jpg``, or ``train/<name>.jpg`` in a resized set; an image
    elsewhere gets a ``../`` path), so ``deepauc
    resize --image-root`` must be that folder.

    Rows a resized set marks as duplicates (``tfrecord == -1``) are dropped first.
    Deduplication then keeps the earlier source, in the order competition > isic2019 >
    isic2018 > isic2017 > malignant:

    1. by name, after stripping the ``_downsampled`` suffix of some 2019 names (so the
       ISIC 2018/2017 images that ISIC 2019 re-published are counted once; the table's
       ``image_name`` is the stripped name, ``image_path`` the real file);
    2. by content: byte-identical files (BLAKE2b of the bytes, only computed for files
       whose size equals another file's size). Only exact copies are caught;
       re-encoded or resized copies are not.

    Competition rows are never dropped: byte-identical images inside the competition
    set are only counted in the report.
    """
    merged, layouts = _load_sources(Path(train_csv), source_folders(folders, source_dirs, external))
    unmarked, marked = drop_marked(merged)
    kept, dropped, internal = deduplicate(unmarked, content=content_dedup, workers=workers)
    if len(marked):
        dropped = pd.concat([marked, dropped], ignore_index=True)
    counts = _source_counts(merged, kept, dropped)
    table = kept.drop(columns=["_file", "_duplicate_mark"])
    cols = TRAIN_COLUMNS + [c for c in table.columns if c not in TRAIN_COLUMNS]
    report = {
        "counts": counts,
        "dropped": dropped,
        "competition_content_duplicates": internal,
        "content_dedup": content_dedup,
        "layouts": layouts,
    }
    return table[cols], report
