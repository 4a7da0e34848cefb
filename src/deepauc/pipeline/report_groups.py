"""Where a model fails: OOF AUC with n and positives per anatomic site, sex, age band, image size
(competition rows) and source (all validated rows), from the folds table joined on image_name."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from deepauc.data.tables import (
    SITE_COLUMN,
    check_columns,
    check_unique_names,
    numeric_column,
    read_folds_table,
)
from deepauc.metrics import roc_auc
from deepauc.pipeline.pred_files import COMPETITION

MISSING = "missing"
OTHER = "other"
NO_AUC = "–"
# lower bounds of the age bands (years); a band runs to the next bound, the last is open
AGE_BOUNDS = [(0, "<30"), (30, "30-44"), (45, "45-59"), (60, "60-74"), (75, "75+")]
TOP_SIZES = 8  # image sizes (width×height) shown one by one; the rest pooled as "other"


def folds_columns(
    folds_csv: str | os.PathLike, table: pd.DataFrame | None, required: Sequence[str]
) -> pd.DataFrame:
    """The folds table read once by the caller (``table``), its ``required`` columns checked
    as the reader checks them, or read from ``folds_csv`` when not given."""
    if table is None:
        return read_folds_table(folds_csv, required)
    check_columns(table, required, str(folds_csv))
    return table


def age_bands(age: pd.Series) -> pd.Series:
    """Each age's band label (``AGE_BOUNDS``), ``missing`` for no age."""
    bounds = [b for b, _ in AGE_BOUNDS]
    labels = [label for _, label in AGE_BOUNDS]
    index = np.searchsorted(bounds, age.fillna(-1).to_numpy(), side="right") - 1
    out = np.where(age.isna().to_numpy() | (index < 0), MISSING, np.take(labels, index.clip(0)))
    return pd.Series(out, index=age.index)


def image_sizes(width: pd.Series, height: pd.Series) -> pd.Series:
    """``W×H`` per row (``missing`` without both)."""
    known = (width.notna() & height.notna()).to_numpy()
    w = width.round().astype("Int64").astype(str)
    h = height.round().astype("Int64").astype(str)
    return pd.Series(np.where(known, w + "×" + h, MISSING), index=width.index)


def pool_rare(labels: pd.Series, keep: int = TOP_SIZES) -> pd.Series:
    """Labels beyond the ``keep`` most frequent (``missing`` aside) become ``other``."""
    known = labels != MISSING
    common = labels[known].value_counts().index[:keep]
    return labels.where(~known | labels.isin(common), OTHER)


def _text(column: pd.Series) -> pd.Series:
    return column.where(column.notna(), MISSING).astype(str)


def groupings(meta: pd.DataFrame, name: str) -> dict[str, pd.Series]:
    """Title -> group label per row of ``meta`` (the folds table's rows), for the columns it has."""
    out: dict[str, pd.Series] = {}
    if SITE_COLUMN in meta.columns:
        out["anatomic site"] = _text(meta[SITE_COLUMN])
    if "sex" in meta.columns:
        out["sex"] = _text(meta["sex"])
    if "age_approx" in meta.columns:
        out["age band"] = age_bands(numeric_column(meta, "age_approx", name))
    if {"width", "height"} <= set(meta.columns):
        width, height = numeric_column(meta, "width", name), numeric_column(meta, "height", name)
        out["image size"] = image_sizes(width, height)
    return out


def _order(title: str, labels: pd.Series) -> list[str]:
    """Group order: age bands in age order, the rest by size; ``other`` and ``missing`` last."""
    counts = labels.value_counts(sort=True)
    if title == "age band":
        ordered = [label for _, label in AGE_BOUNDS if label in counts.index]
    else:
        ordered = [g for g in counts.index if g not in (OTHER, MISSING)]
    return ordered + [g for g in (OTHER, MISSING) if g in counts.index]


def group_table(
    title: str, labels: pd.Series, target: np.ndarray, preds: dict[str, np.ndarray]
) -> pd.DataFrame:
    """One row per group: its label, n, positives and each model's AUC (``–``: one class)."""
    rows = []
    values = labels.to_numpy()
    for group in _order(title, labels):
        rows_in = values == group
        y = target[rows_in]
        row: dict[str, object] = {title: group, "n": int(rows_in.sum()), "positives": int(y.sum())}
        for model, pred in preds.items():
            auc = roc_auc(y, pred[rows_in], undefined="nan")
            row[model] = NO_AUC if np.isnan(auc) else f"{auc:.4f}"
        rows.append(row)
    return pd.DataFrame(rows, columns=[title, "n", "positives", *preds])


def shared_rows(oofs: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The OOF rows every model holds (first model's order) and each model's predictions on them."""
    frames = list(oofs.values())
    common = set(frames[0]["image_name"])
    for oof in frames[1:]:
        common &= set(oof["image_name"])
    base = frames[0][frames[0]["image_name"].isin(common)].reset_index(drop=True)
    preds = {
        model: oof.set_index("image_name").loc[base["image_name"], "pred"].to_numpy()
        for model, oof in oofs.items()
    }
    return base, preds


def subgroup_tables(
    oofs: dict[str, pd.DataFrame], folds_csv: str | os.PathLike, table: pd.DataFrame | None = None
) -> tuple[list[pd.DataFrame], int]:
    """The subgroup tables on the OOF rows all models share, and how many rows that is.

    Source: all those rows, one group per ``source``; the other groupings: their competition
    rows. An OOF image missing from ``folds_csv`` is refused. ``table``: the folds table when
    the caller has read it.
    """
    base, preds = shared_rows(oofs)
    meta = folds_columns(folds_csv, table, ["image_name"])
    check_unique_names(meta, str(folds_csv))
    position = pd.Index(meta["image_name"]).get_indexer(base["image_name"])
    if (position < 0).any():
        missing = base["image_name"].to_numpy()[position < 0]
        raise ValueError(
            f"{folds_csv} lacks {len(missing)} image(s) of the OOF files "
            f"(e.g. {missing[0]}): pass the folds table the predictions were made from"
        )
    target = base["target"].to_numpy()
    tables = [group_table("source", _text(base["source"]), target, preds)]
    comp = (base["source"] == COMPETITION).to_numpy()
    comp_preds = {m: p[comp] for m, p in preds.items()}
    for title, labels in groupings(meta, str(folds_csv)).items():
        chosen = pd.Series(labels.to_numpy()[position[comp]])
        if title == "image size":
            chosen = pool_rare(chosen)
        tables.append(group_table(title, chosen, target[comp], comp_preds))
    return tables, len(base)
