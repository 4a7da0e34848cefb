"""The training runs behind prediction directories, as the report reads them: each fold's
``log.csv`` and, for a stage-2 run, its stage-1 run's, joined into one epoch timeline."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from deepauc.data.tables import read_csv_table
from deepauc.io import load_torch
from deepauc.pipeline.provenance import PROVENANCE_FILE

# the per-epoch values a stage timeline carries; a, b and α exist only for AUC min-max losses
TIMELINE_VALUES = ["lr", "a", "b", "alpha"]


def read_record(pred_dir: str | os.PathLike) -> dict | None:
    """The ``provenance.json`` of a directory already checked by ``read_oofs_same_folds``."""
    path = Path(pred_dir) / PROVENANCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def model_runs(record: dict) -> dict[int, Path]:
    """Fold -> ``model.pt`` path of a record written by ``predict`` (empty for other stages)."""
    models = record.get("models")
    if not isinstance(models, dict):
        return {}
    return {
        int(fold): Path(entry["path"])
        for fold, entry in models.items()
        if str(fold).isdigit() and isinstance(entry, dict) and "path" in entry
    }


def read_training_log(path: str | os.PathLike) -> pd.DataFrame:
    """``epoch``, ``train_loss`` and ``val_auc`` of a ``log.csv`` as numbers (NaN if unreadable)."""
    log = read_csv_table(path, ["epoch", "train_loss", "val_auc"])
    return log[["epoch", "train_loss", "val_auc"]].apply(pd.to_numeric, errors="coerce")


def training_runs(pred_dirs: Sequence[str | os.PathLike]) -> dict[str, dict[int, pd.DataFrame]]:
    """Run folder -> fold -> ``log.csv`` of the models behind the prediction directories.

    The models are those each directory's ``provenance.json`` names; directories without
    them (meta, blend, ensemble, hand-made) and folds without a ``log.csv`` add nothing.
    A run behind two directories (``<name>`` and ``<name>-notta``) appears once.
    """
    runs: dict[str, dict[int, pd.DataFrame]] = {}
    for d in pred_dirs:
        record = read_record(d) or {}
        for fold, model_path in sorted(model_runs(record).items()):
            log_csv = model_path.parent / "log.csv"
            if log_csv.is_file():
                runs.setdefault(str(model_path.parent.parent), {})[fold] = read_training_log(
                    log_csv
                )
    return runs


def read_stage_log(path: str | os.PathLike) -> pd.DataFrame:
    """``epoch``, ``lr``, ``a``, ``b``, ``alpha`` of a ``log.csv`` as numbers (NaN where absent:
    a CE or focal run logs no a, b, α)."""
    log = read_csv_table(path, ["epoch", "lr"])
    for column in TIMELINE_VALUES:
        if column not in log.columns:
            log[column] = np.nan
    return log[["epoch", *TIMELINE_VALUES]].apply(pd.to_numeric, errors="coerce")


def init_from_of(model_path: Path) -> str | None:
    """The stage-1 run (``model.init_from``) recorded in a ``model.pt``'s config, or None."""
    config = load_torch(model_path).get("config")
    model = config.get("model") if isinstance(config, dict) else None
    init_from = model.get("init_from") if isinstance(model, dict) else None
    return str(init_from) if init_from else None


def _timeline(stage1_log: Path, stage2_log: Path) -> pd.DataFrame:
    """Stage 1's epochs, then stage 2's shifted past stage 1's last; column ``stage`` says which."""
    stage2 = read_stage_log(stage2_log).assign(stage=2)
    if not stage1_log.is_file():
        return stage2  # stage 1 left no log: stage 2 alone, from epoch 1
    stage1 = read_stage_log(stage1_log).assign(stage=1)
    last = stage1["epoch"].max()
    stage2["epoch"] = stage2["epoch"] + (0 if np.isnan(last) else last)
    return pd.concat([stage1, stage2], ignore_index=True)


def stage_timelines(
    pred_dirs: Sequence[str | os.PathLike],
) -> dict[str, tuple[str, dict[int, pd.DataFrame]]]:
    """Stage-2 run folder -> (its stage-1 run, fold -> timeline) for the models behind the dirs.

    A run is stage 2 when its ``model.pt`` config names a ``model.init_from`` run (one
    ``model.pt`` per run is read: every fold shares the config). Each timeline holds
    ``epoch`` (stage 1's 1..E1, then stage 2's E1+1..E1+E2, E1 the last epoch of that
    fold's stage-1 log), ``stage``, ``lr``, ``a``, ``b``, ``alpha``. Folds without a
    stage-2 ``log.csv`` add nothing.
    """
    stage1_of: dict[str, str | None] = {}
    out: dict[str, tuple[str, dict[int, pd.DataFrame]]] = {}
    for d in pred_dirs:
        for fold, model_path in sorted(model_runs(read_record(d) or {}).items()):
            run = str(model_path.parent.parent)
            log_csv = model_path.parent / "log.csv"
            if not log_csv.is_file():
                continue
            if run not in stage1_of:
                stage1_of[run] = init_from_of(model_path) if model_path.is_file() else None
            stage1 = stage1_of[run]
            if stage1 is None:
                continue
            timeline = _timeline(Path(stage1) / f"fold{fold}" / "log.csv", log_csv)
            out.setdefault(run, (stage1, {}))[1][fold] = timeline
    return out
