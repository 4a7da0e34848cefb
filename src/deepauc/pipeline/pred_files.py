"""Prediction directories (``oof.csv``, ``test.csv``, ``test_folds.csv``, ``provenance.json``):
the checked readers and the writer every stage after training shares (docs/pipeline.md), and
the OOF helpers they share: scores, alignment by image_name, the probability or rank scale."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from deepauc.data.tables import check_targets, check_unique_names, describe_rows, read_csv_table
from deepauc.io import write_csv
from deepauc.metrics import average_ranks, roc_auc
from deepauc.pipeline.provenance import (
    PROVENANCE_FILE,
    common_folds,
    read_pred_provenance,
    write_pred_provenance,
)

OOF_COLUMNS = ["image_name", "fold", "source", "target", "pred"]
TEST_PRED_COLUMNS = ["image_name", "pred"]
COMPETITION = "competition"


def _numeric_column(df: pd.DataFrame, column: str, name: str) -> np.ndarray:
    """``df[column]`` as float64; a missing or non-numeric cell raises ValueError naming it."""
    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna().to_numpy()
    if bad.any():
        raise ValueError(
            f"{name}: column {column!r} is empty or not a number at {describe_rows(df, bad, column)}"
        )
    return values.to_numpy(dtype=np.float64)


def _check_finite_unit(df: pd.DataFrame, column: str, name: str) -> np.ndarray:
    """A prediction column as float64, required finite (probabilities and ranks are)."""
    values = _numeric_column(df, column, name)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"{name}: column {column!r} is not finite at {describe_rows(df, bad, column)}"
        )
    return values


def read_oof(pred_dir: str | os.PathLike) -> pd.DataFrame:
    """Read and check ``<pred_dir>/oof.csv``.

    Checks: the five columns, unique image_name, ``fold`` an integer >= 0, ``target``
    0/1, ``source`` non-empty, ``pred`` a finite number. Returns the frame with
    ``fold``/``target`` as int and ``pred`` as float (extra columns are kept).
    """
    path = Path(pred_dir) / "oof.csv"
    name = str(path)
    df = read_csv_table(path, OOF_COLUMNS)
    check_unique_names(df, name)
    fold = _numeric_column(df, "fold", name)
    bad = (fold != np.round(fold)) | (fold < 0)
    if bad.any():
        raise ValueError(
            f"{name}: column 'fold' must be an integer >= 0 at {describe_rows(df, bad, 'fold')}"
        )
    df["fold"] = fold.astype(int)
    df["target"] = check_targets(df, name)
    src = df["source"]
    no_src = (src.isna() | (src.astype(str).str.strip() == "")).to_numpy()
    if no_src.any():
        raise ValueError(f"{name}: empty 'source' at {describe_rows(df, no_src)}")
    df["pred"] = _check_finite_unit(df, "pred", name)
    return df


def read_test(pred_dir: str | os.PathLike) -> pd.DataFrame:
    """Read and check ``<pred_dir>/test.csv`` (image_name unique, pred finite)."""
    path = Path(pred_dir) / "test.csv"
    df = read_csv_table(path, TEST_PRED_COLUMNS)
    check_unique_names(df, str(path))
    df["pred"] = _check_finite_unit(df, "pred", str(path))
    return df


def fold_columns(df: pd.DataFrame) -> list[str]:
    """The ``fold<k>`` columns of a test_folds frame, in fold order."""
    cols = [c for c in df.columns if c.startswith("fold") and c[4:].isdigit()]
    return sorted(cols, key=lambda c: int(c[4:]))


def read_test_folds(pred_dir: str | os.PathLike) -> pd.DataFrame | None:
    """Read ``<pred_dir>/test_folds.csv`` if it exists (else None); fold columns as float."""
    path = Path(pred_dir) / "test_folds.csv"
    if not path.is_file():
        return None
    df = read_csv_table(path, ["image_name"])
    check_unique_names(df, str(path))
    cols = fold_columns(df)
    if not cols:
        raise ValueError(f"{path}: no fold<k> columns; found {list(df.columns)}")
    for col in cols:
        df[col] = _check_finite_unit(df, col, str(path))
    return df[["image_name", *cols]]


def write_pred_dir(
    out_dir: str | os.PathLike,
    oof: pd.DataFrame,
    test: pd.DataFrame | None,
    test_folds: pd.DataFrame | None = None,
    provenance: dict | None = None,
) -> Path:
    """Write ``test_folds.csv``, ``test.csv`` (when given), ``provenance.json`` and ``oof.csv``.

    Each file is written atomically, only the format's columns, in the format's order.
    ``oof.csv`` is written last because it is the Makefile's target for a prediction
    directory: its presence means the directory is complete. ``provenance`` (see
    :mod:`deepauc.pipeline.provenance`; it must hold ``folds``) is written beside it. A stale
    ``test_folds.csv`` or ``provenance.json`` from an earlier run is removed when none is
    given, so the directory never mixes two runs.
    """
    out = Path(out_dir)
    missing = [c for c in OOF_COLUMNS if c not in oof.columns]
    if missing:
        raise ValueError(f"{out}/oof.csv: internal error, missing columns {missing}")
    stale = out / "test_folds.csv"
    if test_folds is not None:
        write_csv(test_folds[["image_name", *fold_columns(test_folds)]], stale)
    elif stale.exists():
        stale.unlink()
    if test is not None:
        write_csv(test[TEST_PRED_COLUMNS], out / "test.csv")
    if provenance is not None:
        write_pred_provenance(out, provenance, oof)
    else:
        (out / PROVENANCE_FILE).unlink(missing_ok=True)
    write_csv(oof[OOF_COLUMNS], out / "oof.csv")
    return out


def read_oofs_same_folds(
    pred_dirs: Sequence[str | os.PathLike],
) -> tuple[list[pd.DataFrame], dict | None]:
    """Read the ``oof.csv`` of every directory; refuse a mix of fold assignments.

    Returns the frames and the provenance to record for an output made from them
    (``folds`` and the inputs; None when no input has a record).
    """
    oofs = [read_oof(d) for d in pred_dirs]
    return oofs, inputs_provenance(pred_dirs, oofs)


def inputs_provenance(
    pred_dirs: Sequence[str | os.PathLike], oofs: Sequence[pd.DataFrame]
) -> dict | None:
    """The provenance of an output made from ``pred_dirs`` (whose OOF frames are ``oofs``):
    their common ``folds`` and the inputs; None when no input has a record. A mix of fold
    assignments raises."""
    records = {str(d): read_pred_provenance(d, oof) for d, oof in zip(pred_dirs, oofs)}
    folds = common_folds(records)
    if folds is None:
        return None
    return {"folds": folds, "inputs": [str(d) for d in pred_dirs]}


def model_names(pred_dirs: Sequence[str | os.PathLike]) -> list[str]:
    """Display names of prediction dirs: the directory name, or the full path if two clash."""
    names = [Path(d).name or str(d) for d in pred_dirs]
    if len(set(names)) != len(names):
        names = [str(d) for d in pred_dirs]
    return names


# --------------------------------------------------------------------------- OOF helpers


def score_oof(oof: pd.DataFrame) -> dict[str, float]:
    """AUC per fold and pooled OOF AUC on competition rows, and AUC on external rows.

    Keys: ``fold <k>`` for every fold with competition rows, ``OOF``, ``external``
    (NaN when the OOF file has no external rows or they hold one class). A fold
    whose competition rows hold one class scores NaN.
    """
    comp = oof[oof["source"] == COMPETITION]
    ext = oof[oof["source"] != COMPETITION]
    scores: dict[str, float] = {}
    for k in sorted(comp["fold"].unique()):
        rows = comp[comp["fold"] == k]
        scores[f"fold {k}"] = roc_auc(
            rows["target"].to_numpy(), rows["pred"].to_numpy(), undefined="nan"
        )
    scores["OOF"] = roc_auc(comp["target"].to_numpy(), comp["pred"].to_numpy(), undefined="nan")
    scores["external"] = roc_auc(ext["target"].to_numpy(), ext["pred"].to_numpy(), undefined="nan")
    return scores


def scaled_ranks(x) -> np.ndarray:
    """Average ranks of ``x`` (ties share their mean rank) mapped linearly onto [0, 1].

    The smallest value maps to 0 and the largest to 1; a single value maps to 0.5.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x.copy()
    if x.size == 1:
        return np.full(1, 0.5)
    return (average_ranks(x) - 1.0) / (x.size - 1.0)


def fold_ranks(pred, folds) -> np.ndarray:
    """Predictions as ranks scaled to [0, 1] within each fold, in row order: each fold's model
    scores on its own scale, ranks put the K models on one."""
    pred, folds = np.asarray(pred, dtype=np.float64), np.asarray(folds)
    ranked = np.empty_like(pred)
    for k in np.unique(folds):
        inside = folds == k
        ranked[inside] = scaled_ranks(pred[inside])
    return ranked


def nested_by_fold(y, folds, choose, apply, stage: str, what: str) -> dict:
    """A nested (held-out fold) estimate of a choice made on OOF rows: for every fold k,
    ``choose(rows)`` on the other folds' rows (a boolean mask), ``apply(choice, rows)`` to
    fold k's rows.

    Returns ``choices`` (fold -> choice), ``fold_auc`` (fold -> AUC of its rows, NaN when
    they hold one class), ``pred`` (every row scored with its fold's choice) and ``auc`` (the
    pooled AUC of ``pred``: the estimate to quote). ``stage`` and ``what`` name the error
    when the other folds hold one class.
    """
    y, folds = np.asarray(y), np.asarray(folds)
    pred = np.empty(len(y), dtype=np.float64)
    choices, fold_auc = {}, {}
    for k in np.unique(folds):
        inside, outside = folds == k, folds != k
        if outside.sum() == 0 or y[outside].min() == y[outside].max():
            raise ValueError(
                f"{stage}: nested estimate: the folds other than {k} hold one class; "
                f"cannot choose {what}"
            )
        choices[int(k)] = choose(outside)
        pred[inside] = apply(choices[int(k)], inside)
        fold_auc[int(k)] = roc_auc(y[inside], pred[inside], undefined="nan")
    return {"choices": choices, "fold_auc": fold_auc, "pred": pred, "auc": roc_auc(y, pred)}


def to_scale(x, method: str) -> np.ndarray:
    """Predictions on the blending scale: unchanged for ``prob``, scaled ranks for ``rank``."""
    if method == "prob":
        return np.asarray(x, dtype=np.float64)
    if method == "rank":
        return scaled_ranks(x)
    raise ValueError(f"blend: unknown method {method!r}; expected 'prob' or 'rank'")


def _name_diff(a: pd.Series, b: pd.Series, a_name: str, b_name: str, limit: int = 5) -> str:
    """The image names only in ``a`` and only in ``b``, each side named by its file."""
    only_a = sorted(set(a) - set(b))
    only_b = sorted(set(b) - set(a))
    parts = []
    if only_a:
        parts.append(f"{len(only_a)} only in {a_name} (e.g. {only_a[:limit]})")
    if only_b:
        parts.append(f"{len(only_b)} only in {b_name} (e.g. {only_b[:limit]})")
    return "; ".join(parts)


def align_to(
    ref: pd.DataFrame, other: pd.DataFrame, ref_name: str, other_name: str
) -> pd.DataFrame:
    """``other`` reordered to ``ref``'s image_name order; error unless the name sets agree."""
    if len(ref) != len(other) or set(ref["image_name"]) != set(other["image_name"]):
        diff = _name_diff(ref["image_name"], other["image_name"], ref_name, other_name)
        raise ValueError(
            f"{other_name} and {ref_name} hold different image_name sets "
            f"({len(other)} vs {len(ref)} rows): {diff}"
        )
    return other.set_index("image_name").loc[ref["image_name"]].reset_index()


def align_oof(
    ref: pd.DataFrame, other: pd.DataFrame, ref_name: str, other_name: str
) -> pd.DataFrame:
    """Align two OOF frames by image_name and check that target and fold agree row by row."""
    aligned = align_to(ref, other, ref_name, other_name)
    for column in ("target", "fold"):
        bad = ref[column].to_numpy() != aligned[column].to_numpy()
        if bad.any():
            names = ref["image_name"].to_numpy()[bad][:5].tolist()
            why = {
                "target": "a label changed after one of them was predicted; rerun the stale "
                "one's train and predict, or meta (make redoes them from the current table)",
                "fold": "they were predicted under different fold assignments; rerun the "
                "stale one's train and predict, or meta",
            }[column]
            raise ValueError(
                f"{other_name} and {ref_name} disagree on column {column!r} for "
                f"{int(bad.sum())} image(s), e.g. {names}: {why}"
            )
    return aligned


def stack_oof_preds(
    oofs: Sequence[pd.DataFrame], pred_dirs: Sequence[str | os.PathLike]
) -> tuple[pd.DataFrame, np.ndarray]:
    """The first OOF frame's key columns and every frame's ``pred`` in its row order.

    ``oofs[i]`` is the ``oof.csv`` of ``pred_dirs[i]``; each is aligned to the first by
    image_name with target and fold checked (:func:`align_oof`). Returns (image_name, fold,
    source, target of the first frame; an array of shape (len(oofs), rows)).
    """
    first, first_name = oofs[0], f"{Path(pred_dirs[0]) / 'oof.csv'}"
    preds = [first["pred"].to_numpy()]
    for d, other in zip(pred_dirs[1:], oofs[1:]):
        preds.append(
            align_oof(first, other, first_name, f"{Path(d) / 'oof.csv'}")["pred"].to_numpy()
        )
    return first[["image_name", "fold", "source", "target"]].copy(), np.stack(preds)


def stack_test_preds(
    ref: pd.DataFrame,
    ref_name: str,
    tests: Sequence[pd.DataFrame],
    pred_dirs: Sequence[str | os.PathLike],
) -> np.ndarray:
    """Every ``test.csv`` frame's ``pred`` in ``ref``'s image_name order, one row per frame;
    a frame holding other names than ``ref`` raises (:func:`align_to`)."""
    return np.stack(
        [
            align_to(ref, test, ref_name, f"{Path(d) / 'test.csv'}")["pred"].to_numpy()
            for d, test in zip(pred_dirs, tests)
        ]
    )
