"""ROC AUC by the rank-sum (Mann-Whitney) formula with tied scores at their average rank,
equal to scikit-learn's ``roc_auc_score``; and two partial AUCs from the ROC curve's vertices:
below a false positive rate (McClish-standardised) and above a true positive rate (ISIC 2024)."""

from __future__ import annotations

import numpy as np

__all__ = ["roc_auc", "average_ranks", "roc_points", "partial_auc", "pauc_above_tpr"]


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
    checked = _checked(y_true, y_score, undefined, "roc_auc")
    if checked is None:
        return float("nan")
    y, s = checked
    if y.ndim == 1:
        return _binary_auc(y, s, "the label")
    return float(
        np.mean([_binary_auc(y[:, k], s[:, k], f"label column {k}") for k in range(y.shape[1])])
    )


def _checked(y_true, y_score, undefined: str, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Labels and scores as arrays after the checks every AUC shares; None: undefined, NaN asked."""
    if undefined not in ("raise", "nan"):
        raise ValueError(f"{name}: undefined must be 'raise' or 'nan', got {undefined!r}")
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"{name}: y_true shape {y.shape} != y_score shape {s.shape}")
    if y.ndim not in (1, 2):
        raise ValueError(f"{name}: expected 1-D or 2-D input, got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"{name}: y_true must be 0/1, got values {np.unique(y)[:5].tolist()}")
    if undefined == "nan" and _undefined(y, s):
        return None
    if y.shape[0] == 0:
        raise ValueError(f"{name}: expected non-empty 1-D or 2-D input, got shape {y.shape}")
    if np.isnan(s).any():
        raise ValueError(f"{name}: y_score contains NaN")
    return y, s


def roc_points(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve's vertices (FPR, TPR), from (0, 0) to (1, 1), one per distinct score.

    Rows with equal scores move both rates at once: the curve joins their vertices by one
    straight segment, which is what gives tied pairs half credit.
    """
    checked = _checked(y_true, y_score, "raise", "roc_points")
    assert checked is not None
    y, s = checked
    if y.ndim != 1:
        raise ValueError(f"roc_points: expected 1-D input, got shape {y.shape}")
    _binary_auc(y, s, "the label")  # the one-class error
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order].astype(np.float64)
    last_of_run = np.append(s_sorted[1:] != s_sorted[:-1], True)
    tp = np.cumsum(y_sorted)[last_of_run]
    fp = np.cumsum(1.0 - y_sorted)[last_of_run]
    return np.append(0.0, fp / fp[-1]), np.append(0.0, tp / tp[-1])


def partial_auc(y_true, y_score, *, max_fpr: float, undefined: str = "raise") -> float:
    """ROC area for FPR in [0, ``max_fpr``], McClish-standardised (scikit-learn's ``max_fpr``).

    With A the raw area, the result is ½(1 + (A - A_min) / (A_max - A_min)), A_min = max_fpr²/2
    (the chance diagonal) and A_max = max_fpr: 0.5 for chance, 1 for a perfect ranking.

    >>> round(partial_auc([0, 0, 0, 1, 1], [0.1, 0.2, 0.7, 0.6, 0.9], max_fpr=0.5), 4)
    0.7778
    """
    if not 0.0 < max_fpr <= 1.0:
        raise ValueError(f"partial_auc: max_fpr must be in (0, 1], got {max_fpr}")
    if _checked(y_true, y_score, undefined, "partial_auc") is None:
        return float("nan")
    fpr, tpr = roc_points(y_true, y_score)
    stop = int(np.searchsorted(fpr, max_fpr, side="right"))
    x = np.append(fpr[:stop], max_fpr)
    y = np.append(tpr[:stop], np.interp(max_fpr, fpr, tpr))
    area = float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))
    low, high = max_fpr**2 / 2.0, max_fpr
    return 0.5 * (1.0 + (area - low) / (high - low))


def pauc_above_tpr(y_true, y_score, *, min_tpr: float = 0.8, undefined: str = "raise") -> float:
    """ROC area above the line TPR = ``min_tpr``: ∫ max(TPR(FPR) - min_tpr, 0) dFPR.

    The ISIC 2024 challenge's score (min_tpr 0.8): 0 to 1 - min_tpr, 0.02 for chance at 0.8.

    >>> round(pauc_above_tpr([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)  # TPR is 1 from FPR ½
    0.1
    """
    if not 0.0 <= min_tpr < 1.0:
        raise ValueError(f"pauc_above_tpr: min_tpr must be in [0, 1), got {min_tpr}")
    if _checked(y_true, y_score, undefined, "pauc_above_tpr") is None:
        return float("nan")
    fpr, tpr = roc_points(y_true, y_score)
    x0, x1, y0, y1 = fpr[:-1], fpr[1:], tpr[:-1] - min_tpr, tpr[1:] - min_tpr
    # each segment's area above the line: whole if both ends are above, the triangle past
    # the crossing if one is, none if neither
    both = (y0 >= 0) & (y1 >= 0)
    area = np.where(both, (x1 - x0) * (y0 + y1) / 2.0, 0.0)
    crossing = (y0 < 0) != (y1 < 0)
    hi = np.where(crossing, np.maximum(y0, y1), 0.0)
    span = np.where(crossing, np.abs(y1 - y0), 1.0)
    area = area + np.where(crossing, (x1 - x0) * hi * hi / (2.0 * span), 0.0)
    return float(area.sum())
