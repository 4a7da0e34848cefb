"""``deepauc train``: one model per fold from an experiment YAML, for either stage of two-stage
DAM, resumable after a kill and data-parallel under torchrun: set-up, the epoch loop and its
validation (the lr plan: schedule.py; what is saved: checkpoint.py; docs/pipeline.md)."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from deepauc.config import add_config_arguments
from deepauc.data.augment import build_train_transform
from deepauc.data.dataset import CachedImages
from deepauc.data.image_cache import check_cached
from deepauc.data.sampling import PositiveShare
from deepauc.data.tables import read_folds_table
from deepauc.io import write_csv
from deepauc.logs import setup_logging
from deepauc.losses import auc_variables, create_loss
from deepauc.metrics import roc_auc
from deepauc.models import create_model
from deepauc.models.factory import enable_grad_checkpointing
from deepauc.optim import create_optimizer
from deepauc.pipeline.aux_targets import (
    add_aux_classes,
    aux_loss,
    head_outputs,
    loss_ratio,
    melanoma_model,
    training_labels,
)
from deepauc.pipeline.checkpoint import (
    already_trained,
    load_stage1,
    progress_from,
    resume,
    save_model,
    set_rng_states,
)
from deepauc.pipeline.checkpoint import (
    save_checkpoint as _save_checkpoint,  # the epoch-end save; bench/gpu_check_runs.py wraps it
)
from deepauc.pipeline.experiment import ExperimentConfig, load_experiment
from deepauc.pipeline.provenance import training_record
from deepauc.pipeline.pseudo_rows import add_pseudo_rows, with_pseudo
from deepauc.pipeline.recovery import (
    EXIT_TIME_BUDGET,
    TimeBudgetReached,
    deadline,
    recovery_hook,
    sigterm_as_interrupt,
    stop_if_past_deadline,
)
from deepauc.pipeline.runtime import (
    amp_dtype,
    check_ranks_agree,
    device_label,
    dist_info,
    gather_rows,
    init_distributed,
    make_loader,
    pick_device,
    predict_probs,
    sync_batchnorm_for_ranks,
)
from deepauc.pipeline.schedule import check_batch_split, end_of_epoch_schedule, steps_per_epoch
from deepauc.pipeline.steps import (
    EpochProgress,
    NonFiniteLoss,
    OutOfMemory,
    TrainState,
    is_out_of_memory,
    out_of_memory_message,
    raise_if_non_finite,
    run_epoch,
    weights_model,
)
from deepauc.pipeline.tracking import EpochWriter

log = logging.getLogger("deepauc.pipeline.train")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``resume_from`` says where a rerun of the same command resumes."""

    def __init__(self, run: str, epoch: int) -> None:
        super().__init__(run, epoch)
        self.resume_from = f"{run} from epoch {epoch}"


# -- set-up ----------------------------------------------------------------------------------
def split_fold(
    table: pd.DataFrame, fold: int, use_external: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training rows (other folds, plus fold -1 rows when ``use_external``) and fold ``fold``."""
    if "fold" not in table:
        raise KeyError("training table has no 'fold' column: run `deepauc folds` first")
    in_train = (table["fold"] != fold) & ((table["fold"] >= 0) | use_external)
    train, valid = (
        table[in_train].reset_index(drop=True),
        table[table["fold"] == fold].reset_index(drop=True),
    )
    if train.empty or valid.empty:
        raise ValueError(f"fold {fold}: {len(train)} training and {len(valid)} validation rows")
    if train["target"].nunique() < 2:
        raise ValueError(f"fold {fold}: the training rows hold only one class")
    if valid["target"].nunique() < 2:
        raise ValueError(
            f"fold {fold}: its {len(valid)} validation rows hold only target "
            f"{int(valid['target'].iloc[0])}, so its AUC is undefined; rerun `deepauc folds` "
            "(which refuses such folds) or use fewer folds"
        )
    return train, valid


def build_loss_for(cfg: ExperimentConfig, imratio: float | list[float] | None) -> torch.nn.Module:
    """The experiment's loss; ``imratio`` is the training rows' positive ratio unless set
    (one per class for a multi-label AUC loss over the diagnosis classes)."""
    multi_class = aux_loss(cfg, imratio)
    if multi_class is not None:
        return multi_class
    c = cfg.loss
    if isinstance(imratio, list):  # only a multi-label loss takes one ratio per label
        raise TypeError(f"one positive ratio expected, got {imratio!r}")
    return create_loss(
        c.name,
        imratio=c.imratio or imratio,
        margin=c.margin,
        batch_score_norm=c.batch_score_norm,
        focal_alpha=c.focal_alpha,
        focal_gamma=c.focal_gamma,
    )


def build_optimizer(cfg: ExperimentConfig, model: torch.nn.Module, loss_fn: torch.nn.Module):
    """The experiment's optimizer over the network's and the loss's parameters."""
    o = cfg.optim
    return create_optimizer(
        o.name,
        model.parameters(),
        loss_fn,
        lr=o.lr,
        weight_decay=o.weight_decay,
        momentum=o.momentum,
        epoch_decay=o.epoch_decay,
        dual=o.dual,
    )


# -- the run -----------------------------------------------------------------------------------
def _file_logger(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def train_fold(cfg: ExperimentConfig, fold: int, device: torch.device | None = None) -> Path:
    """Train fold ``fold`` of experiment ``cfg``; returns the path of its ``model.pt``.

    An existing ``model.pt`` is kept only if it was made from the current config, fold
    assignment and stage-1 weights; otherwise the run stops and names the difference.
    """
    device = device or pick_device()
    run_dir = cfg.run_dir(fold)
    record = with_pseudo(cfg, fold, training_record(cfg, fold))
    if already_trained(cfg, fold, record):
        return run_dir / "model.pt"
    run_dir.mkdir(parents=True, exist_ok=True)
    if dist_info()[0] != 0:  # only rank 0 writes files
        return _train(cfg, fold, device, run_dir, record)
    for stale in run_dir.glob(".*.tmp"):  # left by a run killed while writing (io.atomic_path)
        stale.unlink()
    handler = _file_logger(run_dir)
    try:
        return _train(cfg, fold, device, run_dir, record)
    finally:
        log.removeHandler(handler)
        handler.close()


def _load_fold_rows(cfg: ExperimentConfig, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The fold's training and validation rows, checked against the table and the cache."""
    columns = ["image_name", "target", "fold"] + (["diagnosis"] if cfg.model.aux_classes else [])
    table = add_aux_classes(cfg, read_folds_table(cfg.data.train_csv, columns, cfg.n_folds))
    try:
        train_df, valid_df = split_fold(table, fold, cfg.data.use_external)
    except ValueError as err:
        raise ValueError(f"{cfg.data.train_csv}: {err}") from None
    check_cached(
        list(train_df["image_name"]) + list(valid_df["image_name"]),
        cfg.data.cache_dir,
        cfg.data.image_size,
        cfg.data.train_csv,
    )
    return add_pseudo_rows(cfg, fold, train_df), valid_df


def _build_state(
    cfg: ExperimentConfig, fold: int, device: torch.device, imratio: float | list[float] | None
) -> TrainState:
    """Network (stage-1 weights for stage 2), loss, optimizer and scaler, placed on ``device``."""
    _, world = dist_info()
    m = cfg.model
    model = create_model(m.backbone, m.pretrained, m.drop_rate, m.drop_path_rate, head_outputs(cfg))
    if m.init_from:
        load_stage1(model, cfg, fold)
    if m.grad_checkpointing:
        enable_grad_checkpointing(model, m.backbone)
    model.to(device)
    if device.type == "cuda":  # fixed batch shapes (drop_last): pick the fastest kernels once
        torch.backends.cudnn.benchmark = True
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    model = sync_batchnorm_for_ranks(model, world, device)
    loss_fn = build_loss_for(cfg, imratio).to(device)
    optimizer = build_optimizer(cfg, model, loss_fn)
    amp = amp_dtype(cfg.train.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    ema = None
    if cfg.train.ema_decay is not None:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.train.ema_decay)
    return TrainState(cfg, model, model, loss_fn, optimizer, scaler, device, amp, ema)


def _wrap_for_steps(state: TrainState) -> None:
    """DDP across ranks and ``torch.compile`` when asked, after any resume."""
    _, world = dist_info()
    step_model: torch.nn.Module = state.model
    if world > 1:
        device = state.device
        step_model = torch.nn.parallel.DistributedDataParallel(
            step_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if state.cfg.train.compile:
        step_model = cast(torch.nn.Module, torch.compile(step_model))
    state.step_model = step_model


def _train(
    cfg: ExperimentConfig, fold: int, device: torch.device, run_dir: Path, record: dict
) -> Path:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed = cfg.train.seed * 1000 + fold
    torch.manual_seed(seed)
    rank, world = dist_info()
    check_batch_split(cfg, world)
    train_df, valid_df = _load_fold_rows(cfg, fold)
    imratio = float(train_df["target"].mean())
    # p of the AUC losses: the positives' share of the batches the loss sees (as the study)
    state = _build_state(
        cfg, fold, device, loss_ratio(cfg, train_df, cfg.train.pos_fraction or imratio)
    )

    start_epoch, best, mid = 0, (-1.0, None), None
    ckpt_path = run_dir / "checkpoint.pt"
    if ckpt_path.exists():
        start_epoch, *best, mid = resume(
            ckpt_path,
            cfg,
            state.model,
            state.loss_fn,
            state.optimizer,
            state.scaler,
            record,
            state.ema,
        )
        log.info("resumed %s at epoch %d", ckpt_path, start_epoch)
        if mid is not None:
            log.info("resuming epoch %d at step %d", start_epoch + 1, mid["step"])
    _wrap_for_steps(state)

    size = cfg.data.image_size
    train_ds = CachedImages(
        train_df, cfg.data.cache_dir, size, build_train_transform(cfg.augment), seed
    )
    labels = training_labels(cfg, train_df)  # the class index or one-vs-rest rows
    if labels is not None:
        train_ds.targets = labels
    valid_ds = CachedImages(valid_df.iloc[rank::world], cfg.data.cache_dir, size)
    valid_loader = make_loader(valid_ds, cfg.tta.batch_size, cfg.train.num_workers, shuffle=False)
    steps = steps_per_epoch(cfg, len(train_ds), fold)
    log.info(
        "fold %d: %d train rows (%.2f%% positive), %d validation rows; %s on %s, amp=%s",
        *(fold, len(train_df), 100 * imratio, len(valid_df), cfg.model.backbone),
        *(device_label(device), state.amp),
    )
    run = _Run(state, run_dir, record, fold, seed, steps, train_ds, train_df["target"].to_numpy())
    run.history = _load_history(run_dir, start_epoch)
    run.best = (best[0], best[1])
    run.tracker = EpochWriter(run_dir, cfg.train.tensorboard and rank == 0)
    try:
        for epoch in range(start_epoch, cfg.schedule.epochs):
            try:
                _one_epoch(
                    run, epoch, mid if epoch == start_epoch else None, valid_loader, valid_df
                )
            except TrainingInterrupted:
                raise
            except KeyboardInterrupt:  # outside the steps: validation, checkpoint writing
                raise TrainingInterrupted(f"{cfg.name} fold {fold}", epoch + 1) from None
    finally:
        run.tracker.close()
    return save_model(state, run_dir, run.best[1], record)


@dataclass
class _Run:
    """One fold's run as the epoch loop sees it."""

    state: TrainState
    run_dir: Path
    record: dict
    fold: int
    seed: int
    steps: int
    train_ds: CachedImages
    targets: np.ndarray
    history: list[dict] = field(default_factory=list)
    best: tuple[float, dict | None] = (-1.0, None)
    tracker: EpochWriter | None = None


def _epoch_batches(run: _Run, epoch: int, mid: dict | None):
    """The epoch's batch iterator (from the saved step when resuming, its RNG state restored)."""
    cfg = run.state.cfg
    rank, world = dist_info()
    # dropout / drop-path, reproducible per epoch
    torch.manual_seed(run.seed * 7919 + epoch + 1_000_003 * rank)
    run.train_ds.set_epoch(epoch)
    per_rank = cfg.train.batch_size // world
    start = mid["step"] * per_rank if mid else 0
    sampler = None
    if cfg.train.pos_fraction is not None:
        sampler = PositiveShare(
            *(run.targets, cfg.train.batch_size, cfg.train.pos_fraction, run.seed, epoch),
            *(rank, world, start),
        )
    loader = make_loader(
        *(run.train_ds, per_rank, cfg.train.num_workers, True, run.seed, epoch),
        *(True, rank, world, start, sampler),
    )
    batches = iter(loader)  # draws the loader's base seed, as the uninterrupted run did
    if mid is not None:
        set_rng_states(mid["rng"][rank])
    return batches


def _one_epoch(run: _Run, epoch: int, mid: dict | None, valid_loader, valid_df) -> None:
    """Train, validate and checkpoint one epoch (``mid``: resume it from a recovery checkpoint)."""
    state, cfg = run.state, run.state.cfg
    rank, world = dist_info()
    ckpt_path = run.run_dir / "checkpoint.pt"
    batches = _epoch_batches(run, epoch, mid)
    hook = recovery_hook(state, ckpt_path, epoch, run.best, run.record, run.steps)
    t0 = time.perf_counter()
    progress = progress_from(mid, state.device)
    mean_loss = _run_epoch_explained(run, batches, epoch, progress, hook)
    seconds = time.perf_counter() - t0
    end_of_epoch_schedule(cfg, state.optimizer, epoch)
    last = epoch + 1 == cfg.schedule.epochs
    val_auc = float("nan")
    if last or (epoch + 1) % cfg.train.eval_every == 0:
        val_auc = _validate(state, valid_loader, valid_df)
    row = _epoch_row(state, epoch, mean_loss, val_auc, seconds, run.steps)
    run.history.append(row)
    if run.tracker is not None:
        run.tracker.write(row)
    log.info("fold %d epoch %d: %s", run.fold, epoch + 1, {k: round(v, 5) for k, v in row.items()})
    per_rank = check_ranks_agree(state.loss_fn, run.fold, epoch)
    if per_rank is not None and last:
        log.info("fold %d: a, b, alpha on each of the %d ranks: %s", run.fold, world, per_rank)
    if cfg.train.checkpoint == "best" and val_auc > run.best[0]:
        run.best = (
            val_auc,
            {k: v.detach().cpu().clone() for k, v in weights_model(state).state_dict().items()},
        )
    if rank == 0:
        write_csv(pd.DataFrame(run.history), run.run_dir / "log.csv")
    if not last:
        _save_checkpoint(state, ckpt_path, epoch + 1, *run.best, run.record)
    if world > 1:
        dist.barrier()  # no rank runs ahead of the checkpoint rank 0 just wrote
    if not last:
        stop_if_past_deadline(ckpt_path, epoch + 1)


def _run_epoch_explained(
    run: _Run, batches, epoch: int, progress: EpochProgress | None, hook
) -> float:
    """:func:`run_epoch`, its failure or interruption saying what is kept and where a rerun resumes."""
    state, run_dir = run.state, run.run_dir
    try:
        # only what is set is passed: run_epoch's plain signature is the one tests wrap
        extra: dict[str, Any] = {
            k: v for k, v in (("progress", progress), ("hook", hook)) if v is not None
        }
        return run_epoch(state, batches, epoch, run.steps, **extra)
    except NonFiniteLoss as err:
        kept = (
            f"the last good checkpoint {run_dir / 'checkpoint.pt'} (end of epoch {epoch}) is kept"
            if epoch
            else "no checkpoint yet (first epoch)"
        )
        raise NonFiniteLoss(f"{err}; {kept}, {run_dir / 'model.pt'} is not written") from None
    except KeyboardInterrupt:
        raise TrainingInterrupted(f"{state.cfg.name} fold {run.fold}", epoch + 1) from None
    except RuntimeError as err:
        if not is_out_of_memory(err):
            raise
        raise OutOfMemory(out_of_memory_message(state)) from None


def _load_history(run_dir: Path, epochs_done: int) -> list[dict]:
    """The ``log.csv`` rows of the epochs a resumed run has already finished."""
    if not epochs_done:
        return []
    return pd.read_csv(run_dir / "log.csv").iloc[:epochs_done].to_dict("records")


def _validate(state: TrainState, valid_loader, valid_df: pd.DataFrame) -> float:
    cfg = state.cfg
    probs = predict_probs(
        melanoma_model(weights_model(state), cfg),
        valid_loader,
        state.device,
        1,
        state.amp,
        cfg.train.channels_last,
    )
    probs = gather_rows(probs, len(valid_df), state.device)
    return roc_auc(valid_df["target"].to_numpy(), probs, undefined="nan")


def _epoch_row(
    state: TrainState, epoch: int, mean_loss: float, val_auc: float, seconds: float, steps: int
) -> dict:
    """One ``log.csv`` row: lr, losses, validation AUC, speed, and a, b, α for AUC losses."""
    loss_fn = state.loss_fn
    row = {
        "epoch": epoch + 1,
        "lr": state.optimizer.param_groups[0]["lr"],
        "train_loss": mean_loss,
        "val_auc": val_auc,
        "seconds": seconds,
        "images_per_s": steps * state.cfg.train.batch_size / seconds,
    }
    row.update(auc_variables(loss_fn))
    return row


# -- CLI ---------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--fold", type=int, action="append", help="fold(s) to train (default: the config's)"
    )


def run(args) -> int:
    cfg = load_experiment(args.config, args.overrides)
    device = init_distributed()
    rank, world = dist_info()
    setup_logging(rank, world)
    deadline()  # a malformed DEEPAUC_DEADLINE stops here, before any work
    try:
        with sigterm_as_interrupt():
            for fold in args.fold or cfg.fold_ids():
                path = train_fold(cfg, fold, device)
                if rank == 0:
                    print(f"{cfg.name} fold {fold}: {path}")
    except TimeBudgetReached as err:
        if rank == 0:
            print(f"deepauc train: {err}", file=sys.stderr)
        return EXIT_TIME_BUDGET
    finally:
        if world > 1:
            dist.destroy_process_group()
    return 0


_raise_if_non_finite = raise_if_non_finite  # the name the message tests use
__all__ = ["EXIT_TIME_BUDGET", "NonFiniteLoss", "TrainState", "resume", "run_epoch"]
__all__ += ["train_fold", "TimeBudgetReached"]
