"""5. Metric: ``deepauc.metrics.roc_auc`` against scikit-learn's ``roc_auc_score``.

Binary labels with 2 % positives (the competition has 1.8 %), scores drawn so the AUC is
about 0.8, as float64 without ties and rounded to 3 decimals (heavy ties, as a
quantised model output gives). Both must return the same value (checked to 1e-9).
(An earlier version of this benchmark timed an unstable-argsort variant of ``roc_auc``;
it was faster with the same result and is what ``src`` now does.)

Goal: never slower, faster at scale.
"""

from __future__ import annotations

import numpy as np
import torch

from common import Ctx, Table, compare, fmt, fmt_ratio, median, paired_ratio, verdict

NAME = "metric"


def data(n: int, ties: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.02).astype(np.int64)
    y[:2] = (0, 1)
    s = rng.random(n) + 0.6 * y
    return y, np.round(s, 3) if ties else s


def run(ctx: Ctx) -> list[Table]:
    from sklearn.metrics import roc_auc_score

    from deepauc.metrics import roc_auc

    sizes = [10**4, 10**5] if ctx.quick else [10**4, 10**5, 10**6] + ([10**7] if ctx.full else [])
    table = Table(
        "Metric: deepauc.metrics.roc_auc vs sklearn.metrics.roc_auc_score (binary, 2 % positives)",
        [
            "scores",
            "ties",
            "deepauc ms",
            "sklearn ms",
            "speed-up (sklearn time / deepauc time)",
            "goal",
        ],
    )
    for n in sizes:
        for ties in (False, True):
            y, s = data(n, ties)
            a, b = roc_auc(y, s), roc_auc_score(y, s)
            if abs(a - b) > 1e-9:
                raise AssertionError(f"roc_auc {a} != roc_auc_score {b} at n={n}, ties={ties}")
            k = max(1, 10**6 // n)

            def rep(fn, k=k, y=y, s=s):
                def call():
                    for _ in range(k):
                        fn(y, s)

                return call

            reps = ctx.reps if n < 10**7 else max(2, ctx.reps // 2)
            ctx.note(f"metric n={n:.0e} ties={ties}: {k} calls per round")
            t = compare(
                {
                    "deepauc": rep(roc_auc),
                    "sklearn": rep(roc_auc_score),
                },
                reps,
                ctx.warmup,
                torch.device("cpu"),
            )
            ratio = paired_ratio(t["sklearn"], t["deepauc"])
            ok = ratio[0] >= (1.0 if n < 10**6 else 1.05)
            table.add(
                f"10^{int(np.log10(n))}",
                "yes" if ties else "no",
                fmt(median(t["deepauc"]) / k * 1e3),
                fmt(median(t["sklearn"]) / k * 1e3),
                fmt_ratio(ratio),
                verdict(ok),
            )
    table.notes.append(
        "Goal per row: speed-up ≥ 1 (never slower); from 10^6 scores on, ≥ 1.05 (faster at scale). "
        "Both are O(n log n), bound by one argsort of the scores."
    )
    if not ctx.full:
        table.notes.append("10^7 scores run with `--full`.")
    return [table]
