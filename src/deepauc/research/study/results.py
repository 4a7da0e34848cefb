"""A finished study's runs as the report reads them, and the cells its tables show (mean ± std)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from deepauc.markdown import markdown_table
from deepauc.research.study.config import DatasetSpec, StudyConfig
from deepauc.research.study.jobs import Job
from deepauc.research.study.runs import Runner
from deepauc.stats import holm, paired_t

__all__ = [
    "LOSS_TITLES",
    "StudyResults",
    "fmt_aucs",
    "paired_text",
    "Pair",
    "PairedCall",
    "paired_calls",
    "table",
]

LOSS_TITLES = {
    "ce": "CE",
    "focal": "Focal",
    "auc_s": "AUC-S",
    "auc_m": "AUC-M",
    "ce_weighted": "CE-w",
}


@dataclass
class StudyResults:
    """What the report reads: the config, the runs and what the study chose and ran."""

    cfg: StudyConfig
    available: list[DatasetSpec]
    skipped: dict[str, str]
    runner: Runner
    final: dict[tuple, Job]  # (data set, ratio, loss, seed) -> the Table-1 run
    chosen: dict[tuple, tuple]  # (data set, ratio, loss) -> hyper-parameters
    tune_jobs: dict[tuple, dict[tuple, list[Job]]]
    abl_jobs: dict[str, list[Job]]  # "<ablation>/<data set>/<ratio>/<row>" -> runs
    abl_notes: list[str]
    timing: list[dict[str, Any]] | None

    def main_tests(self, name: str, r: float, loss: str) -> list[float] | None:
        """Test AUCs of the Table-1 runs over the seeds; None when the study has no ``loss``."""
        if loss not in self.cfg.losses:
            return None
        return self.runner.test_aucs([self.final[name, r, loss, s] for s in self.cfg.seeds])

    def ablation_tests(self, key: str, column: str = "test_auc") -> list[float] | None:
        """Test AUCs (or another run ``column``) of the ablation runs under ``key``, or of
        its candidate chosen on validation (:meth:`chosen_key`); None when none ran."""
        chosen = self.chosen_key(key)
        if chosen is None:
            return None
        return [float(self.runner.result(j).get(column, np.nan)) for j in self.abl_jobs[chosen]]

    def chosen_key(self, key: str) -> str | None:
        """``key`` itself, else among its candidates ``key~<value>`` the one with the best
        mean validation AUC over the data set's tuning seeds; None when neither ran."""
        if key in self.abl_jobs:
            return key
        cands = [k for k in self.abl_jobs if k.startswith(key + "~")]
        if not cands:
            return None
        name = key.split("/")[1]
        spec = next(s for s in self.available if s.name == name)
        tune = set(spec.tune_seeds or self.cfg.seeds[:1])

        def score(k: str) -> float:
            return self.runner.mean_val_auc([j for j in self.abl_jobs[k] if j.seed in tune])

        return max(cands, key=score)

    def achieved_ratio(self, name: str, r: float, loss: str = "auc_m") -> float:
        """The training split's positive ratio for requested ratio ``r``."""
        return float(self.runner.result(self.final[name, r, loss, self.cfg.seeds[0]])["imratio"])

    def ablation_rows(self, prefix: str) -> list[tuple[str, float]]:
        """(data set, ratio) pairs with ablation runs under ``prefix``, in config order."""
        out: list[tuple[str, float]] = []
        for k in self.abl_jobs:
            parts = k.split("/")
            if parts[0] == prefix and (parts[1], float(parts[2])) not in out:
                out.append((parts[1], float(parts[2])))
        return out

    def tuned_margin(self, name: str, r: float) -> float:
        """AUC-M's margin chosen on validation for the data set at requested ratio ``r``."""
        return dict(self.chosen[name, r, "auc_m"])["margin"]


def table(rows: Sequence[Sequence[str]], columns: Sequence[str]) -> str:
    """A markdown table of ready-made cell strings."""
    return markdown_table(pd.DataFrame([list(r) for r in rows], columns=list(columns)))


def fmt_aucs(vals: Sequence[float]) -> str:
    """``mean±std`` over the finite values, noting how many runs diverged."""
    v = np.asarray(vals, float)
    ok = v[np.isfinite(v)]
    if ok.size == 0:
        return "diverged"
    s = f"{ok.mean():.3f}±{ok.std(ddof=1) if ok.size > 1 else 0.0:.3f}"
    if ok.size < v.size:
        s += f" ({v.size - ok.size} diverged)"
    return s


def paired_text(a: Sequence[float], b: Sequence[float]) -> str:
    """``mean±std`` of the per-seed differences a − b."""
    d = np.asarray(a, float) - np.asarray(b, float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return "n/a"
    sd = d.std(ddof=1) if d.size > 1 else 0.0
    return f"{d.mean():+.3f}±{sd:.3f}"


@dataclass(frozen=True)
class PairedCall:
    """a − b paired per seed: the mean and std of the differences, the two-sided paired t
    p-value Holm-adjusted over the comparisons it was tested with, and the call (+1 / −1 where
    that p is at most the level, else 0)."""

    diff: float
    sd: float
    p: float
    sign: int

    def text(self, word: str = "") -> str:
        """``+0.004±0.005 (p 0.210)``, the word after the p-value where given."""
        return f"{self.diff:+.3f}±{self.sd:.3f} (p {self.p:.3f}{', ' + word if word else ''})"


def _finite_differences(a: Sequence[float] | None, b: Sequence[float] | None) -> np.ndarray | None:
    if a is None or b is None:
        return None
    d = np.asarray(a, float) - np.asarray(b, float)
    d = d[np.isfinite(d)]
    return d if d.size >= 2 else None


# (a, b): the per-seed values of two settings, either missing
Pair = tuple[Sequence[float] | None, Sequence[float] | None]


def paired_calls(pairs: Sequence[Pair], level: float) -> list[PairedCall | None]:
    """Each ``(a, b)`` of one family (a table row's comparisons) by the paired t test over the
    seeds where both are finite, Holm-adjusted over the family; ``None`` where a side is
    missing or fewer than two pairs remain (left out of the family)."""
    diffs = [_finite_differences(a, b) for a, b in pairs]
    tested = [d for d in diffs if d is not None]
    raw = [paired_t(np.zeros_like(d), d).p_value for d in tested]
    adjusted = iter(holm(raw) if raw else [])
    calls: list[PairedCall | None] = []
    for d in diffs:
        if d is None:
            calls.append(None)
            continue
        p = float(next(adjusted))
        sign = int(np.sign(d.mean())) if p <= level else 0
        calls.append(PairedCall(float(d.mean()), float(d.std(ddof=1)), p, sign))
    return calls
