"""Where and how the model runs, shared by train and predict: device, AMP, loaders, DDP.

Also the inference loop validation uses (mean sigmoid over dihedral views).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from deepauc.data.augment import dihedral_views
from deepauc.data.dataset import to_device_batch
from deepauc.metrics import roc_auc


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


def convert_sync_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every BatchNorm synchronised over the DDP ranks, activations kept.

    timm's converter maps its fused ``BatchNormAct2d`` (BN + activation) to
    ``SyncBatchNormAct``; torch's own converter would turn it into a bare SyncBatchNorm
    and drop the activation. Parameters and running statistics are shared, not copied.
    """
    from timm.layers import convert_sync_batchnorm as timm_convert

    return timm_convert(model)


def sync_batchnorm_for_ranks(
    model: torch.nn.Module, world: int, device: torch.device
) -> torch.nn.Module:
    """SyncBatchNorm (batch statistics over the global batch) for a multi-GPU run.

    Unchanged on CPU, where SyncBatchNorm cannot train, and for a single process.
    """
    if world > 1 and device.type == "cuda":
        return convert_sync_batchnorm(model)
    return model


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


@torch.no_grad()
def predict_probs(
    model, loader, device, n_views: int = 1, amp: torch.dtype | None = None, channels_last=True
):
    """Mean sigmoid score over ``n_views`` dihedral views for every row of ``loader``."""
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
