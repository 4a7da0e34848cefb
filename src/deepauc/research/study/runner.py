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

Jobs run in ``workers`` processes of ``threads`` torch threads; every finished run is
appended to ``<out_dir>/<name>_runs.csv``, and a rerun with ``resume`` reuses the runs there.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import functools
import hashlib
import json
import math
import multiprocessing as mp
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from deepauc.config import add_config_arguments
from deepauc.io import write_csv, write_text
from deepauc.research.datasets import DatasetUnavailable, load_benchmark
from deepauc.research.study.config import (
    AblationSpec,
    DatasetSpec,
    StudyConfig,
    TrainSpec,
    load_study_config,
)
from deepauc.research.study.jobs import (
    Job,
    ablation_jobs,
    final_jobs,
    loss_grid,
    tuning_jobs,
)
from deepauc.research.study.report import study_report
from deepauc.research.study.results import StudyResults
from deepauc.research.study.training import run_job, step_timing

__all__ = ["Runner", "add_arguments", "job_key", "run", "run_study"]


def _spec_hash(spec: DatasetSpec, tspec: TrainSpec) -> str:
    """What a run of ``spec`` depends on (not which runs the study asks for: grids, seeds)."""
    d = dataclasses.asdict(spec)
    for k in ("imratios", "tune_seeds", "grids"):
        d.pop(k)
    blob = json.dumps([d, dataclasses.asdict(tspec)], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def job_key(job: Job, spec_hash: str, abl: AblationSpec) -> str:
    """The cache key of a run: the job, its data set's hash and the ablation knobs it uses."""
    extra: list[float | None] = []
    if job.variant == "easy":
        extra.append(abl.easy_frac)
    elif job.variant == "noisy":
        extra.append(abl.noise_frac)
    if job.method == "two_stage":
        extra += [abl.two_stage_ce_fraction, abl.stage2_lr]
    elif job.method in ("two_stage_paper", "ce_continued"):
        extra += [abl.finetune_epochs_fraction, abl.finetune_lr_factor]
    return json.dumps(
        [
            job.dataset,
            job.imratio,
            job.seed,
            job.method,
            list(job.params),
            job.variant,
            job.tweak,
            list(job.setting),
            spec_hash,
            *extra,
        ]
    )


_WORKER: dict[str, Any] = {}


def _worker_init(cfg: StudyConfig) -> None:
    torch.set_num_threads(cfg.threads)
    _WORKER["cfg"] = cfg
    _WORKER["specs"] = {d.name: d for d in cfg.datasets}


def _worker_run(job: Job) -> dict:
    cfg: StudyConfig = _WORKER["cfg"]
    return run_job(job, _WORKER["specs"][job.dataset], cfg.train, cfg.ablations, cfg.cache_dir)


class Runner:
    """Runs jobs (in a process pool when ``workers > 1``), caching rows by key in the runs CSV."""

    def __init__(self, cfg: StudyConfig, runs_csv: Path, log: Callable[[str], None]) -> None:
        self.cfg, self.runs_csv, self.log = cfg, runs_csv, log
        self.specs = {d.name: d for d in cfg.datasets}
        self.hashes = {d.name: _spec_hash(d, cfg.train) for d in cfg.datasets}
        self.rows: dict[str, dict] = {}
        if cfg.resume and runs_csv.is_file():
            for row in pd.read_csv(runs_csv, keep_default_na=True).to_dict("records"):
                row["tweak"] = "" if not isinstance(row.get("tweak"), str) else row["tweak"]
                row["setting"] = row["setting"] if isinstance(row.get("setting"), str) else "{}"
                self.rows[str(row["key"])] = row
            if self.rows:
                log(f"resume: {len(self.rows)} runs already in {runs_csv}")
        self._pool: cf.ProcessPoolExecutor | None = None
        self.trained: set[str] = set()  # keys trained by this invocation
        self.used: set[str] = set()  # keys the study asked for

    def key(self, job: Job) -> str:
        return job_key(job, self.hashes[job.dataset], self.cfg.ablations)

    def result(self, job: Job) -> dict:
        return self.rows[self.key(job)]

    def test_aucs(self, jobs: list[Job]) -> list[float]:
        return [float(self.result(j)["test_auc"]) for j in jobs]

    def mean_val_auc(self, jobs: list[Job]) -> float:
        """Mean finite validation AUC of ``jobs`` (-inf when none is finite)."""
        v = np.array([self.result(j)["val_auc"] for j in jobs], float)
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else -math.inf

    def _save(self) -> None:
        write_csv(pd.DataFrame(list(self.rows.values())), self.runs_csv)

    def _cost(self, job: Job) -> float:
        s = self.specs[job.dataset]
        side = s.image_size or {"digits": 8, "fashion_mnist": 28}.get(s.name, 32)
        epochs = job.option("epochs", s.epochs)
        if job.method in ("two_stage_paper", "ce_continued"):
            epochs *= 1 + self.cfg.ablations.finetune_epochs_fraction
        return epochs * side**2 * (60 if s.name == "fashion_mnist" else 1)

    def run(self, jobs: list[Job], label: str) -> None:
        """Train the jobs not in the cache yet (each key once), longest first."""
        todo, seen = [], set()
        for j in jobs:
            k = self.key(j)
            self.used.add(k)
            if k not in self.rows and k not in seen:
                seen.add(k)
                todo.append(j)
        if not todo:
            return
        todo.sort(key=self._cost, reverse=True)  # longest first: the pool ends evenly
        self.log(f"{label}: {len(todo)} runs ({len(jobs) - len(todo)} cached)")
        t0 = time.perf_counter()
        if self.cfg.workers == 1:
            _worker_init(self.cfg)
            self._collect(((j, _worker_run(j)) for j in todo), len(todo), t0)
            return
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(
                self.cfg.workers,
                mp_context=mp.get_context("spawn"),
                initializer=_worker_init,
                initargs=(self.cfg,),
            )
        futs = {self._pool.submit(_worker_run, j): j for j in todo}
        self._collect(((futs[f], f.result()) for f in cf.as_completed(futs)), len(todo), t0)

    def _collect(self, results: Iterable[tuple[Job, dict]], total: int, t0: float) -> None:
        for i, (job, row) in enumerate(results, 1):
            row["key"] = self.key(job)
            self.rows[row["key"]] = row
            self.trained.add(row["key"])
            self._save()
            el = time.perf_counter() - t0
            self.log(
                f"  [{i}/{total}] {job.dataset} r={job.imratio:g} s={job.seed} {job.method}"
                f"{'/' + job.variant if job.variant != 'clean' else ''}{'/' + job.tweak if job.tweak else ''}"
                f"{dict(job.setting) if job.setting else ''} "
                f"{dict(job.params)} val={row['val_auc']:.4f} test={row['test_auc']:.4f} "
                f"({row['train_s']:.1f}s; {el:.0f}s elapsed, ~{el / i * (total - i):.0f}s left)"
            )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


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
    """Run the whole study; writes ``<out_dir>/<name>.md`` and ``<name>_runs.csv``. Returns a summary."""
    t_start = time.perf_counter()
    out_dir = Path(cfg.out_dir)
    runs_csv = out_dir / f"{cfg.name}_runs.csv"
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
