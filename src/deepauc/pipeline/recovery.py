"""Checkpoints of a training run, at epoch ends and every ``train.recovery_minutes`` inside an
epoch, resumed exactly; SIGTERM as Ctrl-C; a ``DEEPAUC_DEADLINE`` that stops in time."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from deepauc.io import load_torch, save_torch
from deepauc.pipeline.experiment import ExperimentConfig
from deepauc.pipeline.provenance import check_model_record
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


def rng_states() -> dict:
    """This process's torch RNG states (dropout, drop-path), CPU and every CUDA device."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def all_rng_states() -> list[dict]:
    """Every rank's RNG states, in rank order (collective under DDP)."""
    mine = rng_states()
    _, world = dist_info()
    if world == 1:
        return [mine]
    out: list = [None] * world
    dist.all_gather_object(out, mine)
    return out


def save_checkpoint(
    state: TrainState,
    path: Path,
    epochs_done: int,
    best_auc: float,
    best_state: dict | None,
    record: dict,
    progress: EpochProgress | None = None,
) -> None:
    """Weights, optimizer, loss and scaler after ``epochs_done`` epochs and, mid-epoch,
    ``progress.step`` batches of the next, with the loss sum and every rank's RNG states."""
    mid = None
    if progress is not None:
        rngs = all_rng_states()  # every rank takes part
        mid = {
            "step": progress.step,
            "total": progress.total.detach().cpu(),
            "first_bad": progress.first_bad.detach().cpu(),
            "rng": rngs,
        }
    if dist_info()[0] != 0:
        return
    save_torch(
        {
            "fingerprint": state.cfg.fingerprint(),
            "provenance": record,
            "epoch": epochs_done,
            "model": state.model.state_dict(),
            "loss": state.loss_fn.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scaler": state.scaler.state_dict(),
            "best_auc": best_auc,
            "best_model": best_state,
            "mid_epoch": mid,
        },
        path,
    )


def resume(path: Path, cfg: ExperimentConfig, model, loss_fn, optimizer, scaler=None, record=None):
    """Restore a checkpoint; refuse one written by a different config.

    With ``record`` (see :func:`training_record`) a checkpoint made under another fold
    assignment or from other stage-1 weights is refused too. Returns (epochs done, best
    AUC, best weights, the mid-epoch state or None). At an epoch end no RNG state is
    needed: augmentation, shuffling and dropout are reseeded at the start of every epoch.
    """
    state = load_torch(path)
    if state.get("fingerprint") != cfg.fingerprint():
        raise ValueError(
            f"{path} was written by a different config (fingerprint {state.get('fingerprint')} != "
            f"{cfg.fingerprint()}); delete it or restore the config it came from"
        )
    if record is not None:
        check_model_record(state, path, record, cfg.data.train_csv, str(path))
    model.load_state_dict(state["model"])
    loss_fn.load_state_dict(state["loss"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and scaler.is_enabled() and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])  # fp16 loss scale and its growth tracker
    return state["epoch"], state["best_auc"], state["best_model"], state.get("mid_epoch")


def progress_from(mid: dict | None, device: torch.device) -> EpochProgress | None:
    """The saved mid-epoch progress on ``device`` (its RNG states are set by the caller)."""
    if mid is None:
        return None
    return EpochProgress(mid["step"], mid["total"].to(device), mid["first_bad"].to(device))


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
