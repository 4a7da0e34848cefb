"""``deepauc train``: one model per fold from an experiment YAML, for either stage of two-stage
DAM, resumable after a kill and data-parallel under torchrun (docs/pipeline.md)."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pandas as pd
import torch
import torch.distributed as dist

from deepauc.config import add_config_arguments, to_dict
from deepauc.data.augment import build_train_transform
from deepauc.data.dataset import CachedImages, to_device_batch
from deepauc.data.resize import check_cached
from deepauc.data.tables import check_columns, check_targets
from deepauc.io import load_torch, save_torch, write_csv
from deepauc.losses import AUCMLoss, AUCSLoss, create_loss, loss_input
from deepauc.models import create_model, reset_head
from deepauc.optim import PESG, create_optimizer
from deepauc.pipeline.experiment import ExperimentConfig, load_experiment
from deepauc.pipeline.runtime import (
    amp_dtype,
    average_grads,
    check_ranks_agree,
    dist_info,
    gather_rows,
    init_distributed,
    make_loader,
    pick_device,
    predict_probs,
    safe_auc,
    sync_batchnorm_for_ranks,
)
from deepauc.provenance import check_model_record, training_record

log = logging.getLogger("deepauc.pipeline.train")


class NonFiniteLoss(RuntimeError, ValueError):
    """The training loss became NaN or infinite (a ValueError too, so the CLI reports it)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``resume_from`` says where a rerun of the same command resumes."""

    def __init__(self, run: str, epoch: int) -> None:
        super().__init__(run, epoch)
        self.resume_from = f"{run} from epoch {epoch}"


@dataclass
class TrainState:
    """Everything one fold's training steps act on."""

    cfg: ExperimentConfig
    model: torch.nn.Module  # the plain network: state dicts, validation
    step_model: (
        torch.nn.Module
    )  # what the forward pass runs: the network or its DDP/compiled wrapper
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    amp: torch.dtype | None


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


def build_loss_for(cfg: ExperimentConfig, imratio: float) -> torch.nn.Module:
    """The experiment's loss; ``imratio`` is the training rows' positive ratio unless set."""
    c = cfg.loss
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


def lr_at(cfg: ExperimentConfig, epoch_progress: float) -> float:
    """Learning rate at a fractional epoch for the constant, cosine and cyclic schedules.

    cyclic: triangular between ``min_lr`` and ``lr``, starting low, one up-and-down
    cycle per ``cycle_epochs`` (the paper's CE stage: 3e-5 to 2.4e-4, 8-epoch cycle).
    """
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
    if isinstance(optimizer, PESG):
        optimizer.next_stage(s.decay_factor)
    else:
        for g in optimizer.param_groups:
            g["lr"] /= s.decay_factor


# -- the run -----------------------------------------------------------------------------------
def _file_logger(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def load_stage1(model: torch.nn.Module, cfg: ExperimentConfig, fold: int) -> None:
    """Two-stage DAM: start from the stage-1 run's weights of ``fold``, with a fresh head."""
    path = Path(str(cfg.model.init_from)) / f"fold{fold}" / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"stage-1 weights not found: {path} (train {cfg.model.init_from} first)"
        )
    saved = load_torch(path)
    if saved.get("backbone") != cfg.model.backbone:
        raise ValueError(
            f"{path} holds a {saved.get('backbone')} but this config trains a {cfg.model.backbone}"
        )
    model.load_state_dict(saved["model"])
    reset_head(model, 1)


def train_fold(cfg: ExperimentConfig, fold: int, device: torch.device | None = None) -> Path:
    """Train fold ``fold`` of experiment ``cfg``; returns the path of its ``model.pt``.

    An existing ``model.pt`` is kept only if it was made from the current config, fold
    assignment and stage-1 weights; otherwise the run stops and names the difference.
    """
    device = device or pick_device()
    run_dir = cfg.run_dir(fold)
    final = run_dir / "model.pt"
    record = training_record(cfg, fold)
    if final.exists():
        redo = str(run_dir.parent)
        check_model_record(load_torch(final), final, record, cfg.data.train_csv, redo)
        log.info("%s exists: fold %d already trained", final, fold)
        return final
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
    # imported here: the rest of this module is being reworked separately
    from deepauc.data.tables import check_fold_table, read_csv_table

    # ids as text: an image named 0296243 must not become the number 296243
    table = read_csv_table(cfg.data.train_csv, ["image_name", "target", "fold"])
    check_columns(table, ["image_name", "target", "fold"], cfg.data.train_csv)
    table["target"] = check_targets(table, cfg.data.train_csv)
    table["fold"] = check_fold_table(table, cfg.data.train_csv, cfg.n_folds)
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
    return train_df, valid_df


def _build_state(
    cfg: ExperimentConfig, fold: int, device: torch.device, imratio: float
) -> TrainState:
    """Network (stage-1 weights for stage 2), loss, optimizer and scaler, placed on ``device``."""
    _, world = dist_info()
    m = cfg.model
    model = create_model(m.backbone, m.pretrained, m.drop_rate, m.drop_path_rate)
    if m.init_from:
        load_stage1(model, cfg, fold)
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
    return TrainState(cfg, model, model, loss_fn, optimizer, scaler, device, amp)


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


def _steps_per_epoch(cfg: ExperimentConfig, n_rows: int, fold: int) -> int:
    steps = n_rows // cfg.train.batch_size
    if cfg.train.max_steps_per_epoch:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    if steps == 0:
        raise ValueError(f"fold {fold}: {n_rows} training rows < batch_size {cfg.train.batch_size}")
    return steps


def _train(
    cfg: ExperimentConfig, fold: int, device: torch.device, run_dir: Path, record: dict
) -> Path:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed = cfg.train.seed * 1000 + fold
    torch.manual_seed(seed)
    rank, world = dist_info()
    if cfg.train.batch_size % world:
        raise ValueError(
            f"train.batch_size {cfg.train.batch_size} is not divisible by the {world} DDP ranks"
        )
    train_df, valid_df = _load_fold_rows(cfg, fold)
    imratio = cfg.loss.imratio or float(train_df["target"].mean())
    state = _build_state(cfg, fold, device, imratio)

    start_epoch, best_auc, best_state = 0, -1.0, None
    ckpt_path = run_dir / "checkpoint.pt"
    if ckpt_path.exists():
        start_epoch, best_auc, best_state = resume(
            ckpt_path, cfg, state.model, state.loss_fn, state.optimizer, state.scaler, record
        )
        log.info("resumed %s at epoch %d", ckpt_path, start_epoch)
    _wrap_for_steps(state)

    size = cfg.data.image_size
    train_ds = CachedImages(
        train_df, cfg.data.cache_dir, size, build_train_transform(cfg.augment), seed
    )
    valid_ds = CachedImages(valid_df.iloc[rank::world], cfg.data.cache_dir, size)
    valid_loader = make_loader(valid_ds, cfg.tta.batch_size, cfg.train.num_workers, shuffle=False)
    steps = _steps_per_epoch(cfg, len(train_ds), fold)
    log.info(
        "fold %d: %d train rows (%.2f%% positive), %d validation rows; %s on %s, amp=%s",
        *(fold, len(train_df), 100 * imratio, len(valid_df), cfg.model.backbone, device, state.amp),
    )
    history = _load_history(run_dir, start_epoch)

    for epoch in range(start_epoch, cfg.schedule.epochs):
        # dropout / drop-path, reproducible per epoch
        torch.manual_seed(seed * 7919 + epoch + 1_000_003 * rank)
        train_ds.set_epoch(epoch)
        loader = make_loader(
            *(train_ds, cfg.train.batch_size // world, cfg.train.num_workers, True, seed, epoch),
            drop_last=True,
            rank=rank,
            world=world,
        )
        t0 = time.perf_counter()
        mean_loss = _run_epoch_explained(state, loader, epoch, steps, run_dir, fold)
        seconds = time.perf_counter() - t0
        end_of_epoch_schedule(cfg, state.optimizer, epoch)
        last = epoch + 1 == cfg.schedule.epochs
        val_auc = float("nan")
        if last or (epoch + 1) % cfg.train.eval_every == 0:
            val_auc = _validate(state, valid_loader, valid_df)
        row = _epoch_row(state, epoch, mean_loss, val_auc, seconds, steps)
        history.append(row)
        log.info("fold %d epoch %d: %s", fold, epoch + 1, {k: round(v, 5) for k, v in row.items()})
        per_rank = check_ranks_agree(state.loss_fn, fold, epoch)
        if per_rank is not None and last:
            log.info("fold %d: a, b, alpha on each of the %d ranks: %s", fold, world, per_rank)
        if cfg.train.checkpoint == "best" and val_auc > best_auc:
            best_auc = val_auc
            best_state = {k: v.detach().cpu().clone() for k, v in state.model.state_dict().items()}
        if rank == 0:
            write_csv(pd.DataFrame(history), run_dir / "log.csv")
        if not last and rank == 0:
            _save_checkpoint(state, ckpt_path, epoch, best_auc, best_state, record)
        if world > 1:
            dist.barrier()  # no rank runs ahead of the checkpoint rank 0 just wrote
    return _save_final(state, run_dir, best_state, record)


def _run_epoch_explained(
    state: TrainState, loader, epoch: int, steps: int, run_dir: Path, fold: int
) -> float:
    """:func:`run_epoch`, its failure or interruption saying what is kept and where a rerun resumes."""
    try:
        return run_epoch(state, loader, epoch, steps)
    except NonFiniteLoss as err:
        kept = (
            f"the last good checkpoint {run_dir / 'checkpoint.pt'} (end of epoch {epoch}) is kept"
            if epoch
            else "no checkpoint yet (first epoch)"
        )
        raise NonFiniteLoss(f"{err}; {kept}, {run_dir / 'model.pt'} is not written") from None
    except KeyboardInterrupt:
        raise TrainingInterrupted(f"{state.cfg.name} fold {fold}", epoch + 1) from None


def _load_history(run_dir: Path, epochs_done: int) -> list[dict]:
    """The ``log.csv`` rows of the epochs a resumed run has already finished."""
    if not epochs_done:
        return []
    return pd.read_csv(run_dir / "log.csv").iloc[:epochs_done].to_dict("records")


def _validate(state: TrainState, valid_loader, valid_df: pd.DataFrame) -> float:
    cfg = state.cfg
    probs = predict_probs(
        state.model, valid_loader, state.device, 1, state.amp, cfg.train.channels_last
    )
    probs = gather_rows(probs, len(valid_df), state.device)
    return safe_auc(valid_df["target"].to_numpy(), probs)


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
    if isinstance(loss_fn, (AUCMLoss, AUCSLoss)):
        row.update(a=loss_fn.a.item(), b=loss_fn.b.item(), alpha=loss_fn.alpha.item())
    return row


def _save_checkpoint(
    state: TrainState,
    path: Path,
    epoch: int,
    best_auc: float,
    best_state: dict | None,
    record: dict,
) -> None:
    save_torch(
        {
            "fingerprint": state.cfg.fingerprint(),
            "provenance": record,
            "epoch": epoch + 1,
            "model": state.model.state_dict(),
            "loss": state.loss_fn.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scaler": state.scaler.state_dict(),
            "best_auc": best_auc,
            "best_model": best_state,
        },
        path,
    )


def _save_final(state: TrainState, run_dir: Path, best_state: dict | None, record: dict) -> Path:
    """Write ``model.pt`` (rank 0) and drop the mid-run checkpoint; returns its path."""
    cfg = state.cfg
    rank, world = dist_info()
    final = run_dir / "model.pt"
    if rank == 0:
        save_torch(
            {
                "model": best_state if best_state is not None else state.model.state_dict(),
                "backbone": cfg.model.backbone,
                "image_size": cfg.data.image_size,
                "fingerprint": cfg.fingerprint(),
                "config": to_dict(cfg),
                "provenance": record,
            },
            final,
        )
        (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    if world > 1:
        dist.barrier()
    return final


def resume(path: Path, cfg: ExperimentConfig, model, loss_fn, optimizer, scaler=None, record=None):
    """Restore a mid-run checkpoint; refuse one written by a different config.

    With ``record`` (see :func:`training_record`) a checkpoint made under another fold
    assignment or from other stage-1 weights is refused too.
    RNG states need no saving: augmentation, shuffling and dropout are reseeded at the
    start of every epoch, and checkpoints are written only at epoch ends.
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
    return state["epoch"], state["best_auc"], state["best_model"]


def run_epoch(state: TrainState, loader, epoch: int, steps: int) -> float:
    """One pass over ``steps`` batches; returns the mean training loss.

    The loss stays on the device (no per-step ``.item()``); finiteness is checked every
    50 steps and at the end, reporting the first bad step.
    """
    from tqdm import tqdm

    cfg, device = state.cfg, state.device
    state.model.train()
    state.loss_fn.train()
    total = torch.zeros((), device=device)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    per_step_lr = cfg.schedule.name in ("cyclic", "cosine")
    rank, world = dist_info()
    bar = tqdm(
        total=steps,
        desc=f"{cfg.name} e{epoch + 1}",
        leave=False,
        mininterval=5,
        disable=os.environ.get("DEEPAUC_PROGRESS", "1") == "0" or rank != 0,
    )
    for step, (x, y) in enumerate(loader):
        if step >= steps:
            break
        if per_step_lr:
            set_lr(state.optimizer, lr_at(cfg, epoch + step / steps))
        detached = _train_step(state, x, y)
        total += detached
        global_step = epoch * steps + step
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(detached), global_step, first_bad)
        if step % 50 == 49 or step == steps - 1:
            _raise_if_non_finite(cfg, first_bad, epoch, steps)
        bar.update(1)
    bar.close()
    if world > 1:
        dist.all_reduce(total)
        total /= world
    return float(total) / steps


def _train_step(state: TrainState, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Forward, backward and optimizer step on one batch; returns the detached loss."""
    cfg, device, amp = state.cfg, state.device, state.amp
    x = to_device_batch(x, device, cfg.train.channels_last)
    y = y.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        logits = state.step_model(x).squeeze(1)
    loss = state.loss_fn(loss_input(state.loss_fn, logits.float()), y)
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    if dist_info()[1] > 1 and not isinstance(state.optimizer, PESG):  # PESG averages them itself
        average_grads(state.loss_fn.parameters())
    if cfg.train.grad_clip:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.train.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    return loss.detach()


def _raise_if_non_finite(cfg: ExperimentConfig, first_bad: torch.Tensor, epoch: int, steps: int):
    """Stop all ranks together at the first non-finite step of any rank (-1: none yet).

    ``first_bad`` is 0-based; the message counts steps from 1, over the run and in the epoch.
    """
    bad = first_bad
    if dist_info()[1] > 1:
        none = torch.iinfo(torch.long).max
        bad = torch.where(first_bad < 0, none, first_bad)
        dist.all_reduce(bad, op=dist.ReduceOp.MIN)
        bad = torch.where(bad == none, -1, bad)
    first = int(bad)
    if first >= 0:
        raise NonFiniteLoss(
            f"{cfg.name}: training loss became non-finite at step {first + 1} "
            f"(epoch {epoch + 1}, step {first - epoch * steps + 1} of {steps})"
        )


# -- CLI ---------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--fold", type=int, action="append", help="fold(s) to train (default: the config's)"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args) -> int:
    cfg = load_experiment(args.config, args.overrides)
    device = init_distributed()
    rank, world = dist_info()
    prefix = f"[rank {rank}/{world}] " if world > 1 else ""
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING, format=prefix + "%(message)s"
    )
    try:
        for fold in args.fold or cfg.fold_ids():
            path = train_fold(cfg, fold, device)
            if rank == 0:
                print(f"{cfg.name} fold {fold}: {path}")
    finally:
        if world > 1:
            dist.destroy_process_group()
    return 0
