"""The ensemble's summary (``ensemble.md``): each member's OOF AUCs and weight, the greedy path
and its nested estimate, the members' Spearman rank correlations and the drop-one AUCs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from deepauc.markdown import markdown_table
from deepauc.pipeline.pred_files import COMPETITION, model_names, score_oof
from deepauc.pipeline.selection import (
    drop_one_aucs,
    fold_rank_auc,
    spearman_matrix,
)

# the heading of ensemble.md's greedy section: the report tells a greedy ensemble by it
GREEDY_HEADING = "## Greedy selection"


@dataclasses.dataclass
class Choice:
    """What the ensemble averages and what it was chosen from, with the OOF columns used."""

    pool: list[str]  # the candidate dirs (the members under selection: fixed)
    members: list[str]  # the chosen dirs, in pool order
    weights: np.ndarray  # normalised, one per chosen dir
    oof: pd.DataFrame  # the first pool dir's rows (image_name, fold, source, target)
    raw: np.ndarray  # pool x rows: each dir's OOF predictions aligned to ``oof``
    scaled: np.ndarray  # the same on the averaging scale
    path: list[tuple[str, float]] = dataclasses.field(default_factory=list)  # greedy steps
    nested: dict | None = None  # selection.nested_greedy's result, greedy only

    @property
    def comp(self) -> np.ndarray:
        """The competition rows: the ones every AUC here is computed on."""
        return (self.oof["source"] == COMPETITION).to_numpy()


@dataclasses.dataclass
class EnsembleResult:
    """The numbers of one ensemble run and their markdown."""

    table: pd.DataFrame  # one row per candidate and one for the ensemble
    correlation: pd.DataFrame  # Spearman, candidates x candidates
    drop_one: pd.DataFrame  # one row per chosen member
    oof_auc: float
    oof_auc_fold_rank: float
    markdown: str = ""
    log_message: str = ""


def _scores(oof: pd.DataFrame, name: str, weight: float) -> dict:
    comp = oof[oof["source"] == COMPETITION]
    s = score_oof(oof)
    fold_rank = fold_rank_auc(comp["target"], comp["fold"], comp["pred"])
    return {
        "model": name,
        "weight": weight,
        "OOF": s["OOF"],
        "OOF, fold ranks": fold_rank,
        "external": s["external"],
    }


def summarise(
    choice: Choice, oof: pd.DataFrame, *, name: str, method: str, selection: str
) -> EnsembleResult:
    """Score the candidates and the ensemble ``oof`` it wrote, and render ``ensemble.md``."""
    names = model_names(choice.pool)
    weight_of = dict(zip(choice.members, choice.weights))
    rows = [
        _scores(choice.oof.assign(pred=choice.raw[i]), n, float(weight_of.get(d, 0.0)))
        for i, (n, d) in enumerate(zip(names, choice.pool))
    ]
    rows.append(_scores(oof, f"ensemble ({method})", 1.0))
    table = pd.DataFrame(rows)

    comp = choice.comp
    y = choice.oof["target"].to_numpy()[comp]
    n = len(choice.pool)
    corr = spearman_matrix(choice.raw[:, comp]) if comp.sum() > 1 else np.full((n, n), np.nan)
    correlation = pd.DataFrame(corr, index=names, columns=names)
    chosen = [choice.pool.index(m) for m in choice.members]
    cols = choice.scaled[chosen][:, comp]
    whole = float(table["OOF"].iloc[-1])
    drops = drop_one_aucs(y, cols, choice.weights) if len(set(y)) == 2 else [np.nan] * len(cols)
    drop_one = pd.DataFrame(
        {
            "without": [names[i] for i in chosen],
            "OOF": drops,
            "change": [d - whole for d in drops],
        }
    )
    result = EnsembleResult(
        table=table,
        correlation=correlation,
        drop_one=drop_one,
        oof_auc=whole,
        oof_auc_fold_rank=float(table["OOF, fold ranks"].iloc[-1]),
    )
    result.markdown = render(result, choice, name=name, method=method, selection=selection)
    return result


def _cell(value: float, fmt: str = ".3f") -> str:
    return "–" if not np.isfinite(value) else format(value, fmt)


def _greedy_section(choice: Choice, names: dict[str, str], in_sample: float) -> str:
    """The greedy path, the per-fold choices and the nested estimate, with what each means."""
    steps = pd.DataFrame(
        [
            {"step": i + 1, "added": names[d], "OOF AUC after": auc}
            for i, (d, auc) in enumerate(choice.path)
        ]
    )
    nested = choice.nested or {}
    per_fold = []
    for k, counts in nested.get("counts", {}).items():
        picked = ", ".join(f"{names[d]} ×{int(c)}" for d, c in zip(choice.pool, counts) if c > 0)
        per_fold.append(
            {
                "fold": k,
                "chosen on the other folds": picked,
                "AUC of the fold": nested["fold_auc"][k],
            }
        )
    blends = [names[d] for d in choice.pool if (Path(d) / "blend.md").is_file()]
    caveat = (
        f" The blends among the candidates ({', '.join(blends)}) chose their own metadata "
        "weight on all OOF rows; the nested estimate re-chooses the members, not those weights."
        if blends
        else ""
    )
    return (
        f"{GREEDY_HEADING}\n\n"
        "Forward selection with replacement: start empty, add the candidate whose addition most "
        "raises the OOF AUC of the equal-weight mean, stop when none raises it; a member's "
        "weight is its share of the additions.\n\n"
        f"{markdown_table(steps)}\n\n"
        f"In-sample OOF AUC {_cell(in_sample, '.4f')}: optimistic, the members were chosen on "
        "these rows. Nested estimate (each fold scored with members chosen on the other "
        f"folds' rows only, pooled): **{_cell(nested.get('auc', float('nan')), '.4f')}**; "
        f"quote this one.{caveat}\n\n"
        f"{markdown_table(pd.DataFrame(per_fold))}\n"
    )


def render(
    result: EnsembleResult, choice: Choice, *, name: str, method: str, selection: str
) -> str:
    """The markdown of ``ensemble.md``."""
    names = dict(zip(choice.pool, model_names(choice.pool)))
    n_rows = int(choice.comp.sum())
    scale = {"mean": "probabilities", "rank": "ranks scaled to [0, 1] per directory"}[method]
    how = (
        "the configured members and weights"
        if selection == "fixed"
        else f"greedy forward selection on OOF from {len(choice.pool)} candidate(s)"
    )
    corr = result.correlation
    corr_table = pd.DataFrame(
        {"model": corr.index, **{c: [_cell(v) for v in corr[c]] for c in corr.columns}}
    )
    parts = [
        f"# Ensemble `{name}`\n\n"
        f"Weighted mean of {scale}; members: {how}. AUCs over the {n_rows} competition OOF "
        "rows: `OOF` pools every fold's predictions as they are, `OOF, fold ranks` first turns "
        "each fold's predictions into ranks within the fold (pooled scores mix the scales of "
        "the fold models); `external`: the OOF rows of other sources.\n\n"
        f"{markdown_table(result.table)}\n",
    ]
    if selection == "greedy":
        parts.append(_greedy_section(choice, names, result.oof_auc))
    parts.append(
        "## Rank correlation\n\n"
        f"Spearman correlation of the OOF predictions on the {n_rows} competition rows: "
        "averaging gains most from strong members that are not highly correlated.\n\n"
        f"{markdown_table(corr_table)}\n"
    )
    drops = result.drop_one.assign(
        OOF=[_cell(v, ".4f") for v in result.drop_one["OOF"]],
        change=[_cell(v, "+.4f") for v in result.drop_one["change"]],
    )
    parts.append(
        "## Drop one\n\n"
        "OOF AUC of the ensemble without each member, the others' weights renormalised (the "
        "members are not re-chosen); `change` is against the whole ensemble.\n\n"
        f"{markdown_table(drops)}\n"
    )
    return "\n".join(parts)
