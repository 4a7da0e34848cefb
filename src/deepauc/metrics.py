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


def _undefined(y: np.ndarray, s: np.ndarray) -> bool:
    """True when no AUC exists: no rows, a non-finite score, or a label column of one class."""
    if y.size == 0 or not np.isfinite(s).all():
        return True
    cols = y.reshape(y.shape[0], -1)
    return bool((cols.min(axis=0) == cols.max(axis=0)).any())


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


def roc_auc(y_true, y_score, *, undefined: str = "raise") -> float:
    """Area under the ROC curve; for 2-D input the mean over label columns.

    AUC = P(s_pos > s_neg) + ½·P(s_pos = s_neg) over all positive-negative pairs.

    Args:
        y_true: 0/1 (or boolean) labels, shape (N,) or (N, K).
        y_score: scores of the same shape; higher means more likely positive.
        undefined: ``"raise"`` or ``"nan"``: what an undefined AUC gives (no rows, a label
            column with one class, or a score that is not finite, as a diverged model
            writes). Shapes that differ and labels other than 0/1 always raise.
    Raises:
        ValueError: shapes differ, labels are not 0/1, or (``undefined="raise"``) the AUC
            is undefined.

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> roc_auc([1, 1], [0.2, 0.9], undefined="nan")
    nan
    """
    if undefined not in ("raise", "nan"):
        raise ValueError(f"roc_auc: undefined must be 'raise' or 'nan', got {undefined!r}")
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"roc_auc: y_true shape {y.shape} != y_score shape {s.shape}")
    if y.ndim not in (1, 2):
        raise ValueError(f"roc_auc: expected 1-D or 2-D input, got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"roc_auc: y_true must be 0/1, got values {np.unique(y)[:5].tolist()}")
    if undefined == "nan" and _undefined(y, s):
        return float("nan")
    if y.shape[0] == 0:
        raise ValueError(f"roc_auc: expected non-empty 1-D or 2-D input, got shape {y.shape}")
    if np.isnan(s).any():
        raise ValueError("roc_auc: y_score contains NaN")
    if y.ndim == 1:
        return _binary_auc(y, s, "the label")
    return float(
        np.mean([_binary_auc(y[:, k], s[:, k], f"label column {k}") for k in range(y.shape[1])])
    )
