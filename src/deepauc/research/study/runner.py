"""``deepauc study``: CE, focal, AUC-S and AUC-M on imbalanced benchmarks (paper §4.1, Table 1).

For every data set and imbalance ratio of the config, the same network is trained with each
loss over several seeds (each seed drops different positives), and the mean ± std test AUC
lands in a markdown table laid out like the paper's Table 1 (``<out_dir>/<name>.md``).
Hyper-parameters come from the grids (learning rate for every loss; focal α, γ; PESG's epoch
decay γ; AUC-M's margin m), chosen by the mean validation AUC over ``tune_seeds``; the
reported numbers are test AUCs at the end of training, without early stopping.

CE and focal train by SGD with momentum, AUC-S and AUC-M by PESG with batch score
normalisation as ``train.batch_score_norm`` says (none, logits or sigmoid); the learning rate
decays at the fractions ``train.decay_at`` of the epochs, and for PESG each decay ends a stage
(v_ref ← the stage's average). ``train.pos_fraction`` fixes the positives' share of every
batch. Networks: the paper's ResNet20 with ELU, a small ELU CNN or an ELU MLP.

Ablations, with the tuned hyper-parameters: two-stage (CE, then AUC-M with a fresh head) as a
split of one budget and as the paper runs it (a whole CE run, then AUC-M at a smaller lr,
against CE continued); BSN none / logits / sigmoid on every data set at its lowest ratio;
positive oversampling; the search settings (label noise, fewer positives, more epochs: CE
against AUC-M); and, at the ratio nearest ``ablations.imratio``, robustness to appended easy
rows and to flipped labels, PESG's projection α ≥ 0 on and off, the normalized against the
paper's dual step, and LibAUC 2.0.1 side by side (only when installed).

``configs/study/default.yaml`` and ``full.yaml`` turn on, each behind its key: heads drawn by the
pipeline's factory (``train.head_init``), every epoch evaluated (``train.eval_epochs``), the
dual-step grid, a two-stage row with the AUC head along the CE head's direction, a one-stage
compositional row, a stage-2 lr tuned on validation (``ablations.*``), equal candidates per
loss (``grids.equal_candidates``, ``grids.lr_by_loss``) and paired t tests with Holm's
correction and a non-inferiority verdict (``report``).

Jobs run in ``workers`` processes of ``threads`` torch threads; every finished run is
appended to the runs CSV (``runs``, by default ``<out_dir>/<name>_runs.csv``), and a rerun with
``resume`` reuses the runs there.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from deepauc.config import add_config_arguments
from deepauc.io import write_text
from deepauc.research.datasets import DatasetUnavailable, load_benchmark
from deepauc.research.study.config import DatasetSpec, StudyConfig, load_study_config
from deepauc.research.study.jobs import (
    Job,
    ablation_jobs,
    final_jobs,
    loss_grid,
    tuning_jobs,
)
from deepauc.research.study.report import study_report
from deepauc.research.study.results import StudyResults
from deepauc.research.study.runs import Runner
from deepauc.research.study.training import step_timing

__all__ = ["add_arguments", "run", "run_study"]


def _available_datasets(
    cfg: StudyConfig, log: Callable[[str], None]
) -> tuple[list[DatasetSpec], dict[str, str]]:
    """The data sets that load (filling their cache files) and why the others were skipped."""
    available, skipped = [], {}
    for spec in cfg.datasets:
        try:
            data = load_benchmark(
                spec.name, root=spec.root, image_size=spec.image_size, cache_dir=cfg.cache_dir
            )
        except DatasetUnavailable as err:
            if cfg.on_missing == "error":
                raise
            skipped[spec.name] = str(err)
            log(f"skipping {spec.name}: {err}")
            continue
        available.append(spec)
        log(
            f"{spec.name}: {len(data.y_train)} train / {len(data.y_test)} test images of shape "
            f"{tuple(data.x_train.shape[1:])}, {data.num_classes} classes"
        )
        del data
    if not available:
        raise DatasetUnavailable(
            "no data set of the study is available: " + "; ".join(skipped.values())
        )
    return available, skipped


def _choose(
    cfg: StudyConfig,
    available: list[DatasetSpec],
    runner: Runner,
    tune_jobs: dict[tuple, dict[tuple, list[Job]]],
) -> dict[tuple, tuple]:
    """Per (data set, ratio, loss), and per tuned BSN setting: the candidate with the best mean
    validation AUC (the first candidate where there is no tuning)."""
    chosen: dict[tuple, tuple] = {}
    for spec in available:
        for r in spec.imratios:
            for loss in cfg.losses:
                chosen[spec.name, r, loss] = loss_grid(cfg, spec, loss)[0]
    for key, cands in tune_jobs.items():
        scores = {prm: runner.mean_val_auc(jobs) for prm, jobs in cands.items()}
        chosen[key] = max(scores, key=lambda prm: scores[prm])
    return chosen


def run_study(cfg: StudyConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole study; writes ``<out_dir>/<name>.md`` and the runs CSV. Returns a summary."""
    t_start = time.perf_counter()
    out_dir = Path(cfg.out_dir)
    runs_csv = cfg.runs_csv
    torch.set_num_threads(cfg.threads)
    available, skipped = _available_datasets(cfg, log)
    runner = Runner(cfg, runs_csv, log)
    try:
        tune_jobs = tuning_jobs(cfg, available)
        runner.run([j for d in tune_jobs.values() for js in d.values() for j in js], "tuning")
        chosen = _choose(cfg, available, runner, tune_jobs)
        final = final_jobs(cfg, available, chosen)
        abl_jobs, abl_notes = ablation_jobs(cfg, available, chosen)
        runner.run(
            list(final.values()) + [j for js in abl_jobs.values() for j in js],
            "final runs and ablations",
        )
    finally:
        runner.close()
    timing = step_timing(cfg, available, chosen) if cfg.ablations.libauc else None
    wall = time.perf_counter() - t_start
    results = StudyResults(
        cfg, available, skipped, runner, final, chosen, tune_jobs, abl_jobs, abl_notes, timing
    )
    md_path = write_text(study_report(results, wall), out_dir / f"{cfg.name}.md")
    log(f"wrote {md_path} and {runs_csv} ({wall / 60:.1f} min)")
    return {"report": md_path, "runs": runs_csv, "wall_s": wall, "chosen": chosen}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``deepauc study`` flags: the config, ``--set`` overrides, workers, quiet."""
    add_config_arguments(parser)
    parser.add_argument(
        "--workers", type=int, default=None, help="override the config's worker processes"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final line")


def _print_unless_quiet(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run ``deepauc study`` with the parsed flags; 0 on success."""
    overrides = list(args.overrides)
    if args.workers is not None:
        overrides.append(f"workers={args.workers}")
    cfg = load_study_config(args.config, overrides)
    out = run_study(cfg, log=functools.partial(_print_unless_quiet, args.quiet))
    if args.quiet:
        print(out["report"])
    return 0
