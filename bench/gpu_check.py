"""The prepared device check: environment, numerical parity, a small pipeline run, throughput.

    python3 bench/gpu_check.py --device cuda --out "$OUT/gpu-check.md"
    python3 bench/gpu_check.py --device cpu --out /tmp/gpu-check.md   # tiny sizes (the test's)

Starts from the repository root with a bare interpreter: the repository's ``src`` is put
first on ``sys.path`` here, so neither an install nor ``PYTHONPATH`` is needed. Each
section is appended to the report as soon as it ends, so a crash or a kill leaves the
sections before it; a section that fails or overruns its time limit says so and the next
one runs; the whole check stops within ``--budget-s``. Exit status 1 when a section failed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import importlib
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

BENCH_DIR = Path(__file__).resolve().parent
# this checkout's deepauc, ahead of any installed one; then the bench helpers
sys.path[:0] = [str(BENCH_DIR.parent / "src"), str(BENCH_DIR)]

from gpu_check_memory import memory_16gb_section  # noqa: E402
from gpu_check_runs import (  # noqa: E402
    fed_and_tta_section,
    loader_throughput_section,
    pipeline_section,
    table,
    training_throughput_section,
)

PARITY_ATOL = 1e-5


@dataclass
class Plan:
    """Sizes of one check: the real ones on CUDA, tiny ones for the CPU dry run."""

    device: torch.device
    tiny: bool
    tmp: Path
    section_seconds: int = 150
    pipeline_backbone: str = "tf_efficientnet_b0"
    pipeline_size: int = 256
    ce_steps: int = 30
    batch: int = 32
    workers: int = 8
    threads: int = 0  # torch threads of the pipeline run (0: torch's default)
    syncbn_backbone: str = "tf_efficientnet_b0"
    throughput: list[tuple[str, int, int]] = field(default_factory=list)
    loader_workers: tuple[int, ...] = (12, 16)
    peak_tflops: float = 989.0  # dense bf16 of an H100/H200 SXM
    budget_seconds: float = 540.0  # the whole check, so that it ends inside 10 minutes

    @classmethod
    def for_device(cls, device: torch.device, tmp: Path, peak_tflops: float) -> Plan:
        if device.type != "cuda":
            tiny_net = "mobilenetv3_small_050"
            return cls(
                device, True, tmp, section_seconds=300, pipeline_backbone=tiny_net,
                pipeline_size=32, ce_steps=3, batch=4, workers=0, threads=1,
                syncbn_backbone=tiny_net,
            )  # fmt: skip
        # the recipe's backbones (configs/siim): TensorFlow-ported weights and padding
        grid = [
            ("tf_efficientnet_b0", 256, 128),
            ("tf_efficientnet_b3", 256, 96),
            ("tf_efficientnet_b5", 384, 48),
            ("tf_efficientnet_b6", 512, 24),
        ]
        return cls(device, False, tmp, throughput=grid, peak_tflops=peak_tflops)


# limits in units of Plan.section_seconds: the 16 GB section trains six recipes, each
# paying cuDNN's algorithm search for its shapes (219 s on an H200)
LONG_SECTIONS = {"memory_16gb": 2}


class SectionTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int):
    """Raise SectionTimeout in the main thread after ``seconds`` (checked between ops)."""

    def expire(signum, frame):
        raise SectionTimeout(f"over its {seconds} s limit")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# -- environment -------------------------------------------------------------------------------
def _version(module: str) -> str:
    try:
        return importlib.import_module(module).__version__
    except Exception as err:  # a missing wheel is a finding, not a failure
        return f"missing ({type(err).__name__})"


def _nccl_version() -> str:
    version = torch.cuda.nccl.version()
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment_section(plan: Plan) -> str:
    cuda = plan.device.type == "cuda"
    rows = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "CUDA (torch build)": torch.version.cuda or "none",
        "cuDNN": torch.backends.cudnn.version() if cuda else "n/a",
        "NCCL": _nccl_version() if cuda else "n/a",
        "device": torch.cuda.get_device_name(plan.device) if cuda else _cpu_name(),
        "device memory GiB": (
            round(torch.cuda.get_device_properties(plan.device).total_memory / 2**30, 1)
            if cuda
            else "n/a"
        ),
        "bf16 supported": torch.cuda.is_bf16_supported() if cuda else "n/a",
        "CPUs": os.cpu_count(),
    }
    for module in ["timm", "cv2", "albumentations", "lightgbm", "sklearn", "pandas"]:
        rows[module] = _version(module)
    import deepauc

    rows["deepauc imported from"] = str(Path(deepauc.__file__).parent)
    return table([{"item": k, "value": v} for k, v in rows.items()])


# -- parity ------------------------------------------------------------------------------------
def conv_bn_silu_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.SiLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.SiLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 1),
    )


def _batches(n_steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [
        (torch.randn(16, 3, 16, 16, generator=gen), (torch.arange(16) % 4 == 0).float())
        for _ in range(n_steps)
    ]


def pesg_run(device: torch.device, momentum: float, dual: str) -> torch.Tensor:
    """Weights and (a, b, α) after 5 PESG steps, a stage end and 2 more steps."""
    from deepauc.losses import create_loss
    from deepauc.optim import create_optimizer

    net = conv_bn_silu_net().to(device, memory_format=torch.channels_last)
    loss_fn = create_loss("auc_m", imratio=0.25).to(device)
    opt = create_optimizer(
        "pesg", net.parameters(), loss_fn, lr=0.1, weight_decay=1e-4, momentum=momentum,
        epoch_decay=3e-3, dual=dual,
    )  # fmt: skip
    for step, (x, y) in enumerate(_batches(7)):
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        loss = loss_fn(torch.sigmoid(net(x).squeeze(1)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step == 4:
            opt.next_stage(2.0)
    tensors = list(net.parameters()) + [loss_fn.a, loss_fn.b, loss_fn.alpha]
    return torch.cat([t.detach().double().cpu().flatten() for t in tensors])


@contextlib.contextmanager
def tf32_off():
    matmul, conv = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, conv


def pesg_parity_section(plan: Plan) -> str:
    from deepauc import optim

    rows = []
    with tf32_off():
        for momentum, path in [(0.0, "fused"), (0.9, "foreach")]:
            for dual in ["normalized", "paper", "closed_form"]:
                cpu = pesg_run(torch.device("cpu"), momentum, dual)
                dev = pesg_run(plan.device, momentum, dual)
                diff = (cpu - dev).abs()
                rows.append(
                    {
                        "path": path,
                        "momentum": momentum,
                        "dual": dual,
                        "max |Δ weights|": float(diff[:-3].max()),
                        "max |Δ (a, b, α)|": float(diff[-3:].max()),
                        f"≤ {PARITY_ATOL:g}": bool(diff.max() <= PARITY_ATOL),
                    }
                )
    fused = "available" if optim._FUSED_SGD is not None else "missing (foreach used)"
    note = (
        f"CPU against {plan.device} (TF32 off), conv-BN-SiLU net in channels-last, AUC-M, "
        f"5 steps, a stage end, 2 steps; torch's fused SGD kernel: {fused}."
    )
    return note + "\n\n" + table(rows)


def _scaled_step(device: torch.device, scaled: bool) -> tuple[torch.Tensor, float]:
    """(a, b, α) after one PESG step from zero, with or without GradScaler; the scale."""
    from deepauc.losses import create_loss
    from deepauc.optim import create_optimizer

    net = conv_bn_silu_net().to(device)
    loss_fn = create_loss("auc_m", imratio=0.25).to(device)
    opt = create_optimizer("pesg", net.parameters(), loss_fn, lr=0.1, epoch_decay=3e-3)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**16, enabled=scaled)
    x, y = _batches(1)[0]
    fp16 = scaled and device.type == "cuda"  # fp16 autocast where the pipeline uses it
    with torch.autocast(device.type, dtype=torch.float16, enabled=fp16):
        logits = net(x.to(device)).squeeze(1)
    loss = loss_fn(torch.sigmoid(logits.float()), y.to(device))
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    abc = torch.cat([loss_fn.a, loss_fn.b, loss_fn.alpha]).detach().double().cpu()
    return abc, scaler.get_scale() if scaled else 1.0


def grad_scaler_section(plan: Plan) -> str:
    plain, _ = _scaled_step(plan.device, scaled=False)
    scaled, scale = _scaled_step(plan.device, scaled=True)
    rows = [
        {"variable": name, "fp32 step": float(p), "scaled step": float(q), "|Δ|": float(abs(p - q))}
        for name, p, q in zip(["a", "b", "α"], plain, scaled, strict=True)
    ]
    mode = "fp16 autocast" if plan.device.type == "cuda" else "fp32 (no fp16 autocast on CPU)"
    return (
        f"One PESG step from a = b = α = 0 with GradScaler (init scale 2^16, {mode}) against "
        f"a plain fp32 step. Scale after the step: {scale:g} (halved: the step was "
        "skipped).\n\n" + table(rows)
    )


def syncbn_section(plan: Plan) -> str:
    from deepauc.models import create_model
    from deepauc.pipeline.runtime import convert_sync_batchnorm

    torch.manual_seed(0)
    model = create_model(plan.syncbn_backbone, pretrained=False).eval().to(plan.device)
    size = 64 if plan.tiny else 224
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    x = x.to(plan.device)
    with torch.no_grad():
        before = model(x)
        rows = []
        for name, convert in [
            ("timm.layers.convert_sync_batchnorm (used)", convert_sync_batchnorm),
            (
                "torch.nn.SyncBatchNorm.convert_sync_batchnorm",
                nn.SyncBatchNorm.convert_sync_batchnorm,
            ),
        ]:
            after = convert(copy.deepcopy(model))(x)
            rows.append(
                {"converter": name, "max |Δ eval output|": float((after - before).abs().max())}
            )
    return f"{plan.syncbn_backbone}, eval mode, {size} px, on {plan.device}.\n\n" + table(rows)


# -- the run ---------------------------------------------------------------------------------
SECTIONS: list[tuple[str, Callable[[Plan], str]]] = [
    ("Environment", environment_section),
    ("Parity: PESG, CPU against the device", pesg_parity_section),
    ("Parity: fp16 GradScaler step against fp32", grad_scaler_section),
    ("Parity: SyncBatchNorm converters", syncbn_section),
    ("Pipeline: CE, AUC-M from it, checkpoint, resume, TTA", pipeline_section),
    ("Memory: the 16 GB settings in fp16 under a 16 GB cap", memory_16gb_section),
    ("Throughput: training step per backbone", training_throughput_section),
    ("Throughput: the training loader", loader_throughput_section),
    ("Throughput: loader-fed training and TTA at B5@384", fed_and_tta_section),
]


def run_sections(plan: Plan, out: Path, only: list[str] | None = None) -> int:
    """Write the report section by section; returns the number of failed sections."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    sizes = "tiny sizes (dry run)" if plan.tiny else "full sizes"
    out.write_text(f"# Device check: {plan.device}, {sizes}, {stamp}\n\n")
    failed, deadline = 0, time.perf_counter() + plan.budget_seconds
    for title, section in SECTIONS:
        name = section.__name__.removesuffix("_section")
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        print(f"gpu-check: {title} ...", flush=True)
        # a section gets its own limit, cut to what is left of the whole check's budget
        limit = int(min(plan.section_seconds * LONG_SECTIONS.get(name, 1), deadline - t0))
        try:
            if limit < 1:
                raise SectionTimeout(f"the check's {plan.budget_seconds:g} s budget is spent")
            with time_limit(limit):
                body = section(plan)
        except Exception as err:
            failed += 1
            body = f"FAILED: {type(err).__name__}: {err}\n\n```\n{traceback.format_exc(limit=4)}```"
        seconds = time.perf_counter() - t0
        with out.open("a") as f:
            f.write(f"## {title}\n\n{body}\n\n_{seconds:.1f} s_\n\n")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--only", action="append", help="section name, e.g. pesg_parity")
    parser.add_argument(
        "--budget-s", type=float, default=540.0, help="seconds for the whole check (default 540)"
    )
    parser.add_argument("--section-s", type=int, help="one section's limit (default 150 on CUDA)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: use --device cpu for the dry run")
    os.environ.setdefault("DEEPAUC_PROGRESS", "0")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        plan = Plan.for_device(torch.device(args.device), Path(tmp), args.peak_tflops)
        plan.budget_seconds = args.budget_s
        if args.section_s:
            plan.section_seconds = args.section_s
        failed = run_sections(plan, args.out, args.only)
    print(f"gpu-check: report in {args.out}" + (f", {failed} section(s) FAILED" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
