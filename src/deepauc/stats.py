"""Paired comparisons: DeLong's test for the AUC difference of two scorers on the same rows, a
bootstrap that resamples groups (patients) instead of rows, the paired t test over seeds (with
its one-sided non-inferiority form), and Holm's step-down correction for several tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as st

from deepauc.metrics import average_ranks, roc_auc

__all__ = ["Comparison", "delong", "bootstrap_groups", "paired_t", "noninferiority_p", "holm"]


@dataclass(frozen=True)
class Comparison:
    """``difference`` = B - A, its confidence interval [``low``, ``high``] and two-sided p."""

    difference: float
    low: float
    high: float
    p_value: float
    method: str


def _binary(y, *scores) -> tuple[np.ndarray, list[np.ndarray]]:
    """Labels and scores as arrays, refused where roc_auc refuses them: shapes that differ, not
    1-D or 2-D, labels other than 0/1, no rows, a NaN score, a label of one class."""
    labels = np.asarray(y)
    arrays = [np.asarray(s, dtype=np.float64) for s in scores]
    for s in arrays:
        if labels.shape != s.shape:
            raise ValueError(f"roc_auc: y_true shape {labels.shape} != y_score shape {s.shape}")
    if labels.ndim not in (1, 2):
        raise ValueError(f"roc_auc: expected 1-D or 2-D input, got shape {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(
            f"roc_auc: y_true must be 0/1, got values {np.unique(labels)[:5].tolist()}"
        )
    if labels.shape[0] == 0:
        raise ValueError(f"roc_auc: expected non-empty 1-D or 2-D input, got shape {labels.shape}")
    if any(np.isnan(s).any() for s in arrays):
        raise ValueError("roc_auc: y_score contains NaN")
    columns = labels.reshape(labels.shape[0], -1)
    for k in range(columns.shape[1]):
        n_pos = int((columns[:, k] == 1).sum())
        n_neg = columns.shape[0] - n_pos
        if n_pos == 0 or n_neg == 0:
            label = "the label" if labels.ndim == 1 else f"label column {k}"
            raise ValueError(
                f"roc_auc: {label} has only one class ({n_pos} positive, {n_neg} negative); "
                "AUC is undefined"
            )
    return labels, arrays


def structural_components(y, score) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's V10 (one per positive) and V01 (one per negative): the share of the other
    class each row beats, ties counting ½; the AUC is the mean of either."""
    labels, (s,) = _binary(y, score)
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    ranks = average_ranks(s)
    v10 = (ranks[pos] - average_ranks(s[pos])) / n_neg
    v01 = 1.0 - (ranks[~pos] - average_ranks(s[~pos])) / n_pos
    return v10, v01


def delong(y, score_a, score_b, *, level: float = 0.95) -> Comparison:
    """DeLong, DeLong & Clarke-Pearson (1988): the AUC difference of two scorers on the same
    rows, its variance from the covariance of their structural components."""
    labels, (a, b) = _binary(y, score_a, score_b)
    a10, a01 = structural_components(labels, a)
    b10, b01 = structural_components(labels, b)
    d10, d01 = b10 - a10, b01 - a01
    diff = float(d10.mean())
    var = (
        d10.var(ddof=1) / d10.size + d01.var(ddof=1) / d01.size
        if min(d10.size, d01.size) > 1
        else 0.0
    )
    se = float(np.sqrt(max(var, 0.0)))
    if se == 0.0:
        return Comparison(diff, diff, diff, 1.0 if diff == 0.0 else 0.0, "DeLong")
    z = st.norm.ppf(0.5 + level / 2.0)
    p = float(2.0 * st.norm.sf(abs(diff) / se))
    return Comparison(diff, diff - z * se, diff + z * se, p, "DeLong")


def weighted_auc(y: np.ndarray, order: np.ndarray, run_id: np.ndarray, w: np.ndarray) -> float:
    """AUC with row weights ``w`` (a bootstrap's row counts), scores pre-sorted by ``order``
    with ``run_id`` numbering the runs of equal scores; NaN when a class has no weight."""
    wp = np.bincount(run_id, weights=(w * y)[order])
    wn = np.bincount(run_id, weights=(w * (1 - y))[order])
    total_p, total_n = wp.sum(), wn.sum()
    if total_p == 0 or total_n == 0:
        return float("nan")
    below = np.cumsum(wn) - wn  # negative weight strictly below each run
    return float((wp * (below + 0.5 * wn)).sum() / (total_p * total_n))


def _sorted_runs(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(score, kind="stable")
    s = score[order]
    run_id = np.concatenate([[0], np.cumsum(s[1:] != s[:-1])])
    return order, run_id


def bootstrap_groups(
    y, score_a, score_b, groups, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> Comparison:
    """The AUC difference B - A with a percentile interval from resampling whole groups
    (patients: their images are not independent) with replacement, and the two-sided
    bootstrap p, 2·min(P(d ≤ 0), P(d ≥ 0)). Resamples with one class are redrawn."""
    labels, (a, b) = _binary(y, score_a, score_b)
    codes, uniques = pd.factorize(pd.Series(np.asarray(groups)).astype(str))
    if codes.size != labels.size:
        raise ValueError(f"bootstrap_groups: {codes.size} group labels for {labels.size} rows")
    runs_a, runs_b = _sorted_runs(a), _sorted_runs(b)
    yf = labels.astype(np.float64)
    rng = np.random.default_rng(seed)
    diffs: list[float] = []
    for _ in range(20 * n_boot):
        if len(diffs) == n_boot:
            break
        counts = np.bincount(rng.integers(0, len(uniques), len(uniques)), minlength=len(uniques))
        w = counts[codes].astype(np.float64)
        d = weighted_auc(yf, *runs_b, w) - weighted_auc(yf, *runs_a, w)
        if np.isfinite(d):
            diffs.append(d)
    if len(diffs) < n_boot:
        raise ValueError("bootstrap_groups: too few groups hold both classes to resample")
    arr = np.asarray(diffs)
    tail = (1.0 - level) / 2.0
    p = min(1.0, 2.0 * min(float((arr <= 0).mean()), float((arr >= 0).mean())))
    diff = roc_auc(labels, b) - roc_auc(labels, a)
    low, high = np.quantile(arr, [tail, 1.0 - tail])
    return Comparison(diff, float(low), float(high), p, f"bootstrap over {len(uniques)} groups")


def paired_t(a, b, *, level: float = 0.95) -> Comparison:
    """Paired t test of mean(B - A) over matched pairs (seeds), with its t interval."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if d.size < 2:
        raise ValueError(f"paired_t: needs at least 2 pairs, got {d.size}")
    mean, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size))
    if se == 0.0:
        return Comparison(mean, mean, mean, 1.0 if mean == 0.0 else 0.0, "paired t")
    q = st.t.ppf(0.5 + level / 2.0, d.size - 1)
    p = float(2.0 * st.t.sf(abs(mean) / se, d.size - 1))
    return Comparison(mean, mean - q * se, mean + q * se, p, "paired t")


def noninferiority_p(a, b, margin: float) -> float:
    """One-sided paired t p-value against H0: mean(B - A) ≤ -``margin`` (B worse than A by
    the margin or more); a small p says B is not worse than A by ``margin``."""
    if margin < 0:
        raise ValueError(f"noninferiority_p: margin must be ≥ 0, got {margin}")
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if d.size < 2:
        raise ValueError(f"noninferiority_p: needs at least 2 pairs, got {d.size}")
    se = float(d.std(ddof=1) / np.sqrt(d.size))
    shifted = float(d.mean()) + margin
    if se == 0.0:
        return 0.0 if shifted > 0 else 1.0
    return float(st.t.sf(shifted / se, d.size - 1))


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input's order: the i-th smallest p times
    (m - i + 1), made non-decreasing, capped at 1. Reject where adjusted p ≤ α.

    >>> holm([0.01, 0.04, 0.03, 0.005]).round(3).tolist()
    [0.03, 0.06, 0.06, 0.02]
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"holm: expected a 1-D array of p-values in [0, 1], got {p_values!r}")
    order = np.argsort(p, kind="stable")
    m = p.size
    scaled = np.minimum(1.0, p[order] * (m - np.arange(m)))
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted
