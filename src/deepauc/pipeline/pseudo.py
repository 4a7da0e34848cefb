"""``deepauc pseudo``: a pseudo-label table of the test set from one prediction directory, fold
k's labels chosen by rank from fold k's model's test predictions alone, with the record of the
predictions it came from (docs/pipeline.md, "Pseudo-labelling")."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from deepauc.io import write_text
from deepauc.pipeline.pred_files import fold_columns, read_oof, read_test_folds
from deepauc.pipeline.provenance import PROVENANCE_FILE, package_version, read_pred_provenance
from deepauc.pipeline.pseudo_rows import record_path, short_sha

# Defaults (docs/pipeline.md): the top half-percent of each fold model's test ranking is
# labelled 1, well inside the ~1.8 % of positives the competition's test set is expected to
# hold, so even a fair model's labelled positives are mostly right; the bottom half is
# labelled 0, where a model of CV AUC ~0.9 ranks very few positives. Both together keep the
# pseudo rows' positive share (~1 %) near the training rows'.
POS_TOP = 0.005
NEG_BOTTOM = 0.5
# the records a preds dir carries when its per-fold test columns mix the folds' OOF labels
MIXED_RECORDS = ("blend", "ensemble")
# float slack for F·n: 0.29 * 100 is 28.999... in floating point, and means 29 rows
_COUNT_SLACK = 1e-9


def check_fractions(pos_top: float, neg_bottom: float) -> None:
    for flag, value in (("--pos-top", pos_top), ("--neg-bottom", neg_bottom)):
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"pseudo: {flag} must lie in [0, 1], got {value}")
    if pos_top + neg_bottom > 1.0:
        raise ValueError(
            f"pseudo: --pos-top {pos_top} + --neg-bottom {neg_bottom} exceed 1: "
            "a row would be labelled both ways"
        )


def select_by_rank(scores, pos_top: float, neg_bottom: float) -> np.ndarray:
    """1.0 for the top ``pos_top`` share of ``scores``, 0.0 for the bottom ``neg_bottom`` share,
    NaN for the rest.

    With n scores, k = floor(F·n) rows per side. A row is labelled 1 when at most k_pos rows
    score >= its score, and 0 when at most k_neg rows score <= it: a group of tied scores that
    straddles a cut is left unlabelled whole (the model does not tell those rows apart), so a
    side may get fewer than k rows, never more. The sides never meet while pos_top + neg_bottom
    <= 1 (a row of either side would need both counts to sum to n or less, yet they sum to n +
    its tied rows).
    """
    check_fractions(pos_top, neg_bottom)
    s = np.asarray(scores, dtype=np.float64)
    n = s.size
    k_pos = math.floor(pos_top * n + _COUNT_SLACK)
    k_neg = math.floor(neg_bottom * n + _COUNT_SLACK)
    ordered = np.sort(s)
    at_or_above = n - np.searchsorted(ordered, s, side="left")
    at_or_below = np.searchsorted(ordered, s, side="right")
    labels = np.full(n, np.nan)
    labels[at_or_below <= k_neg] = 0.0
    labels[at_or_above <= k_pos] = 1.0
    return labels


def source_runs(pred_dir: str | os.PathLike, record: dict, depth: int = 0) -> set[str]:
    """The run names behind a prediction directory: its own name (less ``-notta``), the model
    dirs its record names and, for an averaged directory, those of its inputs' records."""
    names = {Path(pred_dir).name.removesuffix("-notta")}
    for model in (record.get("models") or {}).values():
        names.add(Path(str(model.get("path", ""))).parent.parent.name)
    for inner in record.get("inputs") or []:
        path = Path(inner) / PROVENANCE_FILE
        if depth < 4 and path.is_file():
            names |= source_runs(inner, json.loads(path.read_text()), depth + 1)
    return {n for n in names if n}


def read_source(pred_dir: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """The per-fold test predictions of ``pred_dir`` and its checked record; a directory whose
    columns are not each one fold model's alone is refused."""
    d = Path(pred_dir)
    record = read_pred_provenance(d, read_oof(d))
    if record is None:
        raise ValueError(
            f"{d / PROVENANCE_FILE}: missing; without it the fold assignment of {d}'s models "
            "cannot be checked against a run's (rerun the stage that wrote it)"
        )
    mixed = [key for key in MIXED_RECORDS if key in record]
    if mixed:
        raise ValueError(
            f"{d}: a {mixed[0]} output; its fold columns mix weights chosen on every fold's OOF "
            "rows, so pseudo-labels come from a predict, meta or average directory"
        )
    folds = read_test_folds(d)
    if folds is None:
        raise ValueError(
            f"{d / 'test_folds.csv'}: missing; pseudo-labels for fold k need fold k's model's own "
            "test predictions, never the fold mean test.csv"
        )
    return folds, record


def pseudo_table(folds: pd.DataFrame, pos_top: float, neg_bottom: float) -> pd.DataFrame:
    """image_name and, per fold column, 1, 0 or empty (<NA>) chosen from that column alone."""
    out = folds[["image_name"]].copy()
    for col in fold_columns(folds):
        labels = select_by_rank(folds[col].to_numpy(), pos_top, neg_bottom)
        out[col] = pd.array(np.where(np.isnan(labels), 0, labels).astype(int), dtype="Int64")
        out.loc[np.isnan(labels), col] = pd.NA
    return out


def write_pseudo(
    pred_dir: str | os.PathLike, out: str | os.PathLike, pos_top: float, neg_bottom: float
) -> dict:
    """Write the table at ``out`` and its record beside it (record first, the table, make's
    target, last); returns the record."""
    check_fractions(pos_top, neg_bottom)
    d = Path(pred_dir)
    folds, source = read_source(d)
    table = pseudo_table(folds, pos_top, neg_bottom)
    text = table.to_csv(index=False)
    counts = {
        col: {"1": int((table[col] == 1).sum()), "0": int((table[col] == 0).sum())}
        for col in fold_columns(table)
    }
    record = {
        "preds": str(d),
        "folds": source["folds"],
        "runs": sorted(source_runs(d, source)),
        "inputs": {name: short_sha(d / name) for name in ("test_folds.csv", PROVENANCE_FILE)},
        # what made the predictions, for whoever reads the record (the hashes above are checked)
        "source": {k: source[k] for k in ("config", "models", "inputs") if k in source},
        "pos_top": pos_top,
        "neg_bottom": neg_bottom,
        "labelled": counts,
        "table": _text_sha(text),
        "version": package_version(),
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", record_path(out))
    write_text(text, out)
    return record


def _text_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preds", required=True, help="prediction dir with test_folds.csv")
    parser.add_argument("--out", required=True, help="the pseudo-label table (CSV)")
    parser.add_argument(
        "--pos-top",
        type=float,
        default=POS_TOP,
        help=f"share of each fold column's top ranks labelled 1 (default {POS_TOP})",
    )
    parser.add_argument(
        "--neg-bottom",
        type=float,
        default=NEG_BOTTOM,
        help=f"share of each fold column's bottom ranks labelled 0 (default {NEG_BOTTOM})",
    )


def run(args: argparse.Namespace) -> int:
    record = write_pseudo(args.preds, args.out, args.pos_top, args.neg_bottom)
    per_fold = ", ".join(f"{c}: {n['1']} pos / {n['0']} neg" for c, n in record["labelled"].items())
    print(f"wrote {args.out} from {args.preds} ({per_fold})")
    return 0
