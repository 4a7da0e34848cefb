"""The pseudo-label table (``deepauc pseudo`` writes it) as training reads it: fold k's extra
test rows, refused when the table is stale, made under other folds or from the run's own
predictions, and the part of the training record that ties a model to them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from deepauc.data.image_cache import check_cached
from deepauc.data.source_stamps import file_sha256
from deepauc.data.tables import describe_rows, read_csv_table, read_folds_table, read_test_csv
from deepauc.pipeline.experiment import ExperimentConfig
from deepauc.pipeline.pred_files import fold_columns
from deepauc.pipeline.provenance import cache_fingerprint, folds_of_table

log = logging.getLogger("deepauc.pipeline.train")


def record_path(table: str | os.PathLike) -> Path:
    """The record beside a pseudo-label table: ``x.csv`` -> ``x.provenance.json``."""
    return Path(table).with_suffix(".provenance.json")


def short_sha(path: str | os.PathLike) -> str:
    return file_sha256(path)[:16]


def read_pseudo_table(path: str | Path) -> pd.DataFrame:
    """The table ``deepauc pseudo`` writes: image_name and fold<k> columns of 1, 0 or empty
    (read as 1.0, 0.0, NaN); any other cell raises ValueError naming its lines."""
    table = read_csv_table(path, ["image_name"])
    cols = fold_columns(table)
    if not cols:
        raise ValueError(f"{path}: no fold<k> columns; found {list(table.columns)}")
    for col in cols:
        values = pd.to_numeric(table[col], errors="coerce")
        bad = (values.notna() & ~values.isin([0, 1])) | (values.isna() & table[col].notna())
        if bad.any():
            where = describe_rows(table, bad.to_numpy(), col)
            raise ValueError(f"{path}: column {col!r} must be 1, 0 or empty at {where}")
        table[col] = values.astype(float)
    return table


def _stale(path: Path, why: str) -> ValueError:
    return ValueError(
        f"{path}: {why}; rerun `deepauc pseudo` (make does it from the current preds)"
    )


def check_pseudo_record(cfg: ExperimentConfig) -> dict:
    """The record beside ``data.pseudo_csv``, checked against the table, the source predictions
    and this run: same fold assignment, not the run's own output."""
    table = Path(str(cfg.data.pseudo_csv))
    if not table.is_file():
        raise FileNotFoundError(
            f"data.pseudo_csv: {table} not found (write it with deepauc pseudo)"
        )
    rec_path = record_path(table)
    if not rec_path.is_file():
        raise _stale(table, f"no record {rec_path.name} beside it, so its source is unknown")
    try:
        record = json.loads(rec_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _stale(table, f"{rec_path.name} beside it is not a valid record") from None
    inputs = record.get("inputs") if isinstance(record, dict) else None
    if not isinstance(inputs, dict) or not inputs:
        raise _stale(table, f"{rec_path.name} beside it is not a valid record")
    if record.get("table") != short_sha(table):
        raise _stale(table, f"edited after {rec_path.name} was written")
    preds = Path(str(record.get("preds")))
    for name, sha in inputs.items():
        if not (preds / name).is_file() or short_sha(preds / name) != sha:
            raise _stale(table, f"made from {preds / name}, which changed or is gone since")
    folds = folds_of_table(cfg.data.train_csv)
    if record.get("folds") != folds:
        raise ValueError(
            f"{table}: made from {preds}, predicted under another fold assignment than "
            f"{cfg.data.train_csv} ({record.get('folds')} vs {folds}): fold k's labels would "
            "carry fold k's validation labels; predict and pseudo-label again under these folds"
        )
    if cfg.name in record.get("runs", []):
        raise ValueError(
            f"{table}: made from {preds}, the predictions of run {cfg.name} itself; a run "
            "learns pseudo-labels only from another run's (e.g. its previous stage's) predictions"
        )
    return record


def pseudo_rows(cfg: ExperimentConfig, fold: int) -> pd.DataFrame:
    """image_name and target of the test images fold ``fold`` trains on as extra rows.

    They are the rows of the table's ``fold<k>`` column holding a label; each must be a
    test image (``data.test_csv``), no training-table image, and cached at ``data.image_size``.
    """
    path = str(cfg.data.pseudo_csv)
    check_pseudo_record(cfg)
    table = read_pseudo_table(path)
    col = f"fold{fold}"
    if col not in table:
        raise ValueError(f"{path}: no column {col}: its predictions had no model for fold {fold}")
    rows = table.loc[table[col].notna(), ["image_name", col]].rename(columns={col: "target"})
    rows = rows.astype({"target": int})  # index kept: errors name the table's lines
    test_names = set(read_test_csv(cfg.data.test_csv, check_metadata=False)["image_name"])
    outside = ~rows["image_name"].isin(test_names).to_numpy()
    if outside.any():
        where = describe_rows(rows, outside)
        raise ValueError(f"{path}: not images of {cfg.data.test_csv}: {where}")
    train_names = set(read_folds_table(cfg.data.train_csv, ["image_name"])["image_name"])
    shared = rows["image_name"].isin(train_names).to_numpy()
    if shared.any():
        where = describe_rows(rows, shared)
        raise ValueError(f"{path}: images of the training table {cfg.data.train_csv}: {where}")
    check_cached(list(rows["image_name"]), cfg.data.cache_dir, cfg.data.image_size, path)
    return rows.reset_index(drop=True)


def _pairs_hash(rows: pd.DataFrame) -> str:
    lines = sorted(f"{n}\t{t}\n" for n, t in zip(rows["image_name"], rows["target"]))
    return hashlib.sha256("".join(lines).encode()).hexdigest()[:16]


def with_pseudo(cfg: ExperimentConfig, fold: int, record: dict) -> dict:
    """``record`` (the training record) plus, with ``data.pseudo_csv``, ``pseudo``: fold
    ``fold``'s pseudo rows (count, positives, their labels' and cached images' content), so a
    model trained on other pseudo rows is refused, never reused."""
    if cfg.data.pseudo_csv is None:
        return record
    rows = pseudo_rows(cfg, fold)
    images = cache_fingerprint(cfg.data.cache_dir, cfg.data.image_size, rows["image_name"])
    entry = {
        "rows": len(rows),
        "positives": int(rows["target"].sum()),
        "labels": _pairs_hash(rows),
        "images": images,
    }
    return {**record, "pseudo": entry}


def add_pseudo_rows(cfg: ExperimentConfig, fold: int, train: pd.DataFrame) -> pd.DataFrame:
    """``train`` with fold ``fold``'s pseudo rows appended (unchanged without data.pseudo_csv);
    the validation rows are never touched."""
    if cfg.data.pseudo_csv is None:
        return train
    rows = pseudo_rows(cfg, fold)
    log.info(
        "fold %d: %d pseudo-labelled test rows (%d positive) from %s",
        *(fold, len(rows), int(np.sum(rows["target"])), cfg.data.pseudo_csv),
    )
    if "source" in train:
        rows = rows.assign(source="pseudo")
    return pd.concat([train, rows], ignore_index=True)
