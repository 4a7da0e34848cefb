"""``deepauc blend``: ``p = (1 - w)·cnn + w·meta`` with ``w`` chosen on out-of-fold AUC, probabilities
or ranks, and the nested (honest) estimate of the blend's AUC (docs/pipeline.md)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd

from deepauc.io import write_text
from deepauc.markdown import markdown_table
from deepauc.metrics import roc_auc
from deepauc.pipeline.pred_files import (
    COMPETITION,
    align_oof,
    align_to,
    fold_columns,
    nested_by_fold,
    read_oofs_same_folds,
    read_test,
    read_test_folds,
    to_scale,
    write_pred_dir,
)

PAPER_WEIGHT = 0.5

# --------------------------------------------------------------------------- arithmetic


def blend_scores(cnn, meta, w: float) -> np.ndarray:
    """``(1 - w)·cnn + w·meta`` elementwise."""
    return (1.0 - w) * np.asarray(cnn, dtype=np.float64) + w * np.asarray(meta, dtype=np.float64)


def weight_grid(steps: int) -> np.ndarray:
    """``steps`` evenly spaced weights from 0 to 1 inclusive (steps >= 2)."""
    if steps < 2:
        raise ValueError(f"blend: --steps must be >= 2 (got {steps})")
    return np.linspace(0.0, 1.0, steps)


def grid_aucs(y, cnn, meta, grid) -> np.ndarray:
    """AUC of the blend at every weight of ``grid``."""
    return np.array([roc_auc(y, blend_scores(cnn, meta, w)) for w in grid])


def choose_weight(y, cnn, meta, grid) -> tuple[float, np.ndarray]:
    """The grid weight maximising the blend's AUC, and the AUCs of the whole grid.

    Ties go to the smallest weight (the CNN-heavier blend): with nothing to gain the
    metadata model gets no weight.
    """
    aucs = grid_aucs(y, cnn, meta, grid)
    # a tolerance so that float noise in equal AUCs does not pick a larger w
    best = int(np.flatnonzero(aucs >= aucs.max() - 1e-12)[0])
    return float(grid[best]), aucs


def nested_weights(y, folds, cnn, meta, grid) -> dict:
    """Nested estimate: for every fold, w chosen on the other folds, scored on that fold.

    Returns ``weights`` (fold -> w), ``fold_auc`` (fold -> AUC of its rows at its w,
    NaN if the fold holds one class), ``pred`` (every row blended with its fold's w)
    and ``auc`` (pooled AUC of ``pred``: the honest OOF AUC of the blend).
    """
    y = np.asarray(y)
    cnn, meta = np.asarray(cnn, dtype=np.float64), np.asarray(meta, dtype=np.float64)
    out = nested_by_fold(
        y,
        folds,
        lambda rows: choose_weight(y[rows], cnn[rows], meta[rows], grid)[0],
        lambda w, rows: blend_scores(cnn[rows], meta[rows], w),
        "blend",
        "w",
    )
    out["weights"] = out.pop("choices")
    return out


# --------------------------------------------------------------------------- the stage


def blend_dirs(
    cnn_dir: str | os.PathLike,
    meta_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    method: str = "prob",
    steps: int = 21,
    weight: float | None = None,
) -> dict:
    """Blend two prediction dirs into ``out_dir`` (oof.csv, test.csv, blend.md).

    ``w`` is the OOF-chosen grid weight unless ``weight`` fixes it. Returns a dict
    with the chosen weight ``w_chosen``, the weight used ``w``, the grid and its AUCs,
    the AUCs at w = 0, 0.5, 1 and the nested estimate.
    """
    if weight is not None and not 0.0 <= weight <= 1.0:
        raise ValueError(f"blend: --weight must be in [0, 1] (got {weight})")
    grid = weight_grid(steps)
    cnn_oof_path, meta_oof_path = f"{Path(cnn_dir) / 'oof.csv'}", f"{Path(meta_dir) / 'oof.csv'}"
    (cnn_oof, meta_raw), provenance = read_oofs_same_folds([cnn_dir, meta_dir])
    meta_oof = align_oof(cnn_oof, meta_raw, cnn_oof_path, meta_oof_path)
    cnn_s = to_scale(cnn_oof["pred"], method)
    meta_s = to_scale(meta_oof["pred"], method)

    comp = (cnn_oof["source"] == COMPETITION).to_numpy()
    y = cnn_oof["target"].to_numpy()[comp]
    if y.size == 0 or y.min() == y.max():
        raise ValueError(
            f"{cnn_oof_path}: the competition rows hold {y.size} row(s) of one class; cannot choose w"
        )
    folds = cnn_oof["fold"].to_numpy()[comp]
    w_chosen, aucs = choose_weight(y, cnn_s[comp], meta_s[comp], grid)
    nested = nested_weights(y, folds, cnn_s[comp], meta_s[comp], grid)
    fixed = {
        w: roc_auc(y, blend_scores(cnn_s[comp], meta_s[comp], w)) for w in (0.0, PAPER_WEIGHT, 1.0)
    }
    w = w_chosen if weight is None else float(weight)

    oof = cnn_oof[["image_name", "fold", "source", "target"]].copy()
    oof["pred"] = blend_scores(cnn_s, meta_s, w)

    cnn_test = read_test(cnn_dir)
    meta_test = align_to(
        cnn_test,
        read_test(meta_dir),
        f"{Path(cnn_dir) / 'test.csv'}",
        f"{Path(meta_dir) / 'test.csv'}",
    )
    test = cnn_test[["image_name"]].copy()
    test["pred"] = blend_scores(
        to_scale(cnn_test["pred"], method), to_scale(meta_test["pred"], method), w
    )
    test_folds = _blend_test_folds(cnn_dir, meta_dir, cnn_test, method, w)

    result = {
        "method": method,
        "w_chosen": w_chosen,
        "w": w,
        "grid": grid,
        "grid_auc": aucs,
        "fixed": fixed,
        "auc_chosen": float(aucs[np.flatnonzero(grid == w_chosen)[0]]),
        "auc_used": roc_auc(y, oof["pred"].to_numpy()[comp]),
        "nested": nested,
        "n_rows": int(comp.sum()),
    }
    # blend.md first: oof.csv, written last by write_pred_dir, marks the directory complete
    write_text(render_blend(result, cnn_dir, meta_dir), Path(out_dir) / "blend.md")
    if provenance is not None:  # for the CV report's caveat beside this row
        provenance = {
            **provenance,
            "blend": {"w": w, "chosen_here": weight is None, "nested_auc": nested["auc"]},
        }
    write_pred_dir(out_dir, oof, test, test_folds, provenance)
    return result


def _blend_test_folds(
    cnn_dir, meta_dir, cnn_test: pd.DataFrame, method: str, w: float
) -> pd.DataFrame | None:
    """Per-fold test blend when both dirs have test_folds.csv with the same fold columns."""
    a, b = read_test_folds(cnn_dir), read_test_folds(meta_dir)
    if a is None or b is None or fold_columns(a) != fold_columns(b):
        return None
    a = align_to(
        cnn_test, a, f"{Path(cnn_dir) / 'test.csv'}", f"{Path(cnn_dir) / 'test_folds.csv'}"
    )
    b = align_to(
        cnn_test, b, f"{Path(cnn_dir) / 'test.csv'}", f"{Path(meta_dir) / 'test_folds.csv'}"
    )
    out = a[["image_name"]].copy()
    for col in fold_columns(a):
        out[col] = blend_scores(to_scale(a[col], method), to_scale(b[col], method), w)
    return out


def render_blend(result: dict, cnn_dir, meta_dir) -> str:
    """The markdown summary of a blend: weights, their OOF AUCs, the nested estimate."""
    nested = result["nested"]
    per_fold = ", ".join(f"{k}: {w:.2f}" for k, w in nested["weights"].items())
    rows = [
        (0.0, "CNN alone", result["fixed"][0.0]),
        (1.0, "metadata alone", result["fixed"][1.0]),
        (PAPER_WEIGHT, "paper's fixed weight", result["fixed"][PAPER_WEIGHT]),
        (result["w_chosen"], "grid maximum on these OOF rows (optimistic)", result["auc_chosen"]),
    ]
    table = pd.DataFrame(
        [{"w": f"{w:.2f}", "how chosen": how, "OOF AUC": auc} for w, how, auc in rows]
        + [
            {
                "w": f"per fold ({per_fold})",
                "how chosen": "nested: chosen on the other folds",
                "OOF AUC": nested["auc"],
            }
        ]
    )
    used = (
        "the OOF-chosen weight"
        if result["w"] == result["w_chosen"]
        else "the weight fixed by --weight"
    )
    return (
        "# Blend\n\n"
        f"`p = (1 - w)·cnn + w·meta` on the `{result['method']}` scale; "
        f"cnn = `{cnn_dir}`, meta = `{meta_dir}`. "
        f"AUC over the {result['n_rows']} competition OOF rows; grid of {len(result['grid'])} weights.\n\n"
        f"{markdown_table(table)}\n\n"
        f"The files in this directory use w = {result['w']:.2f} ({used}); its OOF AUC is "
        f"{result['auc_used']:.4f}.\n\n"
        "The grid-maximum AUC is optimistic by construction: w was chosen on the same OOF "
        "predictions it is scored on. The nested row chooses w for each fold on the other "
        "folds only and scores the fold with it; quote that number.\n"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cnn", required=True, metavar="DIR", help="prediction dir of the image model"
    )
    parser.add_argument(
        "--meta", required=True, metavar="DIR", help="prediction dir of the metadata model"
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="prediction dir to write the blend to"
    )
    parser.add_argument(
        "--method",
        choices=["prob", "rank"],
        default="prob",
        help="blend probabilities or scaled ranks (default prob)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=21,
        help="weights in the grid over [0, 1] (default 21: step 0.05)",
    )
    parser.add_argument(
        "--weight",
        type=float,
        default=None,
        help="use this w instead of the OOF-chosen one (e.g. 0.5, the paper's)",
    )


def run(args: argparse.Namespace) -> int:
    result = blend_dirs(args.cnn, args.meta, args.out, args.method, args.steps, args.weight)
    print((Path(args.out) / "blend.md").read_text())
    print(f"wrote {args.out}/oof.csv, test.csv, blend.md (w = {result['w']:.2f})")
    return 0
