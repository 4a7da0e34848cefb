"""The report's sections on fair comparisons: two-stage as the paper runs it, BSN settings,
positive oversampling, and the search for settings where AUC-M beats CE."""

from __future__ import annotations

import json
from collections.abc import Sequence

from deepauc.research.study.config import BSN_SETTINGS
from deepauc.research.study.results import (
    Pair,
    PairedCall,
    StudyResults,
    fmt_aucs,
    paired_calls,
    table,
)

__all__ = ["bsn_section", "calls", "oversample_section", "search_section", "two_stage_paper_rows"]

CALLS = {1: "win", -1: "loss", 0: "tie"}


def calls(pairs: Sequence[Pair], level: float) -> list[str]:
    """Each ``a − b`` of one family, paired per seed, with its Holm-adjusted paired t p-value and
    call: win / loss where that p is at most ``level``, else tie."""
    return [_call_text(c) for c in paired_calls(pairs, level)]


def _call_text(c: PairedCall | None) -> str:
    return "—" if c is None else c.text(CALLS[c.sign])


def _cell(v: Sequence[float] | None) -> str:
    return fmt_aucs(v) if v is not None else "—"


def _ratio(res: StudyResults, name: str, r: float) -> str:
    return f"{res.achieved_ratio(name, r):.1%}"


def _chosen_text(prm: tuple) -> str:
    d = dict(prm)
    bits = [f"lr {d['lr']:g}"] if "lr" in d else []
    bits += [f"γ 1/{round(1 / d['epoch_decay'])}"] if "epoch_decay" in d else []
    bits += [f"m {d['margin']:g}"] if "margin" in d else []
    return ", ".join(bits)


def two_stage_paper_rows(res: StudyResults) -> list[str]:
    """The table of the paper's two-stage against CE continued, and how both were run."""
    a, body = res.cfg.ablations, []
    direction = a.head_direction and a.two_stage_paper
    for name, r in res.ablation_rows("two_stage"):
        paper = res.ablation_tests(f"two_stage/{name}/{r}/paper")
        if paper is None:
            continue
        cont = res.ablation_tests(f"two_stage/{name}/{r}/ce_continued")
        ce, scratch = res.main_tests(name, r, "ce"), res.main_tests(name, r, "auc_m")
        row = [name, _ratio(res, name, r), _cell(ce), _cell(cont), _cell(paper)]
        pairs: list[Pair] = [(paper, cont), (paper, scratch)]
        if direction:
            along = res.ablation_tests(f"two_stage/{name}/{r}/paper_ce_direction")
            pairs.append((along, paper))
        texts = calls(pairs, res.cfg.report.level)
        row += texts[:2] + ([_cell(along), texts[2]] if direction else [])
        body.append(row)
    if not body:
        return []
    columns = ["Dataset", "imratio", "CE", "CE + CE continued", "CE + AUC-M (fresh head)"]
    columns += ["two-stage − CE continued", "two-stage − AUC-M from scratch"]
    if direction:
        columns += ["CE + AUC-M (CE-direction head)", "CE-direction − fresh head"]
    return [
        "As the paper and the reference run it: the whole CE run of the row (its tuned lr and "
        f"schedule), then {a.finetune_epochs_fraction:g} × the data set's epochs more, at "
        f"{_stage2_lr_text(res)} × the stage's tuned lr with the same stagewise decays: "
        "AUC-M by PESG over all layers with a freshly initialised last layer (the tuned γ, m of "
        "AUC-M), against CE continued for the same extra epochs with its head kept.\n",
        table(body, columns),
        "\nEach difference: mean ± std over seeds of the per-seed difference, its paired t "
        "p-value Holm-adjusted over the row's comparisons, and the call (win / loss where that "
        f"p ≤ {res.cfg.report.level:g}, else tie).\n",
    ]


def _stage2_lr_text(res: StudyResults) -> str:
    """The second stage's lr factor: fixed, or each row's choice on validation."""
    a = res.cfg.ablations
    if not a.finetune_lr_factors:
        return f"{a.finetune_lr_factor:g}"
    picks = []
    for name, r in res.ablation_rows("two_stage"):
        for row in ("paper", "ce_continued"):
            key = res.chosen_key(f"two_stage/{name}/{r}/{row}")
            if key is not None:
                picks.append(f"{name} {_ratio(res, name, r)} {row}: {key.rsplit('~', 1)[-1]}")
    return (
        f"a factor chosen per row on validation among {a.finetune_lr_factors} ({'; '.join(picks)})"
    )


def bsn_section(res: StudyResults) -> list[str]:
    """AUC-M under each BSN setting at every data set's lowest ratio."""
    rows = res.ablation_rows("bsn")
    if not rows:
        return []
    main = res.cfg.train.bsn
    body = []
    for name, r in rows:
        tests = {s: res.ablation_tests(f"bsn/{name}/{r}/{s}") for s in BSN_SETTINGS}
        cells = []
        for s in BSN_SETTINGS:
            prm = res.abl_jobs[f"bsn/{name}/{r}/{s}"][0].params
            cells.append(f"{_cell(tests[s])} ({_chosen_text(prm)})")
        others = calls(
            [(tests[main], tests[s]) for s in BSN_SETTINGS if s != main], res.cfg.report.level
        )
        body.append([name, _ratio(res, name, r), *cells, *others])
    columns = ["Dataset", "imratio", *(f"BSN {s}" for s in BSN_SETTINGS)]
    columns += [f"{main} − {s}" for s in BSN_SETTINGS if s != main]
    tuned = res.cfg.ablations.bsn_tune
    return [
        "### Batch score normalisation (paper appendix M)\n",
        table(body, columns),
        "\nAUC-M with the scores h fed to the loss: none = the sigmoid of the logit; logits = the "
        "logits divided by their norm over the batch (the reference's BSN); sigmoid = the "
        "sigmoid scores divided by their norm over the batch. "
        + (
            "Each setting has its own lr, γ and m, tuned on validation over the AUC-M grid."
            if tuned
            else "Every setting uses the hyper-parameters tuned for the study's setting."
        )
        + f" The study's own setting is `{main}`; the last columns are its paired differences "
        f"(p Holm-adjusted over the row's two; win / loss where p ≤ {res.cfg.report.level:g}).\n",
    ]


def oversample_section(res: StudyResults) -> list[str]:
    """CE and AUC-M with and without a fixed share of positives in every batch."""
    rows = res.ablation_rows("oversample")
    if not rows:
        return []
    share = res.cfg.ablations.oversample or 0.0
    body = []
    for name, r in rows:
        for loss in ("ce", "auc_m"):
            over = res.ablation_tests(f"oversample/{name}/{r}/{loss}")
            if over is None:
                continue
            plain = res.main_tests(name, r, loss)
            title = {"ce": "CE", "auc_m": "AUC-M"}[loss]
            body.append([name, _ratio(res, name, r), title, _cell(plain), _cell(over)])
            body[-1] += calls([(over, plain)], res.cfg.report.level)
    columns = ["Dataset", "imratio", "loss", "plain batches", f"{share:.0%} positives per batch"]
    return [
        "### Positive oversampling\n",
        table(body, columns + ["oversampled − plain"]),
        f"\nEvery batch holds {share:.0%} positives, drawn again from the training positives as "
        "often as needed; an epoch has as many steps as without oversampling. p of the AUC "
        "loss is the batches' share of positives. Hyper-parameters as tuned without "
        "oversampling. Last column: paired per seed, with its paired t p-value (one test per "
        f"row; win / loss where p ≤ {res.cfg.report.level:g}).\n",
    ]


def _search_label(res: StudyResults, key: str) -> str:
    job = res.abl_jobs[key][0]
    bits = [f"{job.dataset} at {res.runner.result(job)['imratio']:.1%}"]
    setting = dict(job.setting)
    if "noise_frac" in setting:
        bits.append(f"{setting['noise_frac']:.0%} labels flipped")
    if "min_positives" in setting:
        bits.append(f"min_positives {setting['min_positives']}")
    if "epochs" in setting:
        bits.append(f"{setting['epochs']} epochs")
    return ", ".join(bits)


def search_section(res: StudyResults) -> list[str]:
    """Every search setting: CE, AUC-M at each margin, paired differences with their calls."""
    groups: dict[str, list[str]] = {}
    for key in res.abl_jobs:
        if key.startswith("search/"):
            groups.setdefault(key.rsplit("/", 1)[0], []).append(key)
    if not groups:
        return []
    tested: list[tuple[str, list[float] | None]] = []
    for keys in groups.values():
        ce_key = next((k for k in keys if k.endswith("/ce")), None)
        ce = res.ablation_tests(ce_key) if ce_key else None
        tested += [(k, ce) for k in keys if k != ce_key]
    level = res.cfg.report.level
    found = paired_calls([(res.ablation_tests(k), ce) for k, ce in tested], level)
    tally = {
        word: sum(c is not None and CALLS[c.sign] == word for c in found) for word in CALLS.values()
    }
    body = []
    for (k, base), c in zip(tested, found):
        prm = json.loads(res.runner.result(res.abl_jobs[k][0])["params"])
        m = res.ablation_tests(k)
        body.append(
            [_search_label(res, k), _cell(base), f"m = {prm['margin']:g}", _cell(m), _call_text(c)]
        )
    columns = ["setting", "CE", "AUC-M margin", "AUC-M", "AUC-M − CE"]
    return [
        "### Where does AUC-M beat CE? Every setting tried\n",
        table(body, columns),
        f"\nAUC-M against CE: {tally['win']} win(s), {tally['tie']} tie(s), {tally['loss']} "
        "loss(es) over the rows above. Win / loss: the paired t p-value, Holm-adjusted over "
        f"every row of the table, is at most {level:g}; otherwise tie. Each setting uses the lr (and γ) tuned at "
        "the data set's ratio nearest it; label noise flips that share of the positive training "
        "labels to negative and as many negative ones to positive (validation and test clean); "
        "a lower `min_positives` lets a ratio fall below the data set's floor.\n",
    ]
