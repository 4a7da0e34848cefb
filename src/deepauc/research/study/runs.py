"""The study's finished runs: each run's cache key, the runs CSV they are kept in, and the
worker processes that train the runs not in it yet."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import fcntl
import hashlib
import json
import math
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from deepauc.io import write_csv
from deepauc.processes import arm_parent_death_signal, exit_if_orphaned
from deepauc.research.study.config import AblationSpec, DatasetSpec, StudyConfig, TrainSpec
from deepauc.research.study.jobs import Job
from deepauc.research.study.training import run_job

__all__ = ["Runner", "job_key"]


# training keys added after runs were cached, with the value that trains as before they
# existed: left out of the hash at that value, so the runs already in a runs CSV stay valid
_LATER_TRAIN_KEYS = {"head_init": "torch_default", "eval_epochs": False}


def _spec_hash(spec: DatasetSpec, tspec: TrainSpec) -> str:
    """What a run of ``spec`` depends on (not which runs the study asks for: grids, seeds)."""
    d = dataclasses.asdict(spec)
    for k in ("imratios", "tune_seeds", "grids"):
        d.pop(k)
    t = dataclasses.asdict(tspec)
    for k, same in _LATER_TRAIN_KEYS.items():
        if t[k] == same:
            t.pop(k)
    blob = json.dumps([d, t], sort_keys=True, default=str)
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


def _pool_worker_init(cfg: StudyConfig, parent_pid: int) -> None:
    # a study killed by a signal it cannot catch must not leave its workers training
    arm_parent_death_signal()
    exit_if_orphaned(parent_pid)
    _worker_init(cfg)


def _worker_run(job: Job) -> dict:
    cfg: StudyConfig = _WORKER["cfg"]
    return run_job(job, _WORKER["specs"][job.dataset], cfg.train, cfg.ablations, cfg.cache_dir)


def _lock(runs_csv: Path) -> int:
    """An exclusive lock on ``runs_csv`` for this study: each study rewrites the whole file,
    so a second one writing it at the same time would drop the first one's runs."""
    runs_csv.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{runs_csv}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OSError(
            f"{runs_csv} is in use by another deepauc study: wait for it to end, or give this "
            "one its own file (`runs`)"
        ) from None
    return fd


def _read_rows(runs_csv: Path) -> dict[str, dict]:
    rows = {}
    for row in pd.read_csv(runs_csv, keep_default_na=True).to_dict("records"):
        row["tweak"] = "" if not isinstance(row.get("tweak"), str) else row["tweak"]
        row["setting"] = row["setting"] if isinstance(row.get("setting"), str) else "{}"
        rows[str(row["key"])] = row
    return rows


class Runner:
    """Runs jobs (in a process pool when ``workers > 1``), caching rows by key in the runs CSV."""

    def __init__(self, cfg: StudyConfig, runs_csv: Path, log: Callable[[str], None]) -> None:
        self.cfg, self.runs_csv, self.log = cfg, runs_csv, log
        self._lock: int | None = _lock(runs_csv)
        self.specs = {d.name: d for d in cfg.datasets}
        self.hashes = {d.name: _spec_hash(d, cfg.train) for d in cfg.datasets}
        try:
            # kept even without `resume`: the file may hold another study's runs
            self.rows: dict[str, dict] = _read_rows(runs_csv) if runs_csv.is_file() else {}
        except BaseException:
            self.close_lock()
            raise
        if cfg.resume and self.rows:
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
            done = k in self.trained or (self.cfg.resume and k in self.rows)
            if not done and k not in seen:
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
                initializer=_pool_worker_init,
                initargs=(self.cfg, os.getpid()),
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
        self.close_lock()

    def close_lock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # the lock goes with the descriptor
            self._lock = None
