"""``deepauc report``: cross-validation report of one or more prediction directories.

A prediction directory ``preds/<name>/`` holds

    oof.csv         image_name, fold, source, target, pred   one row per validated
                    training row, ``pred`` from the model of that row's fold
    test.csv        image_name, pred                         mean over the fold models
    test_folds.csv  image_name, fold0, fold1, ...            optional, one column per fold

This module also holds the readers and the writer of that format, shared by the
``meta``, ``blend`` and ``ensemble`` stages, so that every stage checks the files the
same way (errors name the file, the CSV line and the column).

The report scores each directory on its out-of-fold rows: the AUC of every fold and
the pooled out-of-fold AUC over **competition rows only** (``source ==
"competition"``: the rows the leaderboard resembles), and, in a separate column, the
AUC on external rows (ISIC 2019, extra malignant images, ...) when the OOF file has
any. External rows are scored apart because their positive ratio and image sources
differ and would flatter or hide the competition number.

Figures (matplotlib, Agg backend) are written beside the markdown file:
``<stem>_roc.png`` (ROC curves of all models on competition OOF rows) and
``<stem>_hist.png`` (per model, the histograms of OOF predictions of positives and of
negatives: the paper's Figure 4, drawn on out-of-fold rather than training
predictions).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .data.tables import (
    check_targets,
    check_unique_names,
    describe_rows,
    markdown_table,
    read_csv_table,
)
from .io import atomic_path, write_csv, write_text
from .metrics import roc_auc

OOF_COLUMNS = ["image_name", "fold", "source", "target", "pred"]
TEST_PRED_COLUMNS = ["image_name", "pred"]
COMPETITION = "competition"

# --------------------------------------------------------------------------- prediction dirs


def _numeric_column(df: pd.DataFrame, column: str, name: str) -> np.ndarray:
    """``df[column]`` as float64; a missing or non-numeric cell raises ValueError naming it."""
    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna().to_numpy()
    if bad.any():
        raise ValueError(
            f"{name}: column {column!r} is empty or not a number at {describe_rows(df, bad, column)}"
        )
    return values.to_numpy(dtype=np.float64)


def _check_finite_unit(df: pd.DataFrame, column: str, name: str) -> np.ndarray:
    """A prediction column as float64, required finite (probabilities and ranks are)."""
    values = _numeric_column(df, column, name)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"{name}: column {column!r} is not finite at {describe_rows(df, bad, column)}"
        )
    return values


def read_oof(pred_dir: str | os.PathLike) -> pd.DataFrame:
    """Read and check ``<pred_dir>/oof.csv``.

    Checks: the five columns, unique image_name, ``fold`` an integer >= 0, ``target``
    0/1, ``source`` non-empty, ``pred`` a finite number. Returns the frame with
    ``fold``/``target`` as int and ``pred`` as float (extra columns are kept).
    """
    path = Path(pred_dir) / "oof.csv"
    name = str(path)
    df = read_csv_table(path, OOF_COLUMNS)
    check_unique_names(df, name)
    fold = _numeric_column(df, "fold", name)
    bad = (fold != np.round(fold)) | (fold < 0)
    if bad.any():
        raise ValueError(
            f"{name}: column 'fold' must be an integer >= 0 at {describe_rows(df, bad, 'fold')}"
        )
    df["fold"] = fold.astype(int)
    df["target"] = check_targets(df, name)
    src = df["source"]
    no_src = (src.isna() | (src.astype(str).str.strip() == "")).to_numpy()
    if no_src.any():
        raise ValueError(f"{name}: empty 'source' at {describe_rows(df, no_src)}")
    df["pred"] = _check_finite_unit(df, "pred", name)
    return df


def read_test(pred_dir: str | os.PathLike) -> pd.DataFrame:
    """Read and check ``<pred_dir>/test.csv`` (image_name unique, pred finite)."""
    path = Path(pred_dir) / "test.csv"
    df = read_csv_table(path, TEST_PRED_COLUMNS)
    check_unique_names(df, str(path))
    df["pred"] = _check_finite_unit(df, "pred", str(path))
    return df


def fold_columns(df: pd.DataFrame) -> list[str]:
    """The ``fold<k>`` columns of a test_folds frame, in fold order."""
    cols = [c for c in df.columns if c.startswith("fold") and c[4:].isdigit()]
    return sorted(cols, key=lambda c: int(c[4:]))


def read_test_folds(pred_dir: str | os.PathLike) -> pd.DataFrame | None:
    """Read ``<pred_dir>/test_folds.csv`` if it exists (else None); fold columns as float."""
    path = Path(pred_dir) / "test_folds.csv"
    if not path.is_file():
        return None
    df = read_csv_table(path, ["image_name"])
    check_unique_names(df, str(path))
    cols = fold_columns(df)
    if not cols:
        raise ValueError(f"{path}: no fold<k> columns; found {list(df.columns)}")
    for col in cols:
        df[col] = _check_finite_unit(df, col, str(path))
    return df[["image_name", *cols]]


def write_pred_dir(
    out_dir: str | os.PathLike,
    oof: pd.DataFrame,
    test: pd.DataFrame | None,
    test_folds: pd.DataFrame | None = None,
) -> Path:
    """Write ``test_folds.csv``, ``test.csv`` (when given) and ``oof.csv``, each atomically.

    Only the format's columns are written, in the format's order. ``oof.csv`` is
    written last because it is the Makefile's target for a prediction directory: its
    presence means the directory is complete. A stale ``test_folds.csv`` from an
    earlier run is removed when none is given, so the directory never mixes two runs.
    """
    out = Path(out_dir)
    missing = [c for c in OOF_COLUMNS if c not in oof.columns]
    if missing:
        raise ValueError(f"{out}/oof.csv: internal error, missing columns {missing}")
    stale = out / "test_folds.csv"
    if test_folds is not None:
        write_csv(test_folds[["image_name", *fold_columns(test_folds)]], stale)
    elif stale.exists():
        stale.unlink()
    if test is not None:
        write_csv(test[TEST_PRED_COLUMNS], out / "test.csv")
    write_csv(oof[OOF_COLUMNS], out / "oof.csv")
    return out


def model_names(pred_dirs: Sequence[str | os.PathLike]) -> list[str]:
    """Display names of prediction dirs: the directory name, or the full path if two clash."""
    names = [Path(d).name or str(d) for d in pred_dirs]
    if len(set(names)) != len(names):
        names = [str(d) for d in pred_dirs]
    return names


# --------------------------------------------------------------------------- scores


def _auc_or_nan(y: np.ndarray, s: np.ndarray) -> float:
    """roc_auc, or NaN when the rows are empty or hold one class (AUC undefined)."""
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    return roc_auc(y, s)


def score_oof(oof: pd.DataFrame) -> dict[str, float]:
    """AUC per fold and pooled OOF AUC on competition rows, and AUC on external rows.

    Keys: ``fold <k>`` for every fold with competition rows, ``OOF``, ``external``
    (NaN when the OOF file has no external rows or they hold one class). A fold
    whose competition rows hold one class scores NaN.
    """
    comp = oof[oof["source"] == COMPETITION]
    ext = oof[oof["source"] != COMPETITION]
    scores: dict[str, float] = {}
    for k in sorted(comp["fold"].unique()):
        rows = comp[comp["fold"] == k]
        scores[f"fold {k}"] = _auc_or_nan(rows["target"].to_numpy(), rows["pred"].to_numpy())
    scores["OOF"] = _auc_or_nan(comp["target"].to_numpy(), comp["pred"].to_numpy())
    scores["external"] = _auc_or_nan(ext["target"].to_numpy(), ext["pred"].to_numpy())
    return scores


def cv_table(pred_dirs: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """The CV table: one row per prediction dir (column ``model`` = dir name).

    Columns: ``model``, ``fold 0`` .. ``fold K-1`` (competition rows of that fold),
    ``OOF`` (all competition OOF rows pooled), ``external`` (external OOF rows; NaN if
    none). Models with fewer folds get NaN in the missing fold columns.
    """
    if not pred_dirs:
        raise ValueError("report: no prediction directories given")
    rows = []
    for name, d in zip(model_names(pred_dirs), pred_dirs):
        rows.append({"model": name, **score_oof(read_oof(d))})
    folds = sorted({k for r in rows for k in r if k.startswith("fold ")}, key=lambda c: int(c[5:]))
    return pd.DataFrame(rows, columns=["model", *folds, "OOF", "external"])


# --------------------------------------------------------------------------- figures


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
        auc = _auc_or_nan(y, s)
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


# --------------------------------------------------------------------------- report


def figure_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """``(<stem>_roc.png, <stem>_hist.png)`` beside the markdown file ``out``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_roc.png"), out.with_name(f"{out.stem}_hist.png")


def render_report(
    table: pd.DataFrame, title: str, pred_dirs: Sequence[str | os.PathLike], out: Path
) -> str:
    """The markdown text of the report: title, table, what the columns mean, figures."""
    roc, hist = figure_paths(out)
    sources = "\n".join(f"- `{name}`: `{d}`" for name, d in zip(table["model"], pred_dirs))
    return (
        f"# {title}\n\n"
        f"{markdown_table(table)}\n\n"
        "ROC AUC of out-of-fold predictions. `fold k`: the competition rows of fold k, "
        "scored with the model that did not train on them; `OOF`: all competition rows "
        "pooled; `external`: the external (non-competition) rows of the OOF file, scored "
        "apart (empty when there are none). An empty fold cell means that fold's "
        "competition rows hold a single class.\n\n"
        f"Prediction directories:\n{sources}\n\n"
        f"![ROC]({roc.name})\n\n![prediction histograms]({hist.name})\n"
    )


def write_report(
    pred_dirs: Sequence[str | os.PathLike], out: str | os.PathLike, title: str | None = None
) -> pd.DataFrame:
    """Write the markdown report and its two PNGs; return the CV table."""
    out = Path(out)
    table = cv_table(pred_dirs)
    oofs = {name: read_oof(d) for name, d in zip(table["model"], pred_dirs)}
    roc, hist = figure_paths(out)
    plot_roc(oofs, roc)
    plot_histograms(oofs, hist)
    write_text(render_report(table, title or f"Cross-validation: {out.stem}", pred_dirs, out), out)
    return table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preds", nargs="+", required=True, metavar="DIR", help="prediction directories (oof.csv)"
    )
    parser.add_argument("--out", required=True, help="markdown file, e.g. reports/cv_<name>.md")
    parser.add_argument("--title", default=None, help="report title (default: from --out)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    table = write_report(args.preds, args.out, args.title)
    print(markdown_table(table))
    roc, hist = figure_paths(args.out)
    print(f"wrote {args.out}, {roc}, {hist}")
    return 0
