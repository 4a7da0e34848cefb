"""The training steps of one epoch: forward/backward over ``train.accumulate`` micro-batches,
one optimizer (and PESG dual) step per batch, the loss kept on the device."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.distributed as dist

from deepauc.data.dataset import to_device_batch
from deepauc.losses import loss_input
from deepauc.optim import average_grads, mean_over_ranks, owns_loss
from deepauc.pipeline.experiment import ExperimentConfig
from deepauc.pipeline.runtime import dist_info
from deepauc.pipeline.schedule import lr_at, per_step_lr, set_lr


class NonFiniteLoss(RuntimeError, ValueError):
    """The training loss became NaN or infinite (a ValueError too, so the CLI reports it)."""


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
    ema: Any = None  # timm's ModelEmaV3 of ``model`` when train.ema_decay is set


def weights_model(state: TrainState) -> torch.nn.Module:
    """The network whose weights are validated and saved: the moving average when kept."""
    return state.model if state.ema is None else state.ema.module


@dataclass
class EpochProgress:
    """Where an epoch stands after ``step`` batches: what a recovery checkpoint keeps."""

    step: int
    total: torch.Tensor  # sum of the batch losses so far (on the device)
    first_bad: torch.Tensor  # first non-finite global step, -1 if none


# called after every batch; may save a recovery checkpoint or stop the run
StepHook = Callable[[EpochProgress], None]


def run_epoch(
    state: TrainState,
    loader,
    epoch: int,
    steps: int,
    progress: EpochProgress | None = None,
    hook: StepHook | None = None,
) -> float:
    """Batches ``progress.step`` .. ``steps - 1`` of an epoch; returns the epoch's mean loss.

    ``loader`` yields the epoch's batches from ``progress.step`` on (a resumed epoch);
    ``progress`` carries the loss sum of the batches before. The loss stays on the device
    (no per-step ``.item()``); finiteness is checked every 50 steps and at the end,
    reporting the first bad step. ``hook`` sees the progress after every batch.
    """
    from tqdm import tqdm

    cfg, device = state.cfg, state.device
    state.model.train()
    state.loss_fn.train()
    if progress is None:
        zero = torch.zeros((), device=device)
        progress = EpochProgress(0, zero, torch.full((), -1, device=device, dtype=torch.long))
    step_lr = per_step_lr(cfg, epoch)
    rank = dist_info()[0]
    bar = tqdm(
        total=steps,
        initial=progress.step,
        desc=f"{cfg.name} e{epoch + 1}",
        leave=False,
        mininterval=5,
        disable=os.environ.get("DEEPAUC_PROGRESS", "1") == "0" or rank != 0,
    )
    for step, (x, y) in enumerate(loader, start=progress.step):
        if step >= steps:
            break
        if step_lr:
            set_lr(state.optimizer, lr_at(cfg, epoch + step / steps, 1 / steps))
        detached = train_step(state, x, y)
        progress.total += detached
        global_step = epoch * steps + step
        bad = (progress.first_bad < 0) & ~torch.isfinite(detached)
        progress.first_bad = torch.where(bad, global_step, progress.first_bad)
        if step % 50 == 49 or step == steps - 1:
            raise_if_non_finite(cfg, progress.first_bad, epoch, steps)
        progress.step = step + 1
        bar.update(1)
        if hook is not None and progress.step < steps:
            hook(progress)
    bar.close()
    total = progress.total.clone()
    mean_over_ranks([total])
    return float(total) / steps


def micro_batches(x: torch.Tensor, y: torch.Tensor, accumulate: int):
    """``accumulate`` equal consecutive slices of the batch (its size is divisible by it)."""
    if x.shape[0] % accumulate:
        raise ValueError(
            f"a batch of {x.shape[0]} rows does not split into {accumulate} micro-batches"
        )
    return zip(x.chunk(accumulate), y.chunk(accumulate))


def train_step(state: TrainState, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Forward and backward over ``train.accumulate`` micro-batches, then one optimizer step.

    Each micro-batch's loss is computed on its own rows and scaled by 1/accumulate, so the
    gradient stepped on (the network's and the AUC loss's a, b, α alike) is the mean of the
    micro-batch gradients. Returns the detached batch loss (the mean of the micro-batch losses).
    """
    cfg, device, amp = state.cfg, state.device, state.amp
    k = cfg.train.accumulate
    state.optimizer.zero_grad(set_to_none=True)
    batch_loss = torch.zeros((), device=device)
    for i, (xm, ym) in enumerate(micro_batches(x, y, k)):
        xm = to_device_batch(xm, device, cfg.train.channels_last)
        ym = ym.to(device, non_blocking=True)
        # under DDP the gradients are all-reduced on the last micro-batch only
        sync = i == k - 1 or not hasattr(state.step_model, "no_sync")
        with contextlib.nullcontext() if sync else cast(Any, state.step_model).no_sync():
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits = state.step_model(xm).squeeze(1)
            loss = state.loss_fn(loss_input(state.loss_fn, logits.float()), ym) / k
            state.scaler.scale(loss).backward()
        batch_loss += loss.detach()
    if dist_info()[1] > 1 and not owns_loss(state.optimizer):  # PESG averages them itself
        average_grads(state.loss_fn.parameters())
    if cfg.train.grad_clip:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.train.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    if state.ema is not None:
        state.ema.update(state.model)
    return batch_loss


def raise_if_non_finite(cfg: ExperimentConfig, first_bad: torch.Tensor, epoch: int, steps: int):
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


class OutOfMemory(RuntimeError, ValueError):
    """CUDA ran out of memory in a training step (a ValueError too: the CLI prints one line)."""


def is_out_of_memory(err: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(err, oom) or "out of memory" in str(err)


def _next_accumulate(per_rank: int, k: int) -> int | None:
    """The next micro-batch count above ``k`` that divides the rank's batch (None: none left)."""
    return next((d for d in range(k + 1, per_rank + 1) if per_rank % d == 0), None)


def out_of_memory_message(state: TrainState) -> str:
    """One line: the model, image size and micro-batch that did not fit, and what would."""
    cfg, device = state.cfg, state.device
    t, m = cfg.train, cfg.model
    world = dist_info()[1]
    per_rank = t.batch_size // world
    micro = per_rank // t.accumulate
    card = ""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory / 2**30
        card = f" on {torch.cuda.get_device_name(device)} ({total:.0f} GiB)"
    fixes = []
    if t.memory and t.gpu_memory_gb is None:
        fixes.append(f"train.gpu_memory_gb=<card GB> (settings for {sorted(t.memory)} GB cards)")
    more = _next_accumulate(per_rank, t.accumulate)
    if more is not None:
        fixes.append(f"train.accumulate={more} (micro-batch {per_rank // more})")
    if not m.grad_checkpointing and not m.backbone.startswith("efficientnet_pytorch/"):
        fixes.append("model.grad_checkpointing=true")
    gc = ", grad checkpointing on" if m.grad_checkpointing else ""
    return (
        f"{cfg.name}: CUDA out of memory training {m.backbone} at {cfg.data.image_size} px with "
        f"micro-batch {micro} per GPU (batch {t.batch_size} over {world} GPU(s), "
        f"accumulate {t.accumulate}{gc}){card}; to fit, set "
        + (" or ".join(fixes) if fixes else "a smaller train.batch_size")
        + " (as --set key=value)"
    )
