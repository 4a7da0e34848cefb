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

Beside the per-fold and pooled AUCs the table has the folds' mean ± sd, the pooled AUC of
ranks taken within each fold and two partial AUCs (:mod:`report_scores`). ``--compare A B``
adds paired comparisons (:mod:`report_compare`); ``--folds`` the subgroup tables
(:mod:`report_groups`). Figures (:mod:`report_plots`, from the runs :mod:`report_runs`
finds) are written beside the markdown file: ``<stem>_roc.png``, ``<stem>_hist.png`` and,
when the directories' ``provenance.json`` name trained models with a ``log.csv``,
``<stem>_curves.png`` (training curves) and, for stage-2 runs, ``<stem>_stages.png``.

With ``--folds FOLDS_CSV`` a directory whose recorded fold assignment differs from the
current folds table is refused: its OOF rows may have been scored by models that trained
on them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from deepauc.data.tables import FOLD_KEY, read_folds_table
from deepauc.io import write_text
from deepauc.markdown import markdown_table
from deepauc.pipeline.ensemble_summary import GREEDY_HEADING
from deepauc.pipeline.pred_files import (
    model_names,
    read_oof,
    read_oofs_same_folds,
    score_oof,
)
from deepauc.pipeline.provenance import ProvenanceMismatch, folds_of_frame
from deepauc.pipeline.report_compare import (
    BOOT_SEED,
    N_BOOT,
    comparison_table,
    display_comparisons,
)
from deepauc.pipeline.report_groups import NO_AUC, TOP_SIZES, folds_columns, subgroup_tables
from deepauc.pipeline.report_plots import plot_curves, plot_histograms, plot_roc, plot_stages
from deepauc.pipeline.report_runs import model_runs, read_record, stage_timelines, training_runs
from deepauc.pipeline.report_scores import MEAN, display_table, external_note, summary_table

# --------------------------------------------------------------------------- scores


def cv_table(
    pred_dirs: Sequence[str | os.PathLike], oofs: Sequence[pd.DataFrame] | None = None
) -> pd.DataFrame:
    """The CV table: one row per prediction dir (column ``model`` = dir name).

    Columns: ``model``, ``fold 0`` .. ``fold K-1`` (competition rows of that fold),
    ``OOF`` (all competition OOF rows pooled), ``external`` (external OOF rows; NaN if
    none). Models with fewer folds get NaN in the missing fold columns. ``oofs``: the
    directories' OOF frames when the caller has read them.
    """
    if not pred_dirs:
        raise ValueError("report: no prediction directories given")
    frames = oofs if oofs is not None else [read_oof(d) for d in pred_dirs]
    rows = []
    for name, oof in zip(model_names(pred_dirs), frames):
        rows.append({"model": name, **score_oof(oof)})
    folds = sorted({k for r in rows for k in r if k.startswith("fold ")}, key=lambda c: int(c[5:]))
    return pd.DataFrame(rows, columns=["model", *folds, "OOF", "external"])


# --------------------------------------------------------------------------- provenance


def _redo_command(pred_dir: str | os.PathLike, record: dict) -> str:
    """What redoes a prediction directory, by the stage its record says wrote it."""
    runs = sorted({str(path.parent.parent) for path in model_runs(record).values()})
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
    pred_dirs: Sequence[str | os.PathLike],
    folds_csv: str | os.PathLike,
    table: pd.DataFrame | None = None,
) -> None:
    """Refuse a prediction directory recorded under another fold assignment than ``folds_csv``.

    Directories without ``provenance.json`` are accepted: only their ``fold`` column is known.
    ``table``: the folds table when the caller has read it.
    """
    current = folds_of_frame(folds_columns(folds_csv, table, FOLD_KEY), str(folds_csv))
    for d in pred_dirs:
        record = read_record(d)
        if record is not None and record["folds"] != current:
            raise ProvenanceMismatch(
                f"{d} was predicted under another fold assignment ({record['folds']}) than "
                f"{folds_csv} holds now ({current}); {_redo_command(d, record)}"
            )


def check_current_labels(
    pred_dirs: Sequence[str | os.PathLike],
    folds_csv: str | os.PathLike,
    table: pd.DataFrame | None = None,
    oofs: Sequence[pd.DataFrame] | None = None,
) -> None:
    """Refuse a prediction directory whose OOF targets differ from ``folds_csv``'s labels.

    ``table`` and ``oofs``: the folds table and the directories' OOF frames when the caller
    has read them.
    """
    table = folds_columns(folds_csv, table, ["image_name"])
    if "target" not in table.columns:
        return  # a bare fold assignment: no labels to compare
    labels = table.set_index("image_name")["target"]
    frames = oofs if oofs is not None else [read_oof(d) for d in pred_dirs]
    for d, frame in zip(pred_dirs, frames):
        oof = frame.set_index("image_name")["target"]
        common = oof.index.intersection(labels.index)
        differ = common[(oof.loc[common].astype(int) != labels.loc[common].astype(int)).to_numpy()]
        if len(differ):
            record = read_record(d) or {}
            raise ProvenanceMismatch(
                f"{d}/oof.csv holds other labels than {folds_csv} for {len(differ)} image(s) "
                f"(e.g. {differ[0]}): a label changed after it was predicted; "
                f"{_redo_command(d, record)}"
            )


def _blend_of(pred_dir: str | os.PathLike) -> dict | None:
    """The blend record of a directory written by ``deepauc blend`` (None for other stages)."""
    record = read_record(pred_dir) or {}
    blend = record.get("blend")
    if isinstance(blend, dict):
        return blend
    return {} if (Path(pred_dir) / "blend.md").is_file() else None


def _greedy_of(pred_dir: str | os.PathLike) -> dict | None:
    """What ``deepauc ensemble`` with ``selection: greedy`` recorded of its choice (the record's
    ``ensemble`` entry); {} when only its ``ensemble.md`` tells of a greedy selection (its
    inputs had no records, so it wrote none); None for any other directory."""
    chosen = (read_record(pred_dir) or {}).get("ensemble")
    if isinstance(chosen, dict):
        return chosen
    summary = Path(pred_dir) / "ensemble.md"
    return {} if summary.is_file() and GREEDY_HEADING in summary.read_text() else None


def _nested(estimate: object) -> float:
    return float(estimate) if isinstance(estimate, float) else float("nan")


def nested_column(pred_dirs: Sequence[str | os.PathLike]) -> list[float] | None:
    """The ``nested OOF`` cell of each directory when one of them is a greedy ensemble (else
    None): a greedy ensemble's or a blend's nested (held-out fold) estimate, NaN for a row
    without one."""
    greedy = [_greedy_of(d) for d in pred_dirs]
    if all(g is None for g in greedy):
        return None
    cells = []
    for d, chosen in zip(pred_dirs, greedy):
        blend = _blend_of(d)
        if chosen is not None:
            cells.append(_nested(chosen.get("nested_auc")))
        elif blend is not None and blend.get("chosen_here", True):
            cells.append(_nested(blend.get("nested_auc")))
        else:
            cells.append(float("nan"))
    return cells


def _greedy_caveat(name: str, pred_dir: str | os.PathLike, chosen: dict, blends: list[str]) -> str:
    """The caveat of a greedy ensemble's row: its nested estimate, or that it has none."""
    nested = chosen.get("nested_auc")
    if isinstance(nested, float):
        line = (
            f"- `{name}`: its members and weights were chosen greedily on these same OOF rows, "
            f"so this AUC is optimistic; the nested estimate (members chosen on the other folds) "
            f"is {nested:.4f} (`{pred_dir}/ensemble.md`)"
        )
    else:
        line = (
            f"- `{name}`: weights chosen on these OOF rows (greedy selection), so this AUC is "
            f"optimistic; no nested estimate is recorded with it: see `{pred_dir}/ensemble.md`"
        )
    if blends:  # the nested estimate re-chooses the members, not the blends' own weights
        line += (
            f"; it averages blends whose weights were chosen on all OOF rows too "
            f"({', '.join(blends)}), which no estimate here re-chooses"
        )
    return line


def weight_caveats(names: Sequence[str], pred_dirs: Sequence[str | os.PathLike]) -> list[str]:
    """One line per row whose blend weight or ensemble members were chosen on the rows it is
    scored on."""
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
        inputs = ((read_record(d) or {}).get("inputs")) or []
        blends = [str(i) for i in inputs if _blend_of(i) is not None]
        chosen = _greedy_of(d)
        if chosen is not None:
            lines.append(_greedy_caveat(name, d, chosen, blends))
        elif blends:
            lines.append(
                f"- `{name}`: averages blends whose weights were chosen on these same OOF rows "
                f"({', '.join(blends)}), so this AUC is optimistic; no nested estimate of it "
                "exists: compare their nested estimates in each `blend.md`"
            )
    return lines


# --------------------------------------------------------------------------- report


def figure_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """``(<stem>_roc.png, <stem>_hist.png)`` beside the markdown file ``out``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_roc.png"), out.with_name(f"{out.stem}_hist.png")


def curves_path(out: str | os.PathLike) -> Path:
    """``<stem>_curves.png`` beside the markdown file ``out``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_curves.png")


def stages_path(out: str | os.PathLike) -> Path:
    """``<stem>_stages.png`` beside the markdown file ``out``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_stages.png")


COLUMNS_TEXT = (
    "ROC AUC of out-of-fold predictions. `fold k`: the competition rows of fold k, scored "
    "with the model that did not train on them (empty: that fold's competition rows hold a "
    "single class); `mean ± sd`: the mean and sample standard deviation of those fold AUCs, "
    "the spread a model's CV has from fold to fold. `OOF`: all competition rows pooled, each "
    "scored by its own fold's model, so it compares scores of different models: a fold "
    "model whose scores sit higher or lower than the others' moves it, and AUC-M scores are "
    "on no common scale. `OOF rank`: the same rows pooled after each fold's predictions are "
    "turned into ranks scaled to 0..1 within the fold, which puts the fold models on one "
    "scale; where it is well above `OOF`, the folds' scales disagree. `pAUC FPR≤0.2`: the "
    "pooled ROC area below false positive rate 0.2, McClish-standardised (0.5 chance, 1 "
    "perfect); `pAUC TPR≥0.8`: the ISIC 2024 score, the area above true positive rate 0.8 "
    "(0.02 chance, 0.2 perfect). `external`: the validated external (non-competition) rows "
    "of the OOF file, scored apart."
)


NESTED = "nested OOF"
NESTED_TEXT = (
    f"`{NESTED}`: the competition OOF AUC when what was chosen on the OOF rows (a greedy "
    "ensemble's members and weights, a blend's weight) is chosen for each fold on the other "
    "folds' rows only: the estimate to quote for those rows; empty where nothing was chosen "
    "on the OOF rows or no such estimate is recorded.\n\n"
)


def _compare_text(comparisons: pd.DataFrame) -> str:
    if comparisons.empty:
        return ""
    return (
        "## Paired comparisons\n\n"
        f"{markdown_table(display_comparisons(comparisons))}\n\n"
        "Each pair is scored on the competition OOF rows both hold (the same images, folds "
        "and labels). `B − A`: AUC of B minus AUC of A. DeLong: the interval and two-sided "
        "p-value from the covariance of the two AUCs on the same rows (rows treated as "
        f"independent). Bootstrap: {N_BOOT} resamples of whole patients (`patient_id` of the "
        f"folds table; seed {BOOT_SEED}), percentile interval and two-sided p = 2·min(P(d ≤ 0), "
        f"P(d ≥ 0)), shown as `<{2 / N_BOOT:g}` when no resample falls on the other side of "
        "0; a patient's images are not independent, so this is the interval to quote when "
        "they differ.\n\n"
    )


def _groups_text(groups: list[pd.DataFrame], n_rows: int) -> str:
    if not groups:
        return ""
    tables = "\n\n".join(markdown_table(t) for t in groups)
    return (
        "## Where a model fails\n\n"
        f"OOF AUC per group on the {n_rows} OOF rows all models hold, joined on image_name "
        "with the folds table: by source over all those rows, by the other groupings over "
        "their competition rows. Age bands in years; image size is the original width × "
        f"height (the resized sets' columns), the {TOP_SIZES} most frequent shown, the rest "
        f"pooled as `other`. `{NO_AUC}`: the group holds one class.\n\n{tables}\n\n"
    )


def render_report(
    table: pd.DataFrame,
    title: str,
    pred_dirs: Sequence[str | os.PathLike],
    out: Path,
    runs: Sequence[str] = (),
    sections: dict[str, str] | None = None,
) -> str:
    """The markdown text of the report: title, table, what the columns mean, figures.

    ``table``: the CV table, or the summary table (:func:`summary_table`). ``runs``: the
    training runs drawn in the curves figure (none: no curves section). ``sections``:
    markdown blocks by place: ``external`` (after the column text), ``compare`` and
    ``groups`` (after the caveats), ``stages`` (last).
    """
    sections = sections or {}
    roc, hist = figure_paths(out)
    sources = "\n".join(f"- `{name}`: `{d}`" for name, d in zip(table["model"], pred_dirs))
    lines = weight_caveats(list(table["model"]), pred_dirs)
    caveats = "Weights chosen on the scored rows:\n" + "\n".join(lines) + "\n\n" if lines else ""
    if NESTED in table.columns:
        caveats += NESTED_TEXT
    shown = display_table(table) if MEAN in table.columns else table
    text = (
        f"# {title}\n\n"
        f"{markdown_table(shown)}\n\n"
        f"{COLUMNS_TEXT}\n\n"
        f"{sections.get('external', '')}"
        f"{caveats}"
        f"{sections.get('compare', '')}"
        f"{sections.get('groups', '')}"
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
    return text + sections.get("stages", "")


def _stages_text(timelines: dict, out: Path) -> str:
    if not timelines:
        return ""
    listed = ", ".join(f"`{stage1}` → `{run}`" for run, (stage1, _) in timelines.items())
    return (
        "\nThe two stages on one timeline (each fold's `log.csv`, stage 1 first, its epochs "
        "continued by stage 2's; dashed: where stage 2 starts): learning rate at each epoch's "
        "end (log scale) for both, and the AUC-M variables a, b and α of stage 2, for "
        f"{listed}.\n\n![stages]({stages_path(out).name})\n"
    )


def _figures(pred_dirs: Sequence[str | os.PathLike], oofs: dict, out: Path) -> tuple[list, dict]:
    """Draw every figure (removing a stale optional one); the curves' runs and the timelines."""
    roc, hist = figure_paths(out)
    plot_roc(oofs, roc)
    plot_histograms(oofs, hist)
    runs = training_runs(pred_dirs)
    timelines = stage_timelines(pred_dirs)
    # a figure of an earlier report's models goes when there is nothing to draw now
    if runs:
        plot_curves(runs, curves_path(out))
    else:
        curves_path(out).unlink(missing_ok=True)
    if timelines:
        plot_stages(timelines, stages_path(out))
    else:
        stages_path(out).unlink(missing_ok=True)
    return list(runs), timelines


def write_report(
    pred_dirs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    title: str | None = None,
    folds_csv: str | os.PathLike | None = None,
    compare: Sequence[Sequence[str]] = (),
) -> pd.DataFrame:
    """Write the markdown report and its PNGs; return the summary table.

    ``folds_csv``: the current folds table; a directory recorded under another fold
    assignment is refused (see :func:`check_current_folds`); with it come the subgroup
    tables. ``compare``: pairs (A, B) of ``pred_dirs`` to compare (needs ``folds_csv``).
    """
    out = Path(out)
    # refuses models scored under different fold assignments
    frames, _ = read_oofs_same_folds(pred_dirs)
    folds = None  # the folds table, read once for every check and table below
    if folds_csv is not None:
        folds = read_folds_table(folds_csv, FOLD_KEY)
        check_current_folds(pred_dirs, folds_csv, folds)
        check_current_labels(pred_dirs, folds_csv, folds, frames)
    table = cv_table(pred_dirs, frames)
    names = list(table["model"])
    comparisons = comparison_table(compare, pred_dirs, names, frames, folds_csv, folds)
    sections = {"external": external_note(names, frames), "compare": _compare_text(comparisons)}
    if folds_csv is not None:
        groups = subgroup_tables(dict(zip(names, frames)), folds_csv, folds)
        sections["groups"] = _groups_text(*groups)
    summary = summary_table(table, frames)
    nested = nested_column(pred_dirs)
    if nested is not None:
        summary.insert(summary.columns.get_loc("OOF") + 1, NESTED, nested)
    runs, timelines = _figures(pred_dirs, dict(zip(names, frames)), out)
    sections["stages"] = _stages_text(timelines, out)
    title = title or f"Cross-validation: {out.stem}"
    write_text(render_report(summary, title, pred_dirs, out, runs, sections), out)
    return summary


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
        help="current folds table: refuse prediction dirs recorded under another fold "
        "assignment; its metadata gives the subgroup tables and its patient_id the bootstrap",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        action="append",
        default=[],
        metavar=("A", "B"),
        help="paired comparison of two --preds dirs on their competition OOF rows (B - A by "
        "DeLong and by a bootstrap over patients; needs --folds); repeatable",
    )


def run(args: argparse.Namespace) -> int:
    table = write_report(args.preds, args.out, args.title, args.folds, args.compare)
    print(markdown_table(display_table(table)))
    written = [args.out, *figure_paths(args.out)]
    written += [p for p in (curves_path(args.out), stages_path(args.out)) if p.is_file()]
    print(f"wrote {', '.join(str(w) for w in written)}")
    return 0
