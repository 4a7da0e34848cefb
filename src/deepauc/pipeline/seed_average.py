"""``deepauc average``: one model trained once per seed, its prediction directories averaged row
by row into one (out-of-fold, test and per-fold test predictions): one ensemble member whose
variance over seeds is averaged away. The seeds' probabilities share a scale, so the mean is
taken as is."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from deepauc.pipeline.pred_files import (
    align_to,
    fold_columns,
    read_oofs_same_folds,
    read_test,
    read_test_folds,
    stack_oof_preds,
    stack_test_preds,
    write_pred_dir,
)


def average_oof(pred_dirs: list[str]) -> tuple[pd.DataFrame, dict | None]:
    """The mean OOF prediction per row (rows in the first directory's order) and the
    provenance to record; the directories must hold the same rows, labels and folds."""
    oofs, provenance = read_oofs_same_folds(pred_dirs)
    out, preds = stack_oof_preds(oofs, pred_dirs)
    out["pred"] = np.mean(preds, axis=0)
    return out, provenance


def average_test(pred_dirs: list[str]) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The mean test prediction and, when every directory has ``test_folds.csv`` with the
    same fold columns, the mean per fold column (else None)."""
    tests = [read_test(d) for d in pred_dirs]
    first, first_name = tests[0], f"{Path(pred_dirs[0]) / 'test.csv'}"
    test = first[["image_name"]].copy()
    test["pred"] = np.mean(stack_test_preds(first, first_name, tests, pred_dirs), axis=0)
    per_fold = [read_test_folds(d) for d in pred_dirs]
    if any(f is None for f in per_fold):
        return test, None
    columns = fold_columns(per_fold[0])
    if any(fold_columns(f) != columns for f in per_fold):
        return test, None
    folds = test[["image_name"]].copy()
    names = [f"{Path(d) / 'test_folds.csv'}" for d in pred_dirs]
    frames = [align_to(test, f, first_name, n) for f, n in zip(per_fold, names)]
    for c in columns:
        folds[c] = np.mean([f[c].to_numpy() for f in frames], axis=0)
    return test, folds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="the averaged prediction directory")
    parser.add_argument(
        "--preds", nargs="+", required=True, help="one prediction directory per seed"
    )


def run(args: argparse.Namespace) -> int:
    if len(args.preds) < 2:
        raise ValueError(f"--preds: {len(args.preds)} directory given; average needs two or more")
    if str(Path(args.out)) in {str(Path(d)) for d in args.preds}:
        raise ValueError(f"--out {args.out} is also one of --preds")
    oof, provenance = average_oof(args.preds)
    test, test_folds = average_test(args.preds)
    write_pred_dir(args.out, oof, test, test_folds, provenance)
    print(f"wrote {args.out}: the mean of {len(args.preds)} prediction directories")
    return 0
