"""Per row of a table, facts about its source image file: width and height (the table's own
columns when a resized set gives the original's, else the file's header) and its size in
bytes, which the metadata model may use as features."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from deepauc.data.image_header import image_size
from deepauc.data.tables import describe_rows


def image_paths(df: pd.DataFrame, root: str | os.PathLike) -> list[Path]:
    """``root/image_path`` where the table names a path, else ``root/<image_name>.jpg``."""
    base = Path(root)
    named = df["image_path"] if "image_path" in df.columns else pd.Series(None, index=df.index)
    return [
        base / str(p) if isinstance(p, str) and p else base / f"{n}.jpg"
        for n, p in zip(df["image_name"], named)
    ]


def image_facts(df: pd.DataFrame, root: str | os.PathLike, table: str) -> pd.DataFrame:
    """Columns width, height, bytes (float) for every row of ``df``; a missing file or an
    unreadable header raises ValueError naming the table's line and the file."""
    paths = image_paths(df, root)
    sizes = np.array([p.stat().st_size if p.is_file() else -1 for p in paths], dtype=np.float64)
    missing = sizes < 0
    if missing.any():
        first = paths[int(np.flatnonzero(missing)[0])]
        raise ValueError(
            f"{table}: image file not found for {describe_rows(df, missing, 'image_name')} "
            f"(first: {first})"
        )
    width, height = _table_dims(df)
    need = np.isnan(width) | np.isnan(height)
    for i in np.flatnonzero(need):
        wh = image_size(paths[i])
        if wh is None:
            raise ValueError(f"{table}: {paths[i]}: no JPEG or PNG header to read a size from")
        width[i], height[i] = wh
    return pd.DataFrame({"width": width, "height": height, "bytes": sizes}, index=df.index)


def _table_dims(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The table's width and height where both are given (resized sets), NaN elsewhere."""
    if not {"width", "height"} <= set(df.columns):
        nan = np.full(len(df), np.nan)
        return nan, nan.copy()
    w = pd.to_numeric(df["width"], errors="coerce").to_numpy(dtype=np.float64)
    h = pd.to_numeric(df["height"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~(w > 0) | ~(h > 0)
    w[bad], h[bad] = np.nan, np.nan
    return w, h
