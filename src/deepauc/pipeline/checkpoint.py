"""What a training run keeps on disk: ``checkpoint.pt`` (at epoch ends and mid-epoch, with
every rank's RNG states, resumed exactly and refused under another config), the finished
``model.pt`` and its "already trained" check, and the stage-1 weights stage 2 starts from."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from deepauc.config import to_dict
from deepauc.io import load_torch, save_torch
from deepauc.models import reset_head
from deepauc.models.factory import model_family
from deepauc.pipeline.experiment import ExperimentConfig
from deepauc.pipeline.provenance import check_model_record
from deepauc.pipeline.runtime import dist_info
from deepauc.pipeline.steps import EpochProgress, TrainState, weights_model

# the training run's logger: train.py copies its messages into the run's train.log
log = logging.getLogger("deepauc.pipeline.train")


def already_trained(cfg: ExperimentConfig, fold: int, record: dict) -> bool:
    """True when fold ``fold``'s ``model.pt`` exists and was made from the current config,
    fold assignment and stage-1 weights (``record``); a different one stops the run with
    the difference named."""
    final = cfg.run_dir(fold) / "model.pt"
    if not final.exists():
        return False
    redo = str(final.parent.parent)
    check_model_record(load_torch(final), final, record, cfg.data.train_csv, redo)
    log.info("%s exists: fold %d already trained", final, fold)
    return True


def load_stage1(model: torch.nn.Module, cfg: ExperimentConfig, fold: int) -> None:
    """Two-stage DAM: start from the stage-1 run's weights of ``fold``, with a fresh head
    of the size ``model`` was built with (stage 1's head may have had another)."""
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
    outputs = head_size(model)
    stage1_outputs = head_size(model, saved["model"])
    if stage1_outputs != outputs:  # e.g. a softmax over the diagnosis classes
        reset_head(model, stage1_outputs)
    model.load_state_dict(saved["model"])
    reset_head(model, outputs)


def head_size(model: torch.nn.Module, state: dict | None = None) -> int:
    """The classifier's number of outputs in ``model``, or in the state dict ``state`` of
    a network of the same architecture."""
    name = model_family(model).head_name(model)
    weights = (state if state is not None else model.state_dict())[f"{name}.weight"]
    return int(weights.shape[0])


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
            "ema": None if state.ema is None else state.ema.module.state_dict(),
            "loss": state.loss_fn.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scaler": state.scaler.state_dict(),
            "best_auc": best_auc,
            "best_model": best_state,
            "mid_epoch": mid,
        },
        path,
    )


def resume(
    path: Path, cfg: ExperimentConfig, model, loss_fn, optimizer, scaler=None, record=None, ema=None
):
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
    if ema is not None:
        ema.module.load_state_dict(state["ema"])
    return state["epoch"], state["best_auc"], state["best_model"], state.get("mid_epoch")


def progress_from(mid: dict | None, device: torch.device) -> EpochProgress | None:
    """The saved mid-epoch progress on ``device`` (its RNG states are set by the caller)."""
    if mid is None:
        return None
    return EpochProgress(mid["step"], mid["total"].to(device), mid["first_bad"].to(device))


def save_model(state: TrainState, run_dir: Path, best_state: dict | None, record: dict) -> Path:
    """Write ``model.pt`` (rank 0: the best weights when kept, else the last) and drop the
    mid-run checkpoint; returns its path."""
    cfg = state.cfg
    rank, world = dist_info()
    final = run_dir / "model.pt"
    if rank == 0:
        save_torch(
            {
                "model": best_state
                if best_state is not None
                else weights_model(state).state_dict(),
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
