"""A training run's schedule: the learning rate at each step (constant, cosine, cyclic), the
stagewise decays (where a PESG stage ends), the steps of an epoch and how its batch splits
over DDP ranks and micro-batches."""

from __future__ import annotations

import math

import torch

from deepauc.optim import end_stage, is_stagewise
from deepauc.pipeline.experiment import ExperimentConfig


def lr_at(cfg: ExperimentConfig, epoch_progress: float, step: float = 0.0) -> float:
    """Learning rate at a fractional epoch, for a step of ``step`` epochs starting there.

    cyclic: triangular between ``min_lr`` and ``lr``, starting low, one up-and-down
    cycle per ``cycle_epochs`` (the paper's CE stage: 3e-5 to 2.4e-4, 8-epoch cycle).
    stagewise and constant: ``lr`` (stagewise decays happen at epoch ends, past the warmup).
    With ``schedule.warmup_epochs`` W the rate is scaled by min(1, (t + step) / W): the k-th of
    the K warmup steps runs at k/K of the schedule's rate, the last at the full rate.
    """
    warm = cfg.schedule.warmup_epochs
    scale = min(1.0, (epoch_progress + step) / warm) if warm > 0 else 1.0
    return scale * _scheduled_lr(cfg, epoch_progress)


def per_step_lr(cfg: ExperimentConfig, epoch: int) -> bool:
    """Whether the lr is set before every step of ``epoch`` (0-based)."""
    return cfg.schedule.name in ("cyclic", "cosine") or epoch < cfg.schedule.warmup_epochs


def _scheduled_lr(cfg: ExperimentConfig, epoch_progress: float) -> float:
    s, top = cfg.schedule, cfg.optim.lr
    if s.name == "cosine":
        return s.min_lr + (top - s.min_lr) * 0.5 * (
            1 + math.cos(math.pi * epoch_progress / s.epochs)
        )
    if s.name == "cyclic":
        phase = (epoch_progress % s.cycle_epochs) / s.cycle_epochs
        return s.min_lr + (top - s.min_lr) * (1 - abs(2 * phase - 1))
    return top


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def end_of_epoch_schedule(cfg: ExperimentConfig, optimizer, epoch: int) -> None:
    """Stagewise decay after ``epoch`` (0-based) when ``epoch + 1`` is a decay epoch.

    With PESG this is also where a stage ends: v_ref becomes the stage's average.
    """
    s = cfg.schedule
    if s.name != "stagewise" or (epoch + 1) not in s.decay_epochs:
        return
    if is_stagewise(optimizer):
        end_stage(optimizer, s.decay_factor)
    else:
        for g in optimizer.param_groups:
            g["lr"] /= s.decay_factor


def steps_per_epoch(cfg: ExperimentConfig, n_rows: int, fold: int) -> int:
    """Full batches in ``n_rows`` training rows, at most ``train.max_steps_per_epoch``."""
    steps = n_rows // cfg.train.batch_size
    if cfg.train.max_steps_per_epoch:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    if steps == 0:
        raise ValueError(f"fold {fold}: {n_rows} training rows < batch_size {cfg.train.batch_size}")
    return steps


def check_batch_split(cfg: ExperimentConfig, world: int) -> None:
    """The batch splits evenly over the ranks and each rank's share over the micro-batches."""
    t = cfg.train
    if t.batch_size % world:
        raise ValueError(
            f"train.batch_size {t.batch_size} is not divisible by the {world} DDP ranks"
        )
    if (t.batch_size // world) % t.accumulate:
        raise ValueError(
            f"train.batch_size {t.batch_size} over {world} ranks gives {t.batch_size // world} "
            f"rows per rank, not divisible by train.accumulate {t.accumulate}"
        )
