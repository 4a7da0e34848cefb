"""Shared machinery of the benchmark suite: interleaved timing, tables, synthetic data.

Every figure the suite reports is a ratio of contenders timed side by side in one
process: :func:`compare` runs a warm-up call of each contender, then ``reps`` rounds in
which every contender runs once, in an order rotated from round to round, so slow
phases of a shared machine hit all contenders alike. A ratio is the median over rounds
of the ratio *within* a round (paired), which cancels most of the drift that an
unpaired ratio of medians would keep; the spread (min-max of the per-round ratios) is
printed next to it so a noisy figure shows itself.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import re
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


# -- run context ------------------------------------------------------------------------------
@dataclass
class Ctx:
    """What every benchmark gets: the device, the size of the run and a scratch folder."""

    device: torch.device
    tmp: Path
    quick: bool = False
    full: bool = False
    reps: int = 5
    warmup: int = 1
    workers: int = 0  # DataLoader workers of the pipeline contenders
    model: str = "efficientnet_b0"
    sizes: list[int] | None = None  # training-step resolutions (None: the benchmark's default)
    batch: int = 32
    compile: bool = False
    peak_tflops: float = 0.0  # the device's peak, for "fraction of peak" (0 = not shown)
    shared: dict = field(default_factory=dict)  # figures one benchmark leaves for another

    def note(self, text: str) -> None:
        print(f"  .. {text}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(
    contenders: dict[str, Callable[[], object]],
    reps: int,
    warmup: int = 1,
    device: torch.device | None = None,
    setup: dict[str, Callable[[], object]] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each contender over ``reps`` interleaved rounds (after warm-up).

    Round ``r`` runs the contenders starting from the ``r``-th (rotation), so none is
    always first or last. CUDA work is synchronised before and after every call.
    ``setup[name]``, when given, runs untimed before each call of ``name`` (e.g. starting
    a loader's workers).
    """
    names = list(contenders)
    device = device or torch.device("cpu")
    setup = setup or {}
    for _ in range(warmup):
        for name in names:
            if name in setup:
                setup[name]()
            contenders[name]()
    sync(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        for j in range(len(names)):
            name = names[(r + j) % len(names)]
            if name in setup:
                setup[name]()
            sync(device)
            t0 = time.perf_counter()
            contenders[name]()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def median(xs: Iterable[float]) -> float:
    return float(statistics.median(list(xs)))


def paired_ratio(num: list[float], den: list[float]) -> tuple[float, float, float]:
    """Median, min and max over rounds of ``num[r] / den[r]``."""
    ratios = [a / b for a, b in zip(num, den)]
    return median(ratios), min(ratios), max(ratios)


def fmt_ratio(r: tuple[float, float, float], digits: int = 2) -> str:
    med, lo, hi = r
    return f"{med:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


def fmt(x: float, digits: int = 3) -> str:
    """A number with ``digits`` significant figures, without scientific notation below 1e6."""
    if x != x:  # NaN
        return "n/a"
    if x == 0:
        return "0"
    mag = int(np.floor(np.log10(abs(x))))
    decimals = max(0, digits - 1 - mag)
    return f"{x:,.{decimals}f}"


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("**met**" if ok else "**not met**")


# -- tables -----------------------------------------------------------------------------------
@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells) -> None:
        self.rows.append([str(c) for c in cells])

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.notes:
            lines.append("")
            lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


# -- machine ----------------------------------------------------------------------------------
def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, str]:
    import albumentations
    import timm

    info = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "logical CPUs": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "torch CPU capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "albumentations": albumentations.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "device": str(device),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    with contextlib.suppress(OSError):
        info["load average at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


def machine_slug(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "machine"
    return f"{slug}-{os.cpu_count()}cpu"


# -- synthetic data ---------------------------------------------------------------------------
def lesion_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random RGB uint8 'dermoscopy-like' image: skin background, an irregular dark
    blob, hair-like strokes and sensor noise (so JPEG sizes and decode work are realistic)."""
    small_h, small_w = max(8, h // 8), max(8, w // 8)
    skin = np.array([rng.uniform(170, 230), rng.uniform(120, 170), rng.uniform(100, 150)])
    base = skin + rng.normal(0, 6, (small_h, small_w, 3))
    yy, xx = np.mgrid[0:small_h, 0:small_w]
    cy, cx = small_h * rng.uniform(0.35, 0.65), small_w * rng.uniform(0.35, 0.65)
    r0 = min(small_h, small_w) * rng.uniform(0.15, 0.35)
    ang = np.arctan2(yy - cy, xx - cx)
    wobble = 1 + 0.2 * np.sin(3 * ang + rng.uniform(0, 6)) + 0.1 * np.sin(7 * ang)
    dist = np.hypot(yy - cy, xx - cx) / (r0 * wobble)
    inside = np.clip(1.3 - dist, 0, 1)[..., None]
    lesion = np.array([rng.uniform(60, 120), rng.uniform(30, 70), rng.uniform(20, 50)])
    img = base * (1 - inside) + (lesion + rng.normal(0, 12, base.shape)) * inside
    img = cv2.resize(img.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(0, 4))):  # hairs
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p0, p1, (40.0, 30.0, 25.0), max(1, min(h, w) // 150), cv2.LINE_AA)
    img += rng.normal(0, 3, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_cache(
    cache_dir: Path, size: int, n: int, seed: int = 0, pos_ratio: float = 0.25
) -> pd.DataFrame:
    """``n`` lesion-like images cached as ``size``x``size`` JPEGs where the pipeline
    looks for them (:func:`deepauc.data.image_cache.cache_path`); returns their table."""
    from deepauc.data.image_cache import JPEG_QUALITY, cache_path

    rng = np.random.default_rng(seed)
    names = [f"BENCH_{i:06d}" for i in range(n)]
    for name in names:
        path = cache_path(cache_dir, size, name)
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        rgb = lesion_image(rng, size, size)
        cv2.imwrite(
            str(path),
            cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY],
        )
    n_pos = max(1, round(n * pos_ratio))
    target = np.zeros(n, np.float32)
    target[np.random.default_rng(seed + 1).choice(n, n_pos, replace=False)] = 1
    return pd.DataFrame({"image_name": names, "target": target})


def experiment(cache_dir: Path, size: int, ctx: Ctx, **sections) -> object:
    """An in-memory :class:`deepauc.pipeline.experiment.ExperimentConfig` for a benchmark run:
    AUC-M + PESG (stage 2 of DAM, the configuration this project is about)."""
    from deepauc.config import from_dict
    from deepauc.pipeline.experiment import ExperimentConfig

    d = {
        "name": "bench",
        "data": {"train_csv": "unused.csv", "cache_dir": str(cache_dir), "image_size": size},
        "model": {"backbone": ctx.model, "pretrained": False, "drop_rate": 0.2},
        "loss": {"name": "auc_m", "margin": 1.0},
        "optim": {"name": "pesg", "lr": 0.05, "epoch_decay": 2e-3, "weight_decay": 1e-5},
        "schedule": {"name": "constant", "epochs": 1},
        "train": {"batch_size": ctx.batch, "num_workers": ctx.workers, "seed": 0},
        "tta": {"dihedral": 8, "batch_size": ctx.batch},
    }
    for key, value in sections.items():
        d.setdefault(key, {}).update(value)
    return from_dict(ExperimentConfig, d)


def step_flops(model: torch.nn.Module, x: torch.Tensor, backward: bool = True) -> float:
    """Floating-point operations of one forward (x 3 with ``backward``: the usual estimate of
    forward + backward) pass of ``model`` on ``x``, counted by torch's FlopCounterMode.

    Only the forward pass is counted: torch 2.14's counter charges depthwise convolutions'
    backward as dense ones (EfficientNet-B0 at 224 px: 0.77 GFLOP forward, 32 "GFLOP" forward
    + backward).
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    with counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return float(counter.get_total_flops()) * (3 if backward else 1)


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB.

    Linux: ``VmHWM`` of ``/proc/self/status``, which starts afresh at ``exec``.
    (``getrusage``'s ``ru_maxrss`` is not used there: it survives ``exec``, so a subprocess
    would report its parent's peak at the time of the fork.) Elsewhere: ``ru_maxrss``.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    import resource

    scale = 1024.0 if sys.platform != "darwin" else 1024.0**2  # KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
