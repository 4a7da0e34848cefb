"""When a training run saves and stops: a recovery checkpoint every ``train.recovery_minutes``
inside an epoch, a ``DEEPAUC_DEADLINE`` that stops in time, SIGTERM as Ctrl-C (what a
checkpoint holds: pipeline/checkpoint.py)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from deepauc.pipeline.checkpoint import save_checkpoint
from deepauc.pipeline.runtime import dist_info
from deepauc.pipeline.steps import EpochProgress, TrainState

log = logging.getLogger("deepauc.pipeline.train")

DEADLINE_ENV = "DEEPAUC_DEADLINE"  # unix time (seconds) by which training must have stopped
EXIT_TIME_BUDGET = 75  # EX_TEMPFAIL: stopped on purpose, rerun to continue


class TimeBudgetReached(RuntimeError):
    """``DEEPAUC_DEADLINE`` passed: a recovery checkpoint is written, a rerun resumes."""


def now() -> float:
    """The wall clock the recovery cadence and the deadline read (tests replace it)."""
    return time.time()


def deadline() -> float | None:
    """``DEEPAUC_DEADLINE`` as unix seconds, None when unset."""
    text = os.environ.get(DEADLINE_ENV, "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{DEADLINE_ENV}={text!r}: expected a unix time in seconds") from None


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (Kaggle, SLURM, ``kill``) raises KeyboardInterrupt, the Ctrl-C path."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class RecoveryHook:
    """After each batch: a recovery checkpoint every ``minutes``, and at ``DEEPAUC_DEADLINE``
    a last one and :class:`TimeBudgetReached`. Rank 0's clock decides for every rank."""

    state: TrainState
    path: Path
    epochs_done: int
    best: tuple[float, dict | None]
    record: dict
    steps: int
    minutes: float | None
    stop_at: float | None
    last_save: float

    def __call__(self, progress: EpochProgress) -> None:
        t = now()
        due_stop = self.stop_at is not None and t >= self.stop_at
        due_save = self.minutes is not None and t - self.last_save >= 60 * self.minutes
        due_stop, due_save = _agree(due_stop, due_save, self.state.device)
        if not (due_stop or due_save):
            return
        save_checkpoint(self.state, self.path, self.epochs_done, *self.best, self.record, progress)
        self.last_save = now()
        where = f"epoch {self.epochs_done + 1} step {progress.step} of {self.steps}"
        log.info("recovery checkpoint %s at %s", self.path, where)
        if due_stop:
            raise TimeBudgetReached(
                f"{DEADLINE_ENV} reached: stopped at {where} with a recovery checkpoint "
                f"{self.path}; rerun the same command (with a new {DEADLINE_ENV}) to resume"
            )


def _agree(stop: bool, save: bool, device: torch.device) -> tuple[bool, bool]:
    """Rank 0's decisions, broadcast, so every rank saves and stops at the same step."""
    if dist_info()[1] == 1:
        return stop, save
    flags = torch.tensor([stop, save], dtype=torch.int32, device=device)
    dist.broadcast(flags, src=0)
    return bool(flags[0]), bool(flags[1])


def recovery_hook(
    state: TrainState,
    path: Path,
    epochs_done: int,
    best: tuple[float, dict | None],
    record: dict,
    steps: int,
) -> RecoveryHook | None:
    """The epoch's step hook, or None when neither recovery checkpoints nor a deadline are set."""
    minutes, stop_at = state.cfg.train.recovery_minutes, deadline()
    if minutes is None and stop_at is None:
        return None
    return RecoveryHook(state, path, epochs_done, best, record, steps, minutes, stop_at, now())


def stop_if_past_deadline(path: Path, epochs_done: int) -> None:
    """At an epoch end (its checkpoint written): stop when ``DEEPAUC_DEADLINE`` has passed."""
    stop_at = deadline()
    if stop_at is not None and now() >= stop_at:
        raise TimeBudgetReached(
            f"{DEADLINE_ENV} reached: stopped after epoch {epochs_done} with checkpoint {path}; "
            f"rerun the same command (with a new {DEADLINE_ENV}) to resume"
        )
