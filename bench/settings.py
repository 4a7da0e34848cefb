"""7. Speed settings: which of the issue's knobs pay on this machine.

Bare loops (no data loading, so only the setting differs), interleaved:

* training step (forward/backward + SGD, batch B): fp32 contiguous, fp32 channels-last
  (the pipeline's default, ``train.channels_last``), bf16 autocast channels-last and
  contiguous (``train.amp: bf16``), and with ``--compile`` ``torch.compile`` of the
  channels-last model (``train.compile``; its compile time is reported);
* inference (no grad, 8 TTA views x B images): fp32 contiguous, fp32 channels-last, bf16
  channels-last, and the 8 views as 8 separate forwards of B (or of 16 images) instead of
  one stacked batch;
* OpenMP's wait policy (a per-process setting, so each contender is a subprocess, run
  alternately): the fp32 channels-last training step with ``OMP_WAIT_POLICY`` unset
  (libgomp spins before sleeping) and ``PASSIVE`` (threads sleep at once).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common import Ctx, Table, compare, fmt, fmt_ratio, median, paired_ratio

NAME = "settings"
CL, CF, BF16 = torch.channels_last, torch.contiguous_format, torch.bfloat16


def _sizes(ctx: Ctx) -> list[int]:
    if ctx.sizes:
        return ctx.sizes
    return [64] if ctx.quick else [64, 128]


def _train_step(model, opt, x, y, amp):
    def call():
        with torch.autocast(x.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(x).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return call


def _child(args: argparse.Namespace) -> list[float]:
    """Subprocess body: seconds per call of ``args.steps`` bare training steps."""
    from deepauc.models import create_model

    torch.manual_seed(0)
    m = create_model(args.model, False, 0.2).to(args.device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, foreach=True)
    x = torch.randn(args.batch, 3, args.size, args.size, device=args.device).contiguous(
        memory_format=torch.channels_last
    )
    y = (torch.arange(args.batch, device=args.device) % 4 == 0).float()
    step = _train_step(m, opt, x, y, None)
    times = []
    for i in range(args.calls + 1):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        if args.device == "cuda":
            torch.cuda.synchronize()
        if i:  # the first call is the warm-up
            times.append(time.perf_counter() - t0)
    return times


def omp_policy_rows(ctx: Ctx, size: int, table: Table) -> None:
    policies = {
        "OMP_WAIT_POLICY unset (libgomp default: spin, then sleep)": None,
        "OMP_WAIT_POLICY=PASSIVE": "PASSIVE",
    }
    steps, calls = 2, 2 if ctx.quick else 3
    rounds = 1 if ctx.quick else 2
    med: dict[str, list[float]] = {k: [] for k in policies}
    names = list(policies)
    ctx.note(f"settings {size}px OpenMP wait policy: {rounds} rounds x {len(names)} subprocesses")
    for r in range(rounds):
        for j in range(len(names)):
            name = names[(r + j) % len(names)]
            env = dict(os.environ)
            env.pop("OMP_WAIT_POLICY", None)
            if policies[name]:
                env["OMP_WAIT_POLICY"] = policies[name]
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--size",
                str(size),
                "--batch",
                str(ctx.batch),
                "--model",
                ctx.model,
                "--device",
                ctx.device.type,
                "--steps",
                str(steps),
                "--calls",
                str(calls),
            ]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise RuntimeError(f"OpenMP policy child failed:\n{out.stderr[-3000:]}")
            med[name].append(statistics.median(json.loads(out.stdout.strip().splitlines()[-1])))
    ref = med[names[0]]
    for name in names:
        table.add(
            size,
            "train (subprocess)",
            name,
            fmt(steps * ctx.batch / median(med[name])),
            fmt_ratio(paired_ratio(ref, med[name])),
        )


def run(ctx: Ctx) -> list[Table]:
    b = ctx.batch
    table = Table(
        f"Speed settings ({ctx.model}, {ctx.device.type}; bare loops, batch {b} for training, "
        f"{b} images x 8 views for inference)",
        ["resolution", "loop", "setting", "img/s", "speed vs baseline (time ratio)"],
    )
    for i, size in enumerate(_sizes(ctx)):
        _train_rows(ctx, size, table)
        _inference_rows(ctx, size, table)
        if i == 0 and ctx.device.type == "cpu":
            omp_policy_rows(ctx, size, table)
    table.notes.append(
        "speed = baseline time / setting time per round (> 1: the setting is faster), median "
        "and min–max over rounds; the baseline is the first row of each group."
    )
    if not ctx.compile:
        table.notes.append(
            "torch.compile is not timed by default (compilation takes minutes on a small CPU); "
            "run `bench/run.py --only settings --compile`."
        )
    return [table]


def _repeat(fn, k: int):
    def call():
        for _ in range(k):
            fn()

    return call


def _train_rows(ctx: Ctx, size: int, table: Table) -> None:
    from deepauc.models import create_model

    dev, b = ctx.device, ctx.batch
    torch.manual_seed(0)
    base = create_model(ctx.model, False, 0.2).to(dev)
    y = (torch.arange(b, device=dev) % 4 == 0).float()
    xs = torch.randn(b, 3, size, size, device=dev)

    def variant(fmt_, amp, compiled=False):
        m = copy.deepcopy(base).to(memory_format=fmt_)
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, foreach=True)
        return _train_step(
            torch.compile(m) if compiled else m, opt, xs.contiguous(memory_format=fmt_), y, amp
        )

    train = {
        "fp32, channels-last (pipeline default)": variant(CL, None),
        "fp32, contiguous (NCHW)": variant(CF, None),
        "bf16 autocast, channels-last": variant(CL, BF16),
        "bf16 autocast, contiguous": variant(CF, BF16),
    }
    if ctx.compile:
        step = variant(CL, None, compiled=True)
        t0 = time.perf_counter()
        step()
        table.notes.append(
            f"{size}px: torch.compile's first step (compilation) took {time.perf_counter() - t0:.0f} s"
        )
        train["torch.compile, fp32, channels-last"] = step
    steps = 2 if dev.type == "cpu" else 20
    ctx.note(f"settings {size}px training: {len(train)} variants")
    t = compare({k: _repeat(v, steps) for k, v in train.items()}, min(ctx.reps, 3), ctx.warmup, dev)
    ref = next(iter(t.values()))
    for name, times in t.items():
        table.add(
            size, "train", name, fmt(steps * b / median(times)), fmt_ratio(paired_ratio(ref, times))
        )


def _inference_rows(ctx: Ctx, size: int, table: Table) -> None:
    from deepauc.models import create_model

    dev, b = ctx.device, ctx.batch
    torch.manual_seed(0)
    base = create_model(ctx.model, False, 0.2).to(dev).eval()
    views = torch.randn(8 * b, 3, size, size, device=dev)

    def infer(fmt_, amp, chunk=0):
        m = copy.deepcopy(base).to(memory_format=fmt_)
        x = views.contiguous(memory_format=fmt_)
        parts = x.split(chunk) if chunk else [x]

        @torch.no_grad()
        def call():
            with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
                for p in parts:
                    m(p)

        return call

    inf = {
        "fp32, channels-last, 8 views stacked (pipeline default)": infer(CL, None),
        "fp32, contiguous, stacked": infer(CF, None),
        "bf16 autocast, channels-last, stacked": infer(CL, BF16),
        f"fp32, channels-last, 8 forwards of one view each ({b} images)": infer(CL, None, chunk=b),
        "fp32, channels-last, forwards of 16 images": infer(CL, None, chunk=16),
    }
    ctx.note(f"settings {size}px inference: {len(inf)} variants")
    t = compare(inf, min(ctx.reps, 3), ctx.warmup, dev)
    ref = next(iter(t.values()))
    for name, times in t.items():
        table.add(
            size, "inference", name, fmt(8 * b / median(times)), fmt_ratio(paired_ratio(ref, times))
        )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    parser = argparse.ArgumentParser()
    for flag, typ in [
        ("--size", int),
        ("--batch", int),
        ("--model", str),
        ("--device", str),
        ("--steps", int),
        ("--calls", int),
    ]:
        parser.add_argument(flag, type=typ, required=True)
    print(json.dumps(_child(parser.parse_args())))
