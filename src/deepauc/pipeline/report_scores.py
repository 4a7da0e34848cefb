"""The CV table's summary columns on competition OOF rows: the folds' mean ± sd, the OOF AUC of
ranks taken within each fold, and two partial AUCs (below FPR 0.2, above TPR 0.8)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from deepauc.metrics import partial_auc, pauc_above_tpr, roc_auc
from deepauc.pipeline.pred_files import COMPETITION, fold_ranks

MAX_FPR = 0.2  # pAUC below this false positive rate, McClish-standardised
MIN_TPR = 0.8  # the ISIC 2024 challenge's pAUC above this true positive rate
MEAN, SD = "fold mean", "fold sd"
RANK_OOF = "OOF rank"
PAUC_FPR = f"pAUC FPR≤{MAX_FPR:g}"
PAUC_TPR = f"pAUC TPR≥{MIN_TPR:g}"


def fold_rank_scores(oof: pd.DataFrame) -> np.ndarray:
    """The competition rows' predictions as ranks scaled to [0, 1] within each fold, in row order."""
    comp = oof[oof["source"] == COMPETITION]
    return fold_ranks(comp["pred"].to_numpy(), comp["fold"].to_numpy())


def summary_scores(oof: pd.DataFrame, fold_aucs: list[float]) -> dict[str, float]:
    """Mean and sd (ddof 1) of the defined fold AUCs, the fold-rank OOF AUC and the two pAUCs."""
    defined = np.array([a for a in fold_aucs if not np.isnan(a)])
    comp = oof[oof["source"] == COMPETITION]
    y, s = comp["target"].to_numpy(), comp["pred"].to_numpy()
    return {
        MEAN: float(defined.mean()) if defined.size else float("nan"),
        SD: float(defined.std(ddof=1)) if defined.size > 1 else float("nan"),
        RANK_OOF: roc_auc(y, fold_rank_scores(oof), undefined="nan"),
        PAUC_FPR: partial_auc(y, s, max_fpr=MAX_FPR, undefined="nan"),
        PAUC_TPR: pauc_above_tpr(y, s, min_tpr=MIN_TPR, undefined="nan"),
    }


def summary_table(table: pd.DataFrame, oofs: list[pd.DataFrame]) -> pd.DataFrame:
    """``table`` (the CV table, one row per OOF frame) with the summary columns: the folds'
    mean and sd after the fold columns, then ``OOF``, the fold-rank OOF AUC, the pAUCs, and
    ``external`` last."""
    folds = [c for c in table.columns if c.startswith("fold ")]
    extra = pd.DataFrame(
        [summary_scores(oof, list(row[folds])) for oof, (_, row) in zip(oofs, table.iterrows())],
        index=table.index,
    )
    merged = pd.concat([table, extra], axis=1)
    order = ["model", *folds, MEAN, SD, "OOF", RANK_OOF, PAUC_FPR, PAUC_TPR, "external"]
    return merged[order]


def display_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as the report prints it: mean and sd joined into one ``mean ± sd`` cell."""

    def joined(mean: float, sd: float) -> str:
        if np.isnan(mean):
            return ""
        return f"{mean:.4f}" if np.isnan(sd) else f"{mean:.4f} ± {sd:.4f}"

    shown = summary.copy()
    shown.insert(
        shown.columns.get_loc(MEAN),
        "mean ± sd",
        [joined(m, s) for m, s in zip(shown[MEAN], shown[SD])],
    )
    return shown.drop(columns=[MEAN, SD])


def external_note(names: list[str], oofs: list[pd.DataFrame]) -> str:
    """What an empty ``external`` cell means: no external rows validated, or one class only."""
    counts = [(oof["source"] != COMPETITION).sum() for oof in oofs]
    if not any(counts):
        return (
            "The `external` column is empty: no external rows were validated (the folds table "
            "keeps them at fold -1, training only). To score them apart, build the folds with "
            "`deepauc folds --include-external` (`make ... INCLUDE_EXTERNAL=1`).\n\n"
        )
    lines = []
    for name, oof, n in zip(names, oofs, counts):
        ext = oof[oof["source"] != COMPETITION]
        if n and ext["target"].nunique() < 2:
            lines.append(f"- `{name}`: its {n} external rows hold one class: no AUC")
        elif not n:
            lines.append(f"- `{name}`: no external rows")
    return "Empty `external` cells:\n" + "\n".join(lines) + "\n\n" if lines else ""
