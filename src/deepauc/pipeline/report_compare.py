"""Paired comparison of two prediction directories on the same competition OOF rows: the AUC
difference B - A with its 95% interval and p-value by DeLong and by a bootstrap over patients."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from deepauc.data.tables import check_unique_names
from deepauc.metrics import roc_auc
from deepauc.pipeline.pred_files import COMPETITION, align_oof
from deepauc.pipeline.report_groups import folds_columns
from deepauc.stats import Comparison, bootstrap_groups, delong

N_BOOT = 2000  # patient resamples of the bootstrap
BOOT_SEED = 0  # its generator's seed: the report's intervals are reproducible
LEVEL = 0.95


def pair_index(pair: Sequence[str], pred_dirs: Sequence[str | os.PathLike]) -> tuple[int, int]:
    """Positions in ``pred_dirs`` of a ``--compare A B`` pair, matched as given or as paths."""
    resolved = [Path(d).resolve() for d in pred_dirs]
    found = []
    for d in pair:
        hits = [i for i, p in enumerate(pred_dirs) if str(p) == str(d)]
        hits = hits or [i for i, p in enumerate(resolved) if p == Path(d).resolve()]
        if not hits:
            raise ValueError(
                f"report: --compare {d} is not among --preds ({', '.join(map(str, pred_dirs))})"
            )
        found.append(hits[0])
    if found[0] == found[1]:
        raise ValueError(f"report: --compare {pair[0]} {pair[1]} names one directory twice")
    return found[0], found[1]


def paired_rows(
    oof_a: pd.DataFrame, oof_b: pd.DataFrame, dir_a: str, dir_b: str
) -> tuple[pd.DataFrame, np.ndarray]:
    """A's competition OOF rows and B's predictions on them, in A's order.

    Refused (one line) unless both hold the same competition image_name set with the
    same fold and target per image.
    """
    comp_a = oof_a[oof_a["source"] == COMPETITION].reset_index(drop=True)
    comp_b = oof_b[oof_b["source"] == COMPETITION].reset_index(drop=True)
    for frame, d in ((comp_a, dir_a), (comp_b, dir_b)):
        if frame.empty:
            raise ValueError(f"report: {d}/oof.csv has no competition rows to compare")
    aligned = align_oof(
        comp_a, comp_b, f"{dir_a}/oof.csv (competition rows)", f"{dir_b}/oof.csv (competition rows)"
    )
    return comp_a, aligned["pred"].to_numpy()


def patients_of(
    names: pd.Series, folds_csv: str | os.PathLike, table: pd.DataFrame | None = None
) -> np.ndarray:
    """Each image's ``patient_id`` from the folds table (``table`` when the caller has read
    it); an image without one is its own group."""
    table = folds_columns(folds_csv, table, ["image_name", "patient_id"])
    check_unique_names(table, str(folds_csv))
    position = pd.Index(table["image_name"]).get_indexer(names)
    if (position < 0).any():
        missing = names.to_numpy()[position < 0]
        raise ValueError(
            f"{folds_csv} lacks {len(missing)} image(s) of the compared OOF rows "
            f"(e.g. {missing[0]}): pass the folds table the predictions were made from"
        )
    pid = table["patient_id"].to_numpy()[position]
    empty = pd.isna(pid) | (pd.Series(pid).astype(str).str.strip() == "").to_numpy()
    return np.where(empty, "image:" + names.to_numpy().astype(str), pid.astype(str))


def compare_pair(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, patients: np.ndarray
) -> list[Comparison]:
    """DeLong and the patient bootstrap (``N_BOOT`` resamples, seed ``BOOT_SEED``) of B - A."""
    return [
        delong(y, a, b, level=LEVEL),
        bootstrap_groups(y, a, b, patients, n_boot=N_BOOT, seed=BOOT_SEED, level=LEVEL),
    ]


def comparison_table(
    pairs: Sequence[Sequence[str]],
    pred_dirs: Sequence[str | os.PathLike],
    names: Sequence[str],
    oofs: Sequence[pd.DataFrame],
    folds_csv: str | os.PathLike | None,
    table: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per pair and method: A, B, rows, AUCs, B - A, its 95% interval [low, high], p.

    ``table``: the folds table at ``folds_csv`` when the caller has read it."""
    if pairs and folds_csv is None:
        raise ValueError(
            "report: --compare needs --folds FOLDS_CSV (its patient_id column groups the "
            "bootstrap's resamples)"
        )
    rows = []
    for pair in pairs:
        i, j = pair_index(pair, pred_dirs)
        comp, b = paired_rows(oofs[i], oofs[j], str(pred_dirs[i]), str(pred_dirs[j]))
        assert folds_csv is not None
        patients = patients_of(comp["image_name"], folds_csv, table)
        y, a = comp["target"].to_numpy(), comp["pred"].to_numpy()
        for result in compare_pair(y, a, b, patients):
            rows.append(
                {
                    "A": names[i],
                    "B": names[j],
                    "method": result.method,
                    "rows": len(comp),
                    "AUC A": roc_auc(y, a),
                    "AUC B": roc_auc(y, b),
                    "B − A": result.difference,
                    "low": result.low,
                    "high": result.high,
                    "p": result.p_value,
                }
            )
    return pd.DataFrame(rows)


def display_comparisons(table: pd.DataFrame) -> pd.DataFrame:
    """The comparisons as the report prints them: signed differences, the interval in one cell."""
    shown = table.drop(columns=["low", "high", "p"])
    shown["B − A"] = [f"{d:+.4f}" for d in table["B − A"]]
    shown["95% CI"] = [f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(table["low"], table["high"])]
    shown["p"] = [_p_text(p, method) for p, method in zip(table["p"], table["method"])]
    return shown


def _p_text(p: float, method: str) -> str:
    """A p-value to its resolution: the bootstrap's is 2 / N_BOOT (no resample on one side)."""
    floor = 2.0 / N_BOOT if method.startswith("bootstrap") else 1e-4
    return f"<{floor:g}" if p < floor else f"{p:.4f}"
