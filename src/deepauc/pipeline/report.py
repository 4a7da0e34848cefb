"""``deepauc report``: cross-validation report of one or more prediction directories.

A prediction directory ``preds/<name>/`` holds

    oof.csv         image_name, fold, source, target, pred   one row per validated
                    training row, ``pred`` from the model of that row's fold
    test.csv        image_name, pred                         mean over the fold models
    test_folds.csv  image_name, fold0, fold1, ...            optional, one column per fold

The format's readers and writer live in :mod:`deepauc.pipeline.pred_files`.

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
predictions) and, when the directories' ``provenance.json`` name trained models with a
``log.csv``, ``<stem>_curves.png`` (training loss and validation AUC per epoch, one line
per fold, one row per training run).

With ``--folds FOLDS_CSV`` a directory whose recorded fold assignment differs from the
current folds table is refused: its OOF rows may have been scored by models that trained
on them.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from deepauc.data.tables import read_csv_table, read_folds_table
from deepauc.io import atomic_path, write_text
from deepauc.markdown import markdown_table
from deepauc.metrics import roc_auc
from deepauc.pipeline.pred_files import (
    COMPETITION,
    model_names,
    read_oof,
    read_oofs_same_folds,
    score_oof,
)
from deepauc.pipeline.provenance import PROVENANCE_FILE, ProvenanceMismatch, folds_of_table

# --------------------------------------------------------------------------- scores


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


# --------------------------------------------------------------------------- provenance


def _read_record(pred_dir: str | os.PathLike) -> dict | None:
    """The ``provenance.json`` of a directory already checked by ``read_oofs_same_folds``."""
    path = Path(pred_dir) / PROVENANCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _model_runs(record: dict) -> dict[int, Path]:
    """Fold -> ``model.pt`` path of a record written by ``predict`` (empty for other stages)."""
    models = record.get("models")
    if not isinstance(models, dict):
        return {}
    return {
        int(fold): Path(entry["path"])
        for fold, entry in models.items()
        if str(fold).isdigit() and isinstance(entry, dict) and "path" in entry
    }


def _redo_command(pred_dir: str | os.PathLike, record: dict) -> str:
    """What redoes a prediction directory, by the stage its record says wrote it."""
    runs = sorted({str(path.parent.parent) for path in _model_runs(record).values()})
    if runs:
        return (
            f"delete {' '.join(runs)} and rerun `make` (or `deepauc train` and "
            f"`deepauc predict` with the config that wrote {pred_dir})"
        )
    if "inputs" in record:
        inputs = ", ".join(str(i) for i in record["inputs"])
        return (
            f"redo its inputs ({inputs}), then rerun `make` (or the `deepauc blend` or "
            f"`deepauc ensemble` that wrote {pred_dir})"
        )
    return f"rerun `make` (or `deepauc meta` with the config that wrote {pred_dir})"


def check_current_folds(
    pred_dirs: Sequence[str | os.PathLike], folds_csv: str | os.PathLike
) -> None:
    """Refuse a prediction directory recorded under another fold assignment than ``folds_csv``.

    Directories without ``provenance.json`` are accepted: only their ``fold`` column is known.
    """
    current = folds_of_table(folds_csv)
    for d in pred_dirs:
        record = _read_record(d)
        if record is not None and record["folds"] != current:
            raise ProvenanceMismatch(
                f"{d} was predicted under another fold assignment ({record['folds']}) than "
                f"{folds_csv} holds now ({current}); {_redo_command(d, record)}"
            )


def check_current_labels(
    pred_dirs: Sequence[str | os.PathLike], folds_csv: str | os.PathLike
) -> None:
    """Refuse a prediction directory whose OOF targets differ from ``folds_csv``'s labels."""
    table = read_folds_table(folds_csv, ["image_name"])
    if "target" not in table.columns:
        return  # a bare fold assignment: no labels to compare
    table = table.set_index("image_name")["target"]
    for d in pred_dirs:
        oof = read_oof(d).set_index("image_name")["target"]
        common = oof.index.intersection(table.index)
        differ = common[(oof.loc[common].astype(int) != table.loc[common].astype(int)).to_numpy()]
        if len(differ):
            record = _read_record(d) or {}
            raise ProvenanceMismatch(
                f"{d}/oof.csv holds other labels than {folds_csv} for {len(differ)} image(s) "
                f"(e.g. {differ[0]}): a label changed after it was predicted; "
                f"{_redo_command(d, record)}"
            )


def _blend_of(pred_dir: str | os.PathLike) -> dict | None:
    """The blend record of a directory written by ``deepauc blend`` (None for other stages)."""
    record = _read_record(pred_dir) or {}
    blend = record.get("blend")
    if isinstance(blend, dict):
        return blend
    return {} if (Path(pred_dir) / "blend.md").is_file() else None


def weight_caveats(names: Sequence[str], pred_dirs: Sequence[str | os.PathLike]) -> list[str]:
    """One line per row whose blend weight was chosen on the rows it is scored on."""
    lines = []
    for name, d in zip(names, pred_dirs):
        blend = _blend_of(d)
        if blend is not None and blend.get("chosen_here", True):
            nested = blend.get("nested_auc")
            honest = (
                f"the nested estimate (w chosen on the other folds) is {nested:.4f}"
                if isinstance(nested, float)
                else "see the nested estimate"
            )
            lines.append(
                f"- `{name}`: its blend weight was chosen on these same OOF rows, so this AUC "
                f"is optimistic; {honest} (`{d}/blend.md`)"
            )
            continue
        inputs = ((_read_record(d) or {}).get("inputs")) or []
        blends = [str(i) for i in inputs if _blend_of(i) is not None]
        if blends:
            lines.append(
                f"- `{name}`: averages blends whose weights were chosen on these same OOF rows "
                f"({', '.join(blends)}), so this AUC is optimistic; no nested estimate of it "
                "exists: compare their nested estimates in each `blend.md`"
            )
    return lines


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


# --------------------------------------------------------------------------- training curves


def read_training_log(path: str | os.PathLike) -> pd.DataFrame:
    """``epoch``, ``train_loss`` and ``val_auc`` of a ``log.csv`` as numbers (NaN if unreadable)."""
    log = read_csv_table(path, ["epoch", "train_loss", "val_auc"])
    return log[["epoch", "train_loss", "val_auc"]].apply(pd.to_numeric, errors="coerce")


def training_runs(pred_dirs: Sequence[str | os.PathLike]) -> dict[str, dict[int, pd.DataFrame]]:
    """Run folder -> fold -> ``log.csv`` of the models behind the prediction directories.

    The models are those each directory's ``provenance.json`` names; directories without
    them (meta, blend, ensemble, hand-made) and folds without a ``log.csv`` add nothing.
    A run behind two directories (``<name>`` and ``<name>-notta``) appears once.
    """
    runs: dict[str, dict[int, pd.DataFrame]] = {}
    for d in pred_dirs:
        record = _read_record(d) or {}
        for fold, model_path in sorted(_model_runs(record).items()):
            log_csv = model_path.parent / "log.csv"
            if log_csv.is_file():
                runs.setdefault(str(model_path.parent.parent), {})[fold] = read_training_log(
                    log_csv
                )
    return runs


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


# --------------------------------------------------------------------------- report


def figure_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """``(<stem>_roc.png, <stem>_hist.png)`` beside the markdown file ``out``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_roc.png"), out.with_name(f"{out.stem}_hist.png")


def curves_path(out: str | os.PathLike) -> Path:
    """``<stem>_curves.png`` beside the markdown file ``out``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_curves.png")


def render_report(
    table: pd.DataFrame,
    title: str,
    pred_dirs: Sequence[str | os.PathLike],
    out: Path,
    runs: Sequence[str] = (),
) -> str:
    """The markdown text of the report: title, table, what the columns mean, figures.

    ``runs``: the training runs drawn in the curves figure (none: no curves section).
    """
    roc, hist = figure_paths(out)
    sources = "\n".join(f"- `{name}`: `{d}`" for name, d in zip(table["model"], pred_dirs))
    lines = weight_caveats(list(table["model"]), pred_dirs)
    caveats = "Weights chosen on the scored rows:\n" + "\n".join(lines) + "\n\n" if lines else ""
    text = (
        f"# {title}\n\n"
        f"{markdown_table(table)}\n\n"
        "ROC AUC of out-of-fold predictions. `fold k`: the competition rows of fold k, "
        "scored with the model that did not train on them; `OOF`: all competition rows "
        "pooled; `external`: the external (non-competition) rows of the OOF file, scored "
        "apart (empty when there are none). An empty fold cell means that fold's "
        "competition rows hold a single class.\n\n"
        f"{caveats}"
        f"Prediction directories:\n{sources}\n\n"
        f"![ROC]({roc.name})\n\n![prediction histograms]({hist.name})\n"
    )
    if runs:
        listed = ", ".join(f"`{run}`" for run in runs)
        text += (
            "\nTraining curves (from each fold's `log.csv`): mean training loss and "
            f"validation AUC per epoch, one line per fold, for {listed}.\n\n"
            f"![training curves]({curves_path(out).name})\n"
        )
    return text


def write_report(
    pred_dirs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    title: str | None = None,
    folds_csv: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Write the markdown report and its PNGs; return the CV table.

    ``folds_csv``: the current folds table; a directory recorded under another fold
    assignment is refused (see :func:`check_current_folds`).
    """
    out = Path(out)
    read_oofs_same_folds(pred_dirs)  # refuse models scored under different fold assignments
    if folds_csv is not None:
        check_current_folds(pred_dirs, folds_csv)
        check_current_labels(pred_dirs, folds_csv)
    table = cv_table(pred_dirs)
    oofs = {name: read_oof(d) for name, d in zip(table["model"], pred_dirs)}
    roc, hist = figure_paths(out)
    plot_roc(oofs, roc)
    plot_histograms(oofs, hist)
    runs = training_runs(pred_dirs)
    if runs:
        plot_curves(runs, curves_path(out))
    else:
        curves_path(out).unlink(missing_ok=True)  # a figure of an earlier report's models
    title = title or f"Cross-validation: {out.stem}"
    write_text(render_report(table, title, pred_dirs, out, list(runs)), out)
    return table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preds", nargs="+", required=True, metavar="DIR", help="prediction directories (oof.csv)"
    )
    parser.add_argument("--out", required=True, help="markdown file, e.g. reports/cv_<name>.md")
    parser.add_argument("--title", default=None, help="report title (default: from --out)")
    parser.add_argument(
        "--folds",
        default=None,
        metavar="FOLDS_CSV",
        help="current folds table: refuse prediction dirs recorded under another fold assignment",
    )


def run(args: argparse.Namespace) -> int:
    table = write_report(args.preds, args.out, args.title, args.folds)
    print(markdown_table(table))
    written = [args.out, *figure_paths(args.out)]
    if curves_path(args.out).is_file():
        written.append(curves_path(args.out))
    print(f"wrote {', '.join(str(w) for w in written)}")
    return 0
