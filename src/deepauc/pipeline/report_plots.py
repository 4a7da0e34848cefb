"""The report's figures (matplotlib, Agg backend): ROC curves and score histograms of the OOF
rows, training curves per fold, and the two stages' lr, a, b and α on one epoch timeline."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from deepauc.io import atomic_path
from deepauc.metrics import roc_auc
from deepauc.pipeline.pred_files import COMPETITION


def plot_roc(oofs: dict[str, pd.DataFrame], path: str | os.PathLike) -> Path:
    """ROC curves of every model on its competition OOF rows, written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(6, 6))
    for name, oof in oofs.items():
        comp = oof[oof["source"] == COMPETITION]
        y, s = comp["target"].to_numpy(), comp["pred"].to_numpy()
        auc = roc_auc(y, s, undefined="nan")
        if np.isnan(auc):
            continue  # one class: no ROC curve to draw
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {auc:.4f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1))
    ax.set_title("ROC, out-of-fold, competition rows")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_histograms(oofs: dict[str, pd.DataFrame], path: str | os.PathLike, bins: int = 50) -> Path:
    """Per model, histograms of competition OOF predictions of positives and negatives.

    Densities, not counts: with ~2% positives a count histogram would show only the
    negatives. The x range is each model's own prediction range (AUC-trained scores
    need not be calibrated probabilities).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(oofs)
    cols = min(n, 3)
    nrows = -(-n // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.5 * nrows), squeeze=False)
    for ax, (name, oof) in zip(axes.flat, oofs.items()):
        comp = oof[oof["source"] == COMPETITION]
        s, y = comp["pred"].to_numpy(), comp["target"].to_numpy()
        lo, hi = (float(s.min()), float(s.max())) if s.size else (0.0, 1.0)
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
        for label, colour, text in ((0, "tab:blue", "negative"), (1, "tab:red", "positive")):
            part = s[y == label]
            if part.size:
                ax.hist(
                    part,
                    bins=edges,
                    density=True,
                    alpha=0.55,
                    color=colour,
                    label=f"{text} (n={part.size})",
                )
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("prediction")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | os.PathLike) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


def plot_curves(runs: dict[str, dict[int, pd.DataFrame]], path: str | os.PathLike) -> Path:
    """Per training run, train loss and validation AUC per epoch, one line per fold, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(len(runs), 2, figsize=(10, 3.2 * len(runs)), squeeze=False)
    for (loss_ax, auc_ax), (run, logs) in zip(axes, runs.items()):
        for fold, log in sorted(logs.items()):
            # markers: a one-epoch run is a single point, which a line alone would not show
            loss_ax.plot(log["epoch"], log["train_loss"], marker="o", ms=3, label=f"fold {fold}")
            auc_ax.plot(log["epoch"], log["val_auc"], marker="o", ms=3, label=f"fold {fold}")
        name = Path(run).name
        loss_ax.set(title=f"{name}: training loss", xlabel="epoch", ylabel="train loss")
        auc_ax.set(title=f"{name}: validation AUC", xlabel="epoch", ylabel="AUC")
        for ax in (loss_ax, auc_ax):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_stages(
    timelines: dict[str, tuple[str, dict[int, pd.DataFrame]]], path: str | os.PathLike
) -> Path:
    """Per stage-2 run, lr, a, b and α per epoch with its stage-1 run before it on one axis
    (one line per fold; a dashed line where stage 2 starts), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = [("lr", "learning rate"), ("a", "a"), ("b", "b"), ("alpha", "α")]
    fig, axes = plt.subplots(len(timelines), 4, figsize=(16, 3.2 * len(timelines)), squeeze=False)
    for row, (run, (stage1, logs)) in zip(axes, timelines.items()):
        for i, (fold, log) in enumerate(sorted(logs.items())):
            for ax, (column, _) in zip(row, panels):
                parts = log[log[column].notna()].groupby("stage")
                for n, (_, part) in enumerate(parts):
                    # each stage its own segment in the fold's colour: no line joins the stages
                    label = f"fold {fold}" if n == 0 else None
                    ax.plot(
                        part["epoch"], part[column], "o-", ms=3, color=f"C{i % 10}", label=label
                    )
        starts = [log.loc[log["stage"] == 2, "epoch"].min() for log in logs.values()]
        boundary = float(np.nanmin(starts)) - 0.5 if starts else None
        ends = [log["epoch"].max() for log in logs.values()]
        for ax, (_, label) in zip(row, panels):
            if boundary is not None and boundary > 0.5:
                ax.axvline(boundary, ls="--", c="grey", lw=1)
            ax.set_xlim(0.5, float(np.nanmax(ends)) + 0.5)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set(xlabel="epoch (stage 1, then stage 2)", ylabel=label)
            ax.set_title(f"{Path(run).name}: {label}", fontsize=9)
            if ax.lines:
                ax.legend(fontsize=7)
        row[0].set_yscale("log")  # the stages' rates differ by orders of magnitude
        row[0].set_title(f"{Path(stage1).name} → {Path(run).name}: learning rate", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
