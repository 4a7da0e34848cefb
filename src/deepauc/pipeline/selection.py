"""Choosing ensemble members on OOF rows: greedy forward selection with replacement (weights =
selection counts) and its nested held-out-fold estimate, Spearman rank correlations between
members, drop-one AUCs and the per-fold-rank OOF AUC."""

from __future__ import annotations

import numpy as np

from deepauc.metrics import average_ranks, roc_auc
from deepauc.pipeline.pred_files import fold_ranks, nested_by_fold

# an AUC must beat the best so far by more than float noise to count as a gain
_GAIN = 1e-12
# averages are rounded to this many decimals: rows tied in exact arithmetic (common when
# averaging ranks) stay tied whatever order the sum was taken in, so an AUC does not move
# with rounding noise
DECIMALS = 12


def weighted_mean(columns, weights) -> np.ndarray:
    """``weights @ columns`` with the weights scaled to sum 1, rounded to ``DECIMALS``."""
    w = np.asarray(weights, dtype=np.float64)
    return np.round((w / w.sum()) @ np.asarray(columns, dtype=np.float64), DECIMALS)


def greedy_select(y, columns, max_steps: int) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """Forward selection with replacement on AUC: start empty, add the best candidate each step.

    ``columns`` holds one prediction vector per candidate (rows = candidates), already on the
    averaging scale. Each step adds (again, if it is already in) the candidate whose addition
    gives the highest AUC of the equal-weight mean of everything added; it stops when no
    candidate raises the AUC or after ``max_steps`` additions. Ties go to the earlier candidate.
    Returns the selection count of every candidate (the weights, before normalising) and the
    path: (candidate index, AUC after adding it) per step.
    """
    y = np.asarray(y)
    cols = np.asarray(columns, dtype=np.float64)
    if y.size == 0 or y.min() == y.max():
        raise ValueError(f"greedy selection: {y.size} row(s) of one class; cannot choose members")
    counts = np.zeros(len(cols), dtype=int)
    best = -np.inf
    path: list[tuple[int, float]] = []
    for _ in range(max_steps):
        trials = counts + np.eye(len(cols), dtype=int)  # row j: the counts with j added once more
        aucs = np.array([roc_auc(y, weighted_mean(cols, t)) for t in trials])
        pick = int(np.flatnonzero(aucs >= aucs.max() - _GAIN)[0])
        if aucs[pick] <= best + _GAIN:
            break
        counts[pick] += 1
        best = float(aucs[pick])
        path.append((pick, best))
    return counts, path


def nested_greedy(y, folds, columns, max_steps: int) -> dict:
    """Nested estimate of greedy selection: each fold's rows scored with members chosen on the
    other folds' rows only.

    Returns ``counts`` (fold -> selection counts), ``fold_auc`` (fold -> AUC of its rows, NaN
    when they hold one class), ``pred`` (every row averaged with its fold's selection) and
    ``auc`` (pooled AUC of ``pred``: the held-out estimate to quote).
    """
    y = np.asarray(y)
    cols = np.asarray(columns, dtype=np.float64)
    out = nested_by_fold(
        y,
        folds,
        lambda rows: greedy_select(y[rows], cols[:, rows], max_steps)[0],
        lambda chosen, rows: weighted_mean(cols[:, rows], chosen),
        "ensemble",
        "members",
    )
    out["counts"] = out.pop("choices")
    return out


def spearman_matrix(columns) -> np.ndarray:
    """Spearman rank correlation of every pair of prediction vectors (ties share their mean
    rank); NaN for a pair with a constant vector."""
    ranks = np.array([average_ranks(np.asarray(c, dtype=np.float64)) for c in columns])
    centred = ranks - ranks.mean(axis=1, keepdims=True)
    norms = np.sqrt((centred**2).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = (centred @ centred.T) / np.outer(norms, norms)
    np.fill_diagonal(corr, 1.0)  # exactly, not 1 minus rounding
    corr[(norms == 0)[:, None] | (norms == 0)[None, :]] = np.nan
    return np.clip(corr, -1.0, 1.0)


def drop_one_aucs(y, columns, weights) -> list[float]:
    """AUC of the weighted mean without each member in turn, the others' weights renormalised;
    NaN where nothing is left."""
    w = np.asarray(weights, dtype=np.float64)
    out = []
    for i in range(len(w)):
        rest = w.copy()
        rest[i] = 0.0
        if rest.sum() <= 0:
            out.append(float("nan"))
            continue
        out.append(roc_auc(y, weighted_mean(columns, rest), undefined="nan"))
    return out


def fold_rank_auc(y, folds, pred) -> float:
    """Pooled AUC after each fold's predictions become ranks scaled to [0, 1] within that fold
    (:func:`~deepauc.pipeline.pred_files.fold_ranks`)."""
    return roc_auc(np.asarray(y), fold_ranks(pred, folds), undefined="nan")
