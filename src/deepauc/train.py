"""``deepauc train``: one model per fold from an experiment YAML.

The same command runs both stages of two-stage DAM: stage 1 (CE or focal, Adam, cyclic
lr) and stage 2 (``model.init_from`` = the stage-1 run; the classifier is replaced by a
fresh one and all layers train with AUC-M + PESG). Outputs per fold, under
``models/<name>/fold<k>/``: ``model.pt`` (weights predict uses; written last, so its
presence means the fold is finished), ``log.csv`` (one row per epoch) and ``train.log``.
While training, ``checkpoint.pt`` holds everything needed to resume after a kill (model,
optimizer including PESG's v_ref/α, epoch); a rerun picks it up, refuses it if it came
from another config, and continues from the last finished epoch. Augmentation, shuffling
and dropout are seeded per epoch, so on CPU a resumed run ends with the same weights as
an uninterrupted one.

Under ``torchrun --nproc_per_node=N`` (``WORLD_SIZE`` > 1) training is data-parallel
(PyTorch DDP; NCCL on GPUs, gloo on CPU): each rank takes a strided share of the same
seeded per-epoch permutation, ``batch_size / N`` rows per step, so the global batch of
step j holds exactly the rows of a single-process run's batch j; gradients (and, through
PESG, those of a, b, α) are averaged over ranks; validation is split over the ranks and
gathered; only rank 0 writes files (see docs/when-things-go-wrong.md).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from deepauc.config import add_config_arguments, to_dict
from deepauc.data.augment import build_train_transform
from deepauc.data.dataset import CachedImages, to_device_batch
from deepauc.data.resize import check_cached
from deepauc.data.tables import check_columns, check_targets
from deepauc.experiment import ExperimentConfig, load_experiment
from deepauc.io import save_torch, write_csv
from deepauc.losses import build_loss, loss_input
from deepauc.metrics import roc_auc
from deepauc.models import create_model, reset_head
from deepauc.optim import PESG

log = logging.getLogger("deepauc.train")


class NonFiniteLoss(RuntimeError, ValueError):
    """The training loss became NaN or infinite (a ValueError too, so the CLI reports it)."""


# -- set-up ----------------------------------------------------------------------------------
def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.amp`` on ``device`` (None = full precision)."""
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None
    if setting == "fp16":
        return torch.float16
    if setting == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


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


def build_optimizer(cfg: ExperimentConfig, model: torch.nn.Module, loss_fn: torch.nn.Module):
    o = cfg.optim
    if o.name == "pesg":
        return PESG(
            model.parameters(),
            loss_fn,
            lr=o.lr,
            epoch_decay=o.epoch_decay,
            weight_decay=o.weight_decay,
            momentum=o.momentum,
            dual=o.dual,
        )
    params = list(model.parameters()) + list(loss_fn.parameters())
    if o.name == "sgd":
        return torch.optim.SGD(
            params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, foreach=True
        )
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return cls(params, lr=o.lr, weight_decay=o.weight_decay, foreach=True)


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


class EpochShard(Sampler[int]):
    """Rank ``rank``'s share ``perm[rank::world]`` of the epoch's seeded permutation.

    ``perm`` is the permutation ``RandomSampler`` draws from the same generator, so with
    one process the order is unchanged; with ``world`` ranks each taking ``B / world``
    rows per step, the union of the ranks' step-j batches is the single-process batch j.
    """

    def __init__(self, n: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.epoch, self.rank, self.world = n, seed, epoch, rank, world

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=gen)[self.rank :: self.world].tolist())

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def make_loader(
    ds,
    batch_size: int,
    workers: int,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    drop_last=False,
    rank: int = 0,
    world: int = 1,
):
    sampler = EpochShard(len(ds), seed, epoch, rank, world) if shuffle else None
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )


# -- distributed (torchrun) ---------------------------------------------------------------------
def dist_info() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> torch.device | None:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1; return this rank's device.

    NCCL with one GPU per ``LOCAL_RANK`` when CUDA is available, gloo on CPU; the rest of
    the rendezvous (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``) comes from torchrun's
    environment. None (and nothing done) for a plain single-process run.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    return device


def interleave(parts: list[np.ndarray], n: int) -> np.ndarray:
    """Inverse of the strided split ``rows[r::world]``: the parts back in row order."""
    out = np.empty(n, dtype=np.float64)
    for r, part in enumerate(parts):
        out[r :: len(parts)] = part[: len(range(r, n, len(parts)))]
    return out


def gather_rows(part: np.ndarray, n: int, device: torch.device) -> np.ndarray:
    """Every rank's ``rows[rank::world]`` values (e.g. validation scores), in row order."""
    rank, world = dist_info()
    if world == 1:
        return np.asarray(part, dtype=np.float64)
    buf = torch.zeros(-(-n // world), dtype=torch.float64, device=device)
    buf[: len(part)] = torch.as_tensor(part, dtype=torch.float64, device=device)
    parts = [torch.empty_like(buf) for _ in range(world)]
    dist.all_gather(parts, buf)
    return interleave([p.cpu().numpy() for p in parts], n)


def average_grads(params) -> None:
    """Average the ``.grad`` of ``params`` over DDP ranks (for tensors outside the DDP module)."""
    params = [p for p in params if p.grad is not None]
    _, world = dist_info()
    if world == 1 or not params:
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
        offset += p.numel()


def check_ranks_agree(loss_fn, fold: int, epoch: int) -> list[list[float]] | None:
    """Gather a, b, α from every rank; raise RuntimeError unless they are identical.

    Returns the per-rank values (None for a loss without them or a single process).
    """
    _, world = dist_info()
    if world == 1 or not hasattr(loss_fn, "alpha"):
        return None
    mine = torch.cat([loss_fn.a.detach(), loss_fn.b.detach(), loss_fn.alpha.detach()]).double()
    parts = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(parts, mine)
    values = [p.cpu().tolist() for p in parts]
    if any(v != values[0] for v in values):
        raise RuntimeError(f"fold {fold} epoch {epoch + 1}: a, b, α differ between ranks: {values}")
    return values


# -- inference used for validation -----------------------------------------------------------
@torch.no_grad()
def predict_probs(
    model, loader, device, n_views: int = 1, amp: torch.dtype | None = None, channels_last=True
):
    """Mean sigmoid score over ``n_views`` dihedral views for every row of ``loader``."""
    from deepauc.data.augment import dihedral_views

    model.eval()
    out = []
    for x, _ in loader:
        x = to_device_batch(x, device, channels_last)
        b = x.shape[0]
        views = dihedral_views(x, n_views) if n_views > 1 else x
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(views).float().view(n_views, b)
        out.append(torch.sigmoid(logits).mean(0))
    return torch.cat(out).cpu().numpy() if out else np.zeros(0, np.float32)


def safe_auc(y, s) -> float:
    try:
        return roc_auc(y, s)
    except ValueError:
        return float("nan")


# -- the run -----------------------------------------------------------------------------------
def _file_logger(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def load_stage1(model: torch.nn.Module, cfg: ExperimentConfig, fold: int) -> None:
    """Two-stage DAM: start from the stage-1 run's weights of ``fold``, with a fresh head."""
    path = Path(cfg.model.init_from) / f"fold{fold}" / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"stage-1 weights not found: {path} (train {cfg.model.init_from} first)"
        )
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("backbone") != cfg.model.backbone:
        raise ValueError(
            f"{path} holds a {saved.get('backbone')} but this config trains a {cfg.model.backbone}"
        )
    model.load_state_dict(saved["model"])
    reset_head(model, 1)


def train_fold(cfg: ExperimentConfig, fold: int, device: torch.device | None = None) -> Path:
    """Train fold ``fold`` of experiment ``cfg``; returns the path of its ``model.pt``."""
    device = device or pick_device()
    run_dir = cfg.run_dir(fold)
    final = run_dir / "model.pt"
    if final.exists():
        log.info("%s exists: fold %d already trained", final, fold)
        return final
    run_dir.mkdir(parents=True, exist_ok=True)
    if dist_info()[0] != 0:  # only rank 0 writes files
        return _train(cfg, fold, device, run_dir)
    for stale in run_dir.glob(".*.tmp"):  # left by a run killed while writing (io.atomic_path)
        stale.unlink()
    handler = _file_logger(run_dir)
    try:
        return _train(cfg, fold, device, run_dir)
    finally:
        log.removeHandler(handler)
        handler.close()


def _train(cfg: ExperimentConfig, fold: int, device: torch.device, run_dir: Path) -> Path:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed = cfg.train.seed * 1000 + fold
    torch.manual_seed(seed)
    rank, world = dist_info()
    if cfg.train.batch_size % world:
        raise ValueError(
            f"train.batch_size {cfg.train.batch_size} is not divisible by the {world} DDP ranks"
        )
    table = pd.read_csv(cfg.data.train_csv)
    check_columns(table, ["image_name", "target", "fold"], cfg.data.train_csv)
    table["target"] = check_targets(table, cfg.data.train_csv)
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
    imratio = cfg.loss.imratio or float(train_df["target"].mean())

    model = create_model(
        cfg.model.backbone, cfg.model.pretrained, cfg.model.drop_rate, cfg.model.drop_path_rate
    )
    if cfg.model.init_from:
        load_stage1(model, cfg, fold)
    model.to(device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    if world > 1 and device.type == "cuda":  # batch statistics over the global batch
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    loss_kwargs = {
        "auc_m": dict(
            margin=cfg.loss.margin, imratio=imratio, batch_score_norm=cfg.loss.batch_score_norm
        ),
        "auc_s": dict(imratio=imratio, batch_score_norm=cfg.loss.batch_score_norm),
        "focal": dict(alpha=cfg.loss.focal_alpha, gamma=cfg.loss.focal_gamma),
    }.get(cfg.loss.name, {})
    loss_fn = build_loss(cfg.loss.name, **loss_kwargs).to(device)
    optimizer = build_optimizer(cfg, model, loss_fn)
    amp = amp_dtype(cfg.train.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)

    start_epoch, best_auc, best_state = 0, -1.0, None
    ckpt_path = run_dir / "checkpoint.pt"
    if ckpt_path.exists():
        start_epoch, best_auc, best_state = resume(
            ckpt_path, cfg, model, loss_fn, optimizer, scaler
        )
        log.info("resumed %s at epoch %d", ckpt_path, start_epoch)
    step_model = model
    if world > 1:
        step_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    step_model = torch.compile(step_model) if cfg.train.compile else step_model

    size = cfg.data.image_size
    train_ds = CachedImages(
        train_df, cfg.data.cache_dir, size, build_train_transform(cfg.augment), seed
    )
    valid_ds = CachedImages(valid_df.iloc[rank::world], cfg.data.cache_dir, size)
    valid_loader = make_loader(valid_ds, cfg.tta.batch_size, cfg.train.num_workers, shuffle=False)
    steps_per_epoch = len(train_ds) // cfg.train.batch_size
    if cfg.train.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.train.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise ValueError(
            f"fold {fold}: {len(train_ds)} training rows < batch_size {cfg.train.batch_size}"
        )
    log.info(
        "fold %d: %d train rows (%.2f%% positive), %d validation rows; %s on %s, amp=%s",
        fold,
        len(train_df),
        100 * imratio,
        len(valid_df),
        cfg.model.backbone,
        device,
        amp,
    )
    history = (
        pd.read_csv(run_dir / "log.csv").iloc[:start_epoch].to_dict("records")
        if start_epoch
        else []
    )

    for epoch in range(start_epoch, cfg.schedule.epochs):
        torch.manual_seed(
            seed * 7919 + epoch + 1_000_003 * rank
        )  # dropout / drop-path, reproducible per epoch
        train_ds.set_epoch(epoch)
        loader = make_loader(
            train_ds,
            cfg.train.batch_size // world,
            cfg.train.num_workers,
            True,
            seed,
            epoch,
            drop_last=True,
            rank=rank,
            world=world,
        )
        t0 = time.perf_counter()
        try:
            mean_loss = run_epoch(
                cfg,
                step_model,
                model,
                loss_fn,
                optimizer,
                scaler,
                loader,
                device,
                amp,
                epoch,
                steps_per_epoch,
            )
        except NonFiniteLoss as err:
            kept = (
                f"the last good checkpoint {ckpt_path} (end of epoch {epoch}) is kept"
                if epoch
                else "no checkpoint yet (first epoch)"
            )
            raise NonFiniteLoss(f"{err}; {kept}, {run_dir / 'model.pt'} is not written") from None
        seconds = time.perf_counter() - t0
        end_of_epoch_schedule(cfg, optimizer, epoch)
        last = epoch + 1 == cfg.schedule.epochs
        val_auc = float("nan")
        if last or (epoch + 1) % cfg.train.eval_every == 0:
            probs = predict_probs(model, valid_loader, device, 1, amp, cfg.train.channels_last)
            probs = gather_rows(probs, len(valid_df), device)
            val_auc = safe_auc(valid_df["target"].to_numpy(), probs)
        row = {
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": mean_loss,
            "val_auc": val_auc,
            "seconds": seconds,
            "images_per_s": steps_per_epoch * cfg.train.batch_size / seconds,
        }
        if hasattr(loss_fn, "alpha"):
            row.update(a=loss_fn.a.item(), b=loss_fn.b.item(), alpha=loss_fn.alpha.item())
        history.append(row)
        log.info("fold %d epoch %d: %s", fold, epoch + 1, {k: round(v, 5) for k, v in row.items()})
        per_rank = check_ranks_agree(loss_fn, fold, epoch)
        if per_rank is not None and last:
            log.info("fold %d: a, b, alpha on each of the %d ranks: %s", fold, world, per_rank)
        if cfg.train.checkpoint == "best" and val_auc > best_auc:
            best_auc, best_state = (
                val_auc,
                {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            )
        if rank == 0:
            write_csv(pd.DataFrame(history), run_dir / "log.csv")
        if not last and rank == 0:
            save_torch(
                {
                    "fingerprint": cfg.fingerprint(),
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "loss": loss_fn.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "best_auc": best_auc,
                    "best_model": best_state,
                },
                ckpt_path,
            )
        if world > 1:
            dist.barrier()  # no rank runs ahead of the checkpoint rank 0 just wrote
    weights = best_state if best_state is not None else model.state_dict()
    final = run_dir / "model.pt"
    if rank == 0:
        save_torch(
            {
                "model": weights,
                "backbone": cfg.model.backbone,
                "image_size": cfg.data.image_size,
                "fingerprint": cfg.fingerprint(),
                "config": to_dict(cfg),
            },
            final,
        )
        if ckpt_path.exists():
            ckpt_path.unlink()
    if world > 1:
        dist.barrier()
    return final


def resume(path: Path, cfg: ExperimentConfig, model, loss_fn, optimizer, scaler=None):
    """Restore a mid-run checkpoint; refuse one written by a different config.

    RNG states need no saving: augmentation, shuffling and dropout are reseeded at the
    start of every epoch, and checkpoints are written only at epoch ends.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != cfg.fingerprint():
        raise ValueError(
            f"{path} was written by a different config (fingerprint {state.get('fingerprint')} != "
            f"{cfg.fingerprint()}); delete it or restore the config it came from"
        )
    model.load_state_dict(state["model"])
    loss_fn.load_state_dict(state["loss"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and scaler.is_enabled() and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])  # fp16 loss scale and its growth tracker
    return state["epoch"], state["best_auc"], state["best_model"]


def run_epoch(
    cfg, step_model, model, loss_fn, optimizer, scaler, loader, device, amp, epoch, steps
) -> float:
    """One pass over ``steps`` batches; returns the mean training loss.

    The loss stays on the device (no per-step ``.item()``); finiteness is checked every
    50 steps and at the end, reporting the first bad step.
    """
    from tqdm import tqdm

    model.train()
    loss_fn.train()
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
            set_lr(optimizer, lr_at(cfg, epoch + step / steps))
        x = to_device_batch(x, device, cfg.train.channels_last)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = step_model(x).squeeze(1)
        loss = loss_fn(loss_input(loss_fn, logits.float()), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if world > 1 and not isinstance(optimizer, PESG):  # PESG averages them itself
            average_grads(loss_fn.parameters())
        if cfg.train.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        detached = loss.detach()
        total += detached
        global_step = epoch * steps + step
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(detached), global_step, first_bad)
        if step % 50 == 49 or step == steps - 1:
            bad = first_bad
            if world > 1:  # every rank stops together, at the first bad step of any rank
                none = torch.iinfo(torch.long).max
                bad = torch.where(first_bad < 0, none, first_bad)
                dist.all_reduce(bad, op=dist.ReduceOp.MIN)
                bad = torch.where(bad == none, -1, bad)
            bad = int(bad)
            if bad >= 0:
                raise NonFiniteLoss(
                    f"{cfg.name}: training loss became non-finite at step {bad} "
                    f"(epoch {epoch + 1}, step {bad - epoch * steps + 1} of {steps})"
                )
        bar.update(1)
    bar.close()
    if world > 1:
        dist.all_reduce(total)
        total /= world
    return float(total) / steps


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
