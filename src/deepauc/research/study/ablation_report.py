"""The report's ablation sections: two-stage, robustness, α ≥ 0, dual step, LibAUC and step time,
with the BSN, oversampling and search sections of :mod:`deepauc.research.study.fair_report`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deepauc.research.study.fair_report import (
    bsn_section,
    oversample_section,
    search_section,
    two_stage_paper_rows,
)
from deepauc.research.study.jobs import ATTRIBUTION_TWEAKS
from deepauc.research.study.results import (
    StudyResults,
    fmt_aucs,
    paired_calls,
    paired_text,
    table,
)
from deepauc.research.study.verdicts import compositional_section, dual_grid_section

__all__ = ["ablation_report"]


def _cell(v: Sequence[float] | None) -> str:
    return fmt_aucs(v) if v is not None else "—"


def _diff(x: Sequence[float] | None, y: Sequence[float] | None) -> str:
    return paired_text(x, y) if x is not None and y is not None else "—"


def _ratio(res: StudyResults, name: str, r: float) -> str:
    return f"{res.achieved_ratio(name, r):.1%}"


def _two_stage(res: StudyResults) -> list[str]:
    a = res.cfg.ablations
    body = []
    for name, r in res.ablation_rows("two_stage"):
        t = res.ablation_tests(f"two_stage/{name}/{r}/two_stage")
        sc, ce = res.main_tests(name, r, "auc_m"), res.main_tests(name, r, "ce")
        row = [name, _ratio(res, name, r), _cell(ce), _cell(sc), _cell(t)]
        body.append(row + [_diff(t, sc), _diff(t, ce)])
    columns = ["Dataset", "imratio", "CE", "AUC-M from scratch", "CE → AUC-M (fresh head)"]
    columns += ["two-stage − scratch", "two-stage − CE"]
    return [
        "### Two-stage vs one-stage (paper §3.4)\n",
        table(body, columns),
        f"\nSplit of one budget, the same total epochs for all three: the two-stage run spends "
        f"{a.two_stage_ce_fraction:.0%} of them on CE (SGD) and the rest on AUC-M (PESG, the tuned "
        f"γ, m and lr of AUC-M{f', lr {a.stage2_lr:g}' if a.stage2_lr else ''}) after "
        "re-initialising the last linear layer; each stage has its own stagewise decays. "
        "Differences are paired per seed.\n",
        *two_stage_paper_rows(res),
        *compositional_section(res),
    ]


def _robustness(res: StudyResults) -> list[str]:
    a = res.cfg.ablations
    sm = a.small_margin
    columns = ["Dataset", "training data", "AUC-S", "AUC-M (tuned m)"]
    columns += [f"AUC-M (m = {sm:g})"] if sm else []
    columns += ["AUC-M − AUC-S"] + ([f"AUC-M (m = {sm:g}) − AUC-S"] if sm else [])
    body = []
    for name, r in res.ablation_rows("robust"):
        for v in ("clean", "easy", "noisy"):
            if v == "clean":
                s_, m_ = res.main_tests(name, r, "auc_s"), res.main_tests(name, r, "auc_m")
            else:
                s_ = res.ablation_tests(f"robust/{name}/{r}/{v}/auc_s")
                m_ = res.ablation_tests(f"robust/{name}/{r}/{v}/auc_m")
            small = res.ablation_tests(f"robust/{name}/{r}/{v}/auc_m_small") if sm else None
            row = [f"{name} ({_ratio(res, name, r)})", v if v == "clean" else "+" + v, _cell(s_)]
            row.append(f"{_cell(m_)} (m = {res.tuned_margin(name, r):g})")
            row += [_cell(small)] if sm else []
            row += [_diff(m_, s_)] + ([_diff(small, s_)] if sm else [])
            body.append(row)
    return [
        "### Robustness to easy and noisy data (paper §3.2–3.3, appendix N)\n",
        table(body, columns),
        f"\n+easy: {a.easy_frac:.0%} more training rows, duplicates of rows that a pixel-space "
        "logistic regression places on their own side of their class's median score (class ratio "
        f"kept). +noisy: {a.noise_frac:.0%} of the positive labels flipped to negative and as many "
        "negative labels flipped to positive (class ratio kept). Validation and test sets clean; "
        "γ as tuned on the clean data.\n",
    ]


def _alpha_projection(res: StudyResults) -> list[str]:
    small_margin = res.cfg.ablations.small_margin
    body, pairs = [], []
    for name, r in res.ablation_rows("alpha"):
        for v in ("clean", "easy"):
            if f"alpha/{name}/{r}/{v}/noproj" not in res.abl_jobs:
                continue
            label = v if v == "clean" else "+easy"
            where = f"{name} ({_ratio(res, name, r)})"
            w = (
                res.main_tests(name, r, "auc_m")
                if v == "clean"
                else res.ablation_tests(f"robust/{name}/{r}/easy/auc_m")
            )
            wo = res.ablation_tests(f"alpha/{name}/{r}/{v}/noproj")
            pairs.append((w, wo))
            m = f"{res.tuned_margin(name, r):g} (tuned)"
            body.append([where, label, m, _cell(w), _cell(wo), _diff(w, wo)])
            if f"alpha/{name}/{r}/{v}/small" in res.abl_jobs:
                w = res.ablation_tests(f"alpha/{name}/{r}/{v}/small")
                wo = res.ablation_tests(f"alpha/{name}/{r}/{v}/small_noproj")
                pairs.append((w, wo))
                body.append([where, label, f"{small_margin:g}", _cell(w), _cell(wo), _diff(w, wo)])
    never_bound = bool(pairs) and all(
        w is not None and wo is not None and np.array_equal(w, wo) for w, wo in pairs
    )
    columns = ["Dataset", "training data", "m", "with α ≥ 0", "α unconstrained", "with − without"]
    return [
        "### α ≥ 0: AUC-M with and without the projection\n",
        table(body, columns),
        "\nThe optimal α = m − E[h|y=1] + E[h|y=0] is negative only where the class-mean gap of "
        "the scores exceeds m, so the projection can only act there."
        + (
            " Here every row is identical run for run with and without it: α never reached 0 in "
            "any of these runs, so the projection never acted, whatever the margin."
            if never_bound
            else ""
        )
        + "\n",
    ]


def _switch_table(res: StudyResults, prefix: str, row: str, swap: bool) -> list[list[str]]:
    """Rows of AUC-M as configured against AUC-M with one switch flipped (``swap``: the
    config already has the other setting, so the columns trade places)."""
    body = []
    for name, r in res.ablation_rows(prefix):
        x, y = res.main_tests(name, r, "auc_m"), res.ablation_tests(f"{prefix}/{name}/{r}/{row}")
        if swap:
            x, y = y, x
        body.append([name, _ratio(res, name, r), _cell(x), _cell(y), _diff(x, y)])
    return body


def _dual_step(res: StudyResults) -> list[str]:
    body = _switch_table(res, "dual", "paper", res.cfg.train.dual == "paper")
    columns = ["Dataset", "imratio", "`dual='normalized'`", "`dual='paper'`", "normalized − paper"]
    return [
        "### PESG dual step: normalized vs the paper's\n",
        table(body, columns),
        "\nThe docstring of `deepauc.optim` cites a measurement on an MLP without momentum; "
        "`bench/dual_step.py` re-measures that exact setting (`reports/study_dual_step.md`).\n",
    ]


def _libauc_intro(res: StudyResults) -> str:
    tr = res.cfg.train
    return (
        "Same data, network, seeds, initial weights, batches, epochs and hyper-parameters (tuned lr, "
        "γ, m; weight decay, decays). LibAUC is fed its own scores as its examples do: under BSN "
        f"(here `{tr.bsn}`) its l2 head, the logits divided by their norm over the batch, without "
        "BSN the sigmoid. LibAUC is called as "
        "its documentation shows: `AUCMLoss(margin, imratio)` then `loss(scores, labels)`, "
        "`PESG(model.parameters(), loss_fn=..., momentum=...)`, `update_regularizer(decay_factor)` at "
        f"each decay. Momentum: ours {tr.pesg_momentum:g} (heavy-ball: buf ← μ·buf + d), LibAUC "
        f"{tr.libauc_or_pesg_momentum:g} (its "
        "`momentum`, an EMA that weights the newest direction by μ: buf ← (1−μ)·buf + μ·d, which "
        "for μ = 0.9 is nearly no momentum). The middle columns are ours with one of LibAUC's design "
        "choices switched on at a time.\n"
    )


def _libauc_table(res: StudyResults, rows: list[tuple[str, float]]) -> str:
    body = []
    for name, r in rows:
        ours, lb = res.main_tests(name, r, "auc_m"), res.ablation_tests(f"libauc/{name}/{r}/libauc")
        tweaked = [_cell(res.ablation_tests(f"attr/{name}/{r}/{t}")) for t, _ in ATTRIBUTION_TWEAKS]
        lib_cell = _cell(lb) if lb else "skipped"
        body.append([name, _ratio(res, name, r), _cell(ours), *tweaked, lib_cell, _diff(ours, lb)])
    columns = ["Dataset", "imratio", "ours (AUC-M)", *(title for _, title in ATTRIBUTION_TWEAKS)]
    return table(body, columns + ["LibAUC 2.0.1", "ours − LibAUC"])


def _attribution(res: StudyResults, rows: list[tuple[str, float]]) -> list[str]:
    lines = []
    verdicts = {1: "hurts", -1: "helps", 0: "no difference at the Holm-adjusted level"}
    for name, r in rows:
        ours = res.main_tests(name, r, "auc_m")
        tried = list(ATTRIBUTION_TWEAKS)
        found = paired_calls(
            [(ours, res.ablation_tests(f"attr/{name}/{r}/{t}")) for t, _ in tried],
            res.cfg.report.level,
        )
        effects = [
            f"{title.lstrip('+ ')}: {verdicts[c.sign]} ({-c.diff:+.3f}±{c.sd:.3f}, p {c.p:.3f})"
            for (_, title), c in zip(tried, found)
            if c is not None
        ]
        if effects:
            lines.append(f"- {name}, ours with LibAUC's choice − ours: " + "; ".join(effects) + ".")
    if lines:
        lines.append("\n(p: paired t over seeds, Holm-adjusted over the data set's choices.)")
    return lines


def _no_momentum(res: StudyResults) -> list[str]:
    rows = res.ablation_rows("nomom")
    if not rows:
        return []
    body = []
    for name, r in rows:
        o = res.ablation_tests(f"nomom/{name}/{r}/ours")
        lb = res.ablation_tests(f"nomom/{name}/{r}/libauc")
        body.append([name, _ratio(res, name, r), _cell(o), _cell(lb), _diff(o, lb)])
    columns = ["Dataset", "imratio", "ours (AUC-M, momentum 0)", "LibAUC 2.0.1 (momentum 0)"]
    return [
        "\nWithout momentum for both (PESG as the paper's Algorithm 1):\n",
        table(body, columns + ["ours − LibAUC"]),
    ]


def _libauc(res: StudyResults) -> list[str]:
    rows = _rows_under(res, ("libauc", "attr", "nomom"))
    if not rows:
        return []
    lines = ["### LibAUC side by side\n", _libauc_intro(res), _libauc_table(res, rows), ""]
    return lines + _attribution(res, rows) + _no_momentum(res) + [""]


def _rows_under(res: StudyResults, prefixes: Sequence[str]) -> list[tuple[str, float]]:
    """The (data set, ratio) pairs under any of ``prefixes``, first occurrence kept."""
    return list(dict.fromkeys(row for p in prefixes for row in res.ablation_rows(p)))


def _timing(res: StudyResults) -> list[str]:
    if not res.timing:
        return []
    body = [
        [
            str(t["dataset"]),
            str(t["model"]),
            str(t["batch"]),
            f"{t['auc_m_step_ms']:.2f}",
            f"{t['auc_m_opt_ms']:.3f}",
            f"{t['libauc_step_ms']:.2f}",
            f"{t['libauc_opt_ms']:.3f}",
        ]
        for t in res.timing
    ]
    columns = ["Dataset", "network", "batch", "ours: step ms", "ours: optimiser ms"]
    return [
        "### Time per training step (forward + backward + optimiser step)\n",
        table(body, columns + ["LibAUC: step ms", "LibAUC: optimiser ms"]),
        f"\nMedian over {res.cfg.ablations.timing_steps} steps in one process with {res.cfg.threads} torch "
        "thread(s), measured one optimiser after the other on a shared machine.\n",
    ]


SECTIONS = {
    "two_stage": _two_stage,
    "robust": _robustness,
    "alpha": _alpha_projection,
    "dual": _dual_step,
    "dualgrid": dual_grid_section,
    "bsn": bsn_section,
    "oversample": oversample_section,
    "search": search_section,
}


def ablation_report(res: StudyResults) -> list[str]:
    """The lines of the report's ablation sections, for the ablations that ran."""
    lines = ["## Ablations\n"]
    for prefix, section in SECTIONS.items():
        if res.ablation_rows(prefix):
            lines += section(res)
    lines += _libauc(res) + _timing(res)
    lines += [f"- {note}" for note in res.abl_notes]
    if res.abl_notes:
        lines.append("")
    return lines
