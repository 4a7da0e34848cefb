"""Where and how the model runs, shared by train and predict: device, AMP, loaders, DDP.

Also the inference loop validation uses (mean sigmoid over dihedral views).
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from deepauc.data.augment import dihedral_views
from deepauc.data.dataset import to_device_batch
from deepauc.data.sampling import EpochShard
from deepauc.pipeline.experiment import resolve_workers

log = logging.getLogger("deepauc.pipeline.runtime")

# DEEPAUC_DEVICE=cpu runs on the CPU even where a GPU is expected (see pick_device)
DEVICE_ENV = "DEEPAUC_DEVICE"
BF16_CAPABILITY = (8, 0)  # Ampere: the first compute capability with native bf16 tensor cores


class DeviceUnusable(RuntimeError, ValueError):
    """The GPU is there but cannot run (a ValueError too, so the CLI prints one line)."""


def pick_device() -> torch.device:
    """CUDA when it can run this torch's kernels, the CPU when asked for or when no GPU is there.

    ``DEEPAUC_DEVICE=cpu`` chooses the CPU. Otherwise a GPU that is evidently present but
    unusable (a driver too old for this torch's CUDA, a card whose architecture this torch
    was not built for) stops the run with one line instead of training on the CPU for days.
    """
    wanted = os.environ.get(DEVICE_ENV, "").strip().lower()
    if wanted not in ("", "cpu", "cuda"):
        raise ValueError(f"{DEVICE_ENV}={wanted!r}: expected cpu or cuda")
    if wanted == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        check_gpu_arch(torch.cuda.current_device())
        return torch.device("cuda")
    if wanted == "cuda" or gpu_expected():
        raise DeviceUnusable(f"{cuda_unusable_reason()}; set {DEVICE_ENV}=cpu to run on the CPU")
    return torch.device("cpu")


def device_label(device: torch.device) -> str:
    """``cpu``, or ``cuda (<GPU name>)`` for the logs."""
    if device.type != "cuda":
        return str(device)
    return f"{device} ({torch.cuda.get_device_name(device)})"


def gpu_expected() -> bool:
    """A GPU is evidently meant to be used: NVIDIA device files, or a non-empty device list."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:  # "" or -1 hide the GPUs on purpose
        return visible.strip() not in ("", "-1")
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")


def cuda_unusable_reason() -> str:
    """Why ``torch.cuda.is_available()`` is False although a GPU is expected, in one line."""
    cuda = torch.version.cuda
    if cuda is None:
        return f"a GPU is expected but torch {torch.__version__} is a CPU-only build"
    try:
        torch.cuda.init()
    except Exception as err:  # the driver's own words: too old, no device, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return (
            f"a GPU is expected but torch {torch.__version__} (CUDA {cuda}) cannot use it: {first} "
            "(a driver older than this CUDA needs a newer driver or a torch built for an older CUDA)"
        )
    return f"a GPU is expected but torch {torch.__version__} (CUDA {cuda}) sees no usable device"


def arch_supported(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether kernels built for ``arch_list`` run on a GPU of compute ``capability``.

    Machine code (``sm_XY``) runs on the same major version at an equal or higher minor;
    PTX (``compute_XY``) is compiled by the driver for any equal or newer GPU.
    """
    major, minor = capability
    for arch in arch_list:
        kind, _, digits = arch.partition("_")
        if not digits.isdigit():
            continue
        a_major, a_minor = int(digits[:-1]), int(digits[-1])
        if kind == "sm" and a_major == major and a_minor <= minor:
            return True
        if kind == "compute" and (a_major, a_minor) <= (major, minor):
            return True
    return False


def check_gpu_arch(index: int) -> None:
    """Refuse a GPU whose architecture this torch has no kernels for (e.g. sm_60 on a cu13 build)."""
    cap = torch.cuda.get_device_capability(index)
    archs = torch.cuda.get_arch_list()
    if archs and not arch_supported(cap, archs):
        raise DeviceUnusable(
            f"{torch.cuda.get_device_name(index)} (compute capability {cap[0]}.{cap[1]}, "
            f"sm_{cap[0]}{cap[1]}) is not among the architectures torch {torch.__version__} was "
            f"built for ({' '.join(archs)}): install a torch build that lists it, or set "
            f"{DEVICE_ENV}=cpu"
        )


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.amp`` on ``device`` (None = full precision).

    ``auto``: bf16 only on GPUs that compute it natively (compute capability >= 8.0), fp16
    with loss scaling below. ``torch.cuda.is_bf16_supported()`` cannot decide this: it
    answers True on a T4 or V100, where bf16 is emulated at a fraction of fp16's speed.
    ``bf16`` asked for on such a GPU is refused rather than silently emulated.
    """
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":  # bf16/fp16 asked for on the CPU: autocast as asked
        return torch.float16 if setting == "fp16" else torch.bfloat16
    cap = torch.cuda.get_device_capability(device)
    name = torch.cuda.get_device_name(device)
    native_bf16 = tuple(cap) >= BF16_CAPABILITY
    if setting == "bf16" and not native_bf16:
        raise ValueError(
            f"train.amp: bf16 on {name} (compute capability {cap[0]}.{cap[1]}): bf16 is native "
            "from 8.0 (A100, L4, H100) only; use amp: auto or fp16"
        )
    dtype = (
        torch.bfloat16
        if setting == "bf16" or (setting == "auto" and native_bf16)
        else torch.float16
    )
    scaling = " with loss scaling" if dtype is torch.float16 else ""
    log.info(
        "precision: %s%s on %s (compute capability %d.%d, train.amp=%s)",
        *(str(dtype).removeprefix("torch."), scaling, name, cap[0], cap[1], setting),
    )
    return dtype


def make_loader(
    ds,
    batch_size: int,
    workers: int | str,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    drop_last=False,
    rank: int = 0,
    world: int = 1,
    start: int = 0,
    sampler: Sampler[int] | None = None,
):
    """A loader over ``ds``: in order, or shuffled per (seed, epoch) and split over ranks
    (:class:`EpochShard`, skipping ``start`` of this rank's rows), or with ``sampler``."""
    if sampler is None and shuffle:
        sampler = EpochShard(len(ds), seed, epoch, rank, world, start)
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=resolve_workers(workers),
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
    if pick_device().type == "cuda":
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
