"""The toy's 2 × 3 figure: score contours, data points and decision boundaries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepauc.io import atomic_path
from deepauc.research.toy.data import LOSS_NAMES, PANELS, ToyConfig, bayes_llr
from deepauc.research.toy.model import ToyNet

Score = Callable[[np.ndarray], np.ndarray]


@dataclass
class _View:
    """The plotted region as a grid, and the rate-matched level of a score."""

    gx: np.ndarray
    gy: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    x_clean: np.ndarray
    quantile: float  # 1 - pos_ratio

    @classmethod
    def of(cls, data: dict, cfg: ToyConfig) -> _View:
        every = np.concatenate([data[p]["x"] for p in PANELS])
        lo, hi = every.min(0) - 0.5, every.max(0) + 0.5
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 220), np.linspace(lo[1], hi[1], 220))
        return cls(gx, gy, lo, hi, data["clean"]["x"], 1 - cfg.pos_ratio)

    def on_grid(self, score: Score) -> np.ndarray:
        grid = np.column_stack([self.gx.ravel(), self.gy.ravel()])
        return score(grid).reshape(self.gx.shape)

    def level(self, score: Score) -> float:
        """The score above which ``pos_ratio`` of the clean training rows lie."""
        return float(np.quantile(score(self.x_clean), self.quantile))


def _draw_scores(
    ax: Any, view: _View, model: ToyNet, reference: list[tuple[np.ndarray, float, str]]
) -> None:
    """The model's score contours and boundary, over the reference boundaries
    (grid, level, line style) drawn thin."""
    s_grid = view.on_grid(model.score)
    ax.contourf(view.gx, view.gy, s_grid, levels=np.linspace(0, 1, 21), cmap="RdBu_r", alpha=0.55)
    for grid, level, style in reference:
        colour = "0.35" if style == ":" else "k"
        ax.contour(
            view.gx,
            view.gy,
            grid,
            levels=[level],
            colors=colour,
            linestyles=style,
            linewidths=1.2,
        )
    ax.contour(
        view.gx, view.gy, s_grid, levels=[view.level(model.score)], colors="k", linewidths=2.0
    )


def _draw_points(ax: Any, d: dict[str, np.ndarray], panel: str) -> None:
    """Training rows: small dots for the clean part, marked symbols for the added rows."""
    base, extra = ~d["extra"], d["extra"]
    for mask, y_val, colour in [(base, 0, "tab:blue"), (base, 1, "tab:red")]:
        sel = mask & (d["y"] == y_val)
        ax.scatter(*d["x"][sel].T, s=5 if y_val == 0 else 9, c=colour, alpha=0.6, linewidths=0)
    for y_val, colour in [(0, "tab:blue"), (1, "tab:red")]:
        sel = extra & (d["y"] == y_val)
        if panel == "+easy":
            ax.scatter(*d["x"][sel].T, s=16, facecolors="none", edgecolors=colour, linewidths=0.8)
        else:
            ax.scatter(*d["x"][sel].T, s=14, c=colour, edgecolors="k", linewidths=1.0)


def plot_figure(
    data: dict, models: dict, df_seed: pd.DataFrame, cfg: ToyConfig, path: str | Path
) -> Path:
    """The 2 × 3 figure: score contours, data points and the models' boundaries.

    The solid line is each model's boundary at the rate-matched threshold (the score
    above which it puts ``pos_ratio`` of the clean training rows: AUC only ranks, so
    0.5 would mean nothing); the dashed line is the clean model of the same row, the
    dotted grey line the Bayes boundary at the same rate.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    view = _View.of(data, cfg)
    bayes = (view.on_grid(bayes_llr), view.level(bayes_llr), ":")
    aucs = {(r.loss, r.panel): r.auc for r in df_seed.itertuples()}
    fig, axes = plt.subplots(2, 3, figsize=(15, 9.6), sharex=True, sharey=True)
    for i, loss_name in enumerate(LOSS_NAMES):
        clean = models[loss_name, "clean"]
        clean_line = (view.on_grid(clean.score), view.level(clean.score), "--")
        for j, panel in enumerate(PANELS):
            ax = axes[i, j]
            reference = [bayes] if panel == "clean" else [bayes, clean_line]
            _draw_scores(ax, view, models[loss_name, panel], reference)
            _draw_points(ax, data[panel], panel)
            name = "AUC-S" if loss_name == "AUC-S" else f"AUC-M (m={cfg.margin:g})"
            ax.set_title(f"{name}, {panel}: test AUC {aucs[loss_name, panel]:.4f}", fontsize=10)
            ax.set_xlim(view.lo[0], view.hi[0])
            ax.set_ylim(view.lo[1], view.hi[1])
            ax.set_aspect("equal")
    fig.suptitle(
        "Decision boundaries (solid: this model; dashed: the row's clean model; dotted: Bayes). "
        "Red: positive label, blue: negative. Hollow: easy rows; black-edged: mislabelled rows.",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
