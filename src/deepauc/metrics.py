"""ROC AUC by the rank-sum (Mann-Whitney) formula with tied scores at their average rank,
equal to scikit-learn's ``roc_auc_score``; one sort per label."""

from __future__ import annotations

import numpy as np

__all__ = ["roc_auc", "average_ranks"]


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, ties sharing their average rank."""
    x = np.asarray(x)
    order = np.argsort(x)  # any order of equal scores gives them the same average rank
    xs = x[order]
    n = xs.size
    # start of each run of equal values in sorted order
    new_run = np.empty(n, dtype=bool)
    new_run[:1] = True
    np.not_equal(xs[1:], xs[:-1], out=new_run[1:])
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], n)
    run_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def _binary_auc(y: np.ndarray, s: np.ndarray, label: str) -> float:
    pos = y == 1
    n_pos = int(pos.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"roc_auc: {label} has only one class ({n_pos} positive, {n_neg} negative); AUC is undefined"
        )
    rank_sum = average_ranks(s)[pos].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_auc(y_true, y_score) -> float:
    """Area under the ROC curve; for 2-D input the mean over label columns.

    Args:
        y_true: 0/1 (or boolean) labels, shape (N,) or (N, K).
        y_score: scores of the same shape; higher means more likely positive.
    Raises:
        ValueError: shapes differ, labels are not 0/1, a score is NaN, or a label
            column has only one class.
    """
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"roc_auc: y_true shape {y.shape} != y_score shape {s.shape}")
    if y.ndim not in (1, 2) or y.shape[0] == 0:
        raise ValueError(f"roc_auc: expected non-empty 1-D or 2-D input, got shape {y.shape}")
    if np.isnan(s).any():
        raise ValueError("roc_auc: y_score contains NaN")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"roc_auc: y_true must be 0/1, got values {np.unique(y)[:5].tolist()}")
    if y.ndim == 1:
        return _binary_auc(y, s, "the label")
    return float(
        np.mean([_binary_auc(y[:, k], s[:, k], f"label column {k}") for k in range(y.shape[1])])
    )
