"""Test AUC of the paper's two-stage run at three points: after CE, with the fresh head, after AUC-M.

Re-runs the study's ``two_stage_paper`` jobs of one data set and ratio (default ELPV at
its lowest ratio, where the study's two-stage rows fall below 0.5) with the parameters the
study chose on validation, read from its runs CSV, and scores the test set after the CE
run, right after the classifier layer is re-initialised, and after the AUC-M stage, at
the study's ``finetune_lr_factor`` and at the AUC-M stage's full tuned lr.

Usage: ``python bench/fresh_head.py [--dataset elpv] [--imratio 0.01]
[--out reports/study_fresh_head.md]`` (needs ``make study`` first).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import pandas as pd
import torch

from deepauc.io import write_text
from deepauc.markdown import markdown_table
from deepauc.metrics import roc_auc
from deepauc.research.study.config import load_study_config
from deepauc.research.study.jobs import Job
from deepauc.research.study.training import (
    finetune_epochs,
    predict_logits,
    prepare_run,
    train_then_finetune,
)


def _chosen(runs_csv: Path, dataset: str, imratio: float) -> dict:
    runs = pd.read_csv(runs_csv)
    rows = runs[
        (runs.dataset == dataset)
        & (runs.requested_imratio == imratio)
        & (runs.method == "two_stage_paper")
        & (runs.variant == "clean")
    ]
    if rows.empty:
        raise SystemExit(f"{runs_csv}: no two_stage_paper run of {dataset} at {imratio}")
    return json.loads(rows.params.iloc[0])


def _one_seed(cfg, spec, seed: int, imratio: float, params: dict, lr_factor: float) -> dict:
    job = Job(spec.name, imratio, seed, "two_stage_paper", tuple(sorted(params.items())))
    abl = dataclasses.replace(cfg.ablations, finetune_lr_factor=lr_factor)
    run = prepare_run(job, spec, cfg.train, abl, cfg.cache_dir)
    aucs: dict = {"seed": seed}

    def record(point: str) -> None:
        aucs[point] = roc_auc(
            run.ctx.data["y_test"].numpy(),
            predict_logits(run.model, run.ctx.data["x_test"]),
            undefined="nan",
        )

    train_then_finetune(job, run.model, run.ctx, observe=record)
    record("after AUC-M")
    return aucs


def measure(config: str, runs_csv: Path, dataset: str, imratio: float, log=print) -> str:
    torch.set_num_threads(1)
    cfg = load_study_config(config)
    spec = {d.name: d for d in cfg.datasets}[dataset]
    params = _chosen(runs_csv, dataset, imratio)
    sections = []
    for factor in (cfg.ablations.finetune_lr_factor, 1.0):
        rows = [_one_seed(cfg, spec, s, imratio, params, factor) for s in cfg.seeds]
        for r in rows:
            log(
                f"lr × {factor:g}: "
                + "  ".join(f"{k} {v:.3f}" for k, v in r.items() if k != "seed")
            )
        table = pd.DataFrame(rows).round(3)
        lr2 = params["lr"] * factor
        sections += [f"### AUC-M stage at lr {lr2:g} ({factor:g} × the tuned {params['lr']:g})", ""]
        sections += [markdown_table(table), ""]
    head = [
        f"# Two-stage on {dataset} at {imratio:g}: the fresh head",
        "",
        f"`python bench/fresh_head.py --dataset {dataset} --imratio {imratio:g}`: the study's "
        f"two-stage runs (`{config}`, parameters chosen on validation: {json.dumps(params)}), "
        "test AUC after the CE run, after re-initialising the last linear layer, and after "
        f"the {finetune_epochs(spec, cfg.ablations)}-epoch AUC-M stage, per seed.",
        "",
    ]
    return "\n".join(head + sections)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/study/default.yaml")
    ap.add_argument("--runs", type=Path, default=Path("reports/study_runs.csv"))
    ap.add_argument("--dataset", default="elpv")
    ap.add_argument("--imratio", type=float, default=0.01)
    ap.add_argument("--out", type=Path, default=Path("reports/study_fresh_head.md"))
    args = ap.parse_args(argv)
    text = measure(args.config, args.runs, args.dataset, args.imratio)
    write_text(text + "\n", args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
