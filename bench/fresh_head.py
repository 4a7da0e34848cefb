"""Test AUC of the paper's two-stage run after CE, with the fresh head and after AUC-M, for
each way of drawing the AUC stage's head, all from the same CE stage of each seed.

Re-runs the study's ``two_stage_paper`` job of one data set and ratio with the parameters the
study chose on validation (read from its runs CSV: the fresh-head row with the best mean
validation AUC over its lr factors), once per stage-2 head: ``torch_default`` (``nn.Linear``'s
own uniform draw, bias included), ``pipeline`` (N(0, 0.01²), zero bias) and
``ce_direction``. The CE stage comes from the study's snapshot where one exists.

Usage: ``python bench/fresh_head.py [--config configs/study/full.yaml] [--dataset elpv]
[--imratio 0.05] [--params JSON] [--out PATH]`` (after the study has run); the report goes to
``reports/study_fresh_head_<dataset>_<imratio>.md`` unless ``--out`` names another file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import torch

from deepauc.io import write_text
from deepauc.markdown import markdown_table
from deepauc.metrics import roc_auc
from deepauc.research.study.config import load_study_config
from deepauc.research.study.evaluation import predict_logits
from deepauc.research.study.jobs import Job
from deepauc.research.study.training import finetune_epochs, prepare_run, train_then_finetune

HEADS = {"torch_default": "head_torch_default", "pipeline": "", "ce_direction": "head_ce_direction"}
POINTS = ("after CE", "fresh head", "after AUC-M")


def chosen_params(
    runs_csv: Path, dataset: str, imratio: float, tune_seeds: list[int], factors: list[float]
) -> dict:
    """The fresh-head two-stage parameters the study chose: the best mean validation AUC over
    the data set's tuning seeds, once the study has run every stage-2 lr factor on each."""
    runs = pd.read_csv(runs_csv, keep_default_na=False)
    rows = runs[
        (runs.dataset == dataset)
        & (runs.requested_imratio == imratio)
        & (runs.method == "two_stage_paper")
        & (runs.variant == "clean")
        & (runs.tweak == "")
        & runs.seed.isin(tune_seeds)
    ]
    if rows.empty:
        raise SystemExit(f"{runs_csv}: no two_stage_paper run of {dataset} at {imratio:g}")
    # a choice among the candidates run so far would be a different, unstated choice
    done = {(s, json.loads(p).get("lr2_factor")) for s, p in zip(rows.seed, rows.params)}
    missing = sorted(
        f"seed {s} factor {f}" for s in tune_seeds for f in factors or [None] if (s, f) not in done
    )
    if missing:
        raise SystemExit(
            f"{runs_csv}: the study has not finished the two_stage_paper runs of {dataset} at "
            f"{imratio:g} ({', '.join(missing)}); run it first or pass --params"
        )
    best = rows.groupby("params").val_auc.mean().idxmax()
    return json.loads(best)


def one_seed(cfg, spec, seed: int, imratio: float, params: dict, tweak: str) -> dict:
    prm = tuple(sorted(params.items()))
    job = Job(spec.name, imratio, seed, "two_stage_paper", prm, tweak=tweak)
    run = prepare_run(job, spec, cfg.train, cfg.ablations, cfg.cache_dir)
    aucs: dict = {"seed": seed}

    def record(point: str) -> None:
        scores = predict_logits(run.model, run.ctx.data["x_test"])
        aucs[point] = roc_auc(run.ctx.data["y_test"].numpy(), scores, undefined="nan")

    train_then_finetune(job, run.model, run.ctx, observe=lambda p: record(_point(p)))
    record("after AUC-M")
    return aucs


def _point(observed: str) -> str:
    return {"CE": "after CE", "fresh head": "fresh head"}[observed]


def measure(
    config: str, runs_csv: Path, dataset: str, imratio: float, given: dict | None = None, log=print
) -> str:
    torch.set_num_threads(1)
    cfg = load_study_config(config)
    spec = {d.name: d for d in cfg.datasets}[dataset]
    tune_seeds = spec.tune_seeds or cfg.seeds[:1]
    factors = cfg.ablations.finetune_lr_factors
    params = given or chosen_params(runs_csv, dataset, imratio, tune_seeds, factors)
    origin = "as given" if given else "chosen on validation"
    per_seed, summary = [], []
    for head, tweak in HEADS.items():
        rows = [one_seed(cfg, spec, s, imratio, params, tweak) for s in cfg.seeds]
        for r in rows:
            log(f"{head} seed {r['seed']}: " + "  ".join(f"{p} {r[p]:.3f}" for p in POINTS))
        table = pd.DataFrame(rows)
        per_seed += [{"head": head, **r} for r in rows]
        summary.append(
            {"stage-2 head": head}
            | {p: f"{table[p].mean():.3f}±{table[p].std(ddof=1):.3f}" for p in POINTS}
            | {"after AUC-M, lowest seed": f"{table['after AUC-M'].min():.3f}"}
        )
    head = [
        f"# Two-stage on {dataset} at {imratio:g}: the stage-2 head",
        "",
        f"`python bench/fresh_head.py --config {config} --dataset {dataset} --imratio "
        f"{imratio:g}{_params_flag(given)}`: the study's two-stage job (parameters {origin}: "
        f"{json.dumps(params)}), test AUC after the CE run, after drawing the AUC stage's head, "
        f"and after the {finetune_epochs(spec, cfg.ablations)}-epoch AUC-M stage; the same CE "
        f"stage for every head. Mean ± std over seeds {cfg.seeds}.",
        "",
        markdown_table(pd.DataFrame(summary)),
        "",
        "Per seed:",
        "",
        markdown_table(pd.DataFrame(per_seed).round(3)),
    ]
    return "\n".join(head)


def _params_flag(given: dict | None) -> str:
    return f" --params '{json.dumps(given)}'" if given else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/study/full.yaml")
    ap.add_argument("--runs", type=Path, default=None, help="default: the config's runs CSV")
    ap.add_argument("--dataset", default="elpv")
    ap.add_argument("--imratio", type=float, default=0.05)
    ap.add_argument(
        "--params",
        type=json.loads,
        default=None,
        help="the job's parameters as JSON, in place "
        "of the study's choice (e.g. from its report, when its runs file is gone)",
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    runs = args.runs or load_study_config(args.config).runs_csv
    text = measure(args.config, runs, args.dataset, args.imratio, args.params)
    out = args.out or Path(f"reports/study_fresh_head_{args.dataset}_{args.imratio:g}.md")
    write_text(text + "\n", out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
