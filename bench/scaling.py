"""6. Scaling: training wall time and peak memory against data set size and resolution.

Each point is one training epoch of the real pipeline (:func:`deepauc.pipeline.train.run_epoch`
over the resize cache, AUC-M + PESG) in a fresh subprocess, so its peak resident memory
(``VmHWM``, the kernel's high-water mark of resident memory) is its own. The subprocess first runs one warm-up step, records
its peak RSS, then runs the epoch and records the peak again: the growth over the epoch
shows whether memory depends on the number of images. Points are run in rotated order
over the rounds and the median wall time per point is kept.

Expected: time per image constant in the number of images; per-image cost growing with
the pixel count (FLOPs of a conv net are ∝ pixels; small resolutions pay per-layer
overheads, so the measured growth is at most the pixel ratio); peak memory flat in the
number of images.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import Ctx, Table, fmt, median

NAME = "scaling"


def points(ctx: Ctx) -> list[tuple[int, int]]:
    """(images, resolution) pairs."""
    if ctx.quick:
        return [(32, 64), (64, 64), (32, 96)]
    return [(64, 64), (128, 64), (256, 64), (64, 96), (64, 128)]


def run_point(args: argparse.Namespace) -> dict:
    """Body of the subprocess: one warm-up step, then one epoch over ``args.images``."""
    import pandas as pd
    import torch

    from common import experiment, peak_rss_mib, step_flops
    from deepauc.data.augment import build_train_transform
    from deepauc.data.dataset import CachedImages
    from deepauc.losses import build_loss
    from deepauc.models import create_model
    from deepauc.pipeline.runtime import make_loader
    from deepauc.pipeline.train import TrainState, build_optimizer, run_epoch

    os.environ["DEEPAUC_PROGRESS"] = "0"
    ctx = Ctx(
        device=torch.device(args.device), tmp=Path(args.cache), batch=args.batch, model=args.model
    )
    table = pd.read_csv(Path(args.cache) / f"table_{args.size}.csv").iloc[: args.images]
    cfg = experiment(Path(args.cache), args.size, ctx)
    dev = ctx.device
    torch.manual_seed(0)
    model = (
        create_model(cfg.model.backbone, False, cfg.model.drop_rate)
        .to(dev)
        .to(memory_format=torch.channels_last)
    )
    loss = build_loss("auc_m", margin=1.0, imratio=float(table["target"].mean())).to(dev)
    opt = build_optimizer(cfg, model, loss)
    ds = CachedImages(table, args.cache, args.size, build_train_transform(cfg.augment), seed=0)
    scaler = torch.amp.GradScaler(dev.type, enabled=False)
    steps = len(ds) // args.batch
    state = TrainState(cfg, model, model, loss, opt, scaler, dev, None)

    def epoch(e: int, n_steps: int) -> float:
        ds.set_epoch(e)
        loader = make_loader(ds, args.batch, args.workers, True, 0, e, drop_last=True)
        t0 = time.perf_counter()
        run_epoch(state, loader, e, n_steps)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    rss_setup = peak_rss_mib()
    epoch(0, 1)
    rss_warm = peak_rss_mib()
    seconds = epoch(1, steps)
    rss_peak = peak_rss_mib()
    x = torch.randn(args.batch, 3, args.size, args.size, device=dev).contiguous(
        memory_format=torch.channels_last
    )
    flops = step_flops(model, x) / args.batch
    return {
        "seconds": seconds,
        "images": steps * args.batch,
        "rss_setup": rss_setup,
        "rss_warm": rss_warm,
        "rss_peak": rss_peak,
        "flops": flops,
    }


def run(ctx: Ctx) -> list[Table]:
    from common import write_cache

    pts = points(ctx)
    cache = ctx.tmp / "cache"
    for size in sorted({s for _, s in pts}):
        n = max(i for i, s in pts if s == size)
        write_cache(cache, size, n, seed=size).to_csv(cache / f"table_{size}.csv", index=False)
    reps = 1 if ctx.quick else max(2, ctx.reps // 2)
    results: dict[tuple[int, int], list[dict]] = {p: [] for p in pts}
    ctx.note(f"scaling: {len(pts)} points x {reps} rounds, one subprocess each")
    for r in range(reps):
        for j in range(len(pts)):
            images, size = pts[(r + j) % len(pts)]
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--images",
                str(images),
                "--size",
                str(size),
                "--cache",
                str(cache),
                "--batch",
                str(ctx.batch),
                "--model",
                ctx.model,
                "--device",
                str(ctx.device),
                "--workers",
                str(ctx.workers),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise RuntimeError(
                    f"scaling point {images} images at {size}px failed:\n{out.stderr[-3000:]}"
                )
            results[(images, size)].append(json.loads(out.stdout.strip().splitlines()[-1]))

    def summary(p):
        rs = results[p]
        sec = median(r["seconds"] for r in rs)
        return {
            "sec": sec,
            "per_img": sec / rs[0]["images"],
            "setup": median(r["rss_setup"] for r in rs),
            "warm": median(r["rss_warm"] for r in rs),
            "peak": median(r["rss_peak"] for r in rs),
            "flops": rs[0]["flops"],
        }

    s = {p: summary(p) for p in pts}
    ref_size = min(sz for _, sz in pts)
    by_images = sorted(p for p in pts if p[1] == ref_size)
    t1 = Table(
        f"Scaling with the number of images ({ctx.model}, {ref_size}px, batch {ctx.batch}, one epoch)",
        [
            "images",
            "epoch s",
            "ms / image",
            "ms / image relative to first",
            "RSS after imports + model MiB",
            "peak RSS after 1 warm-up step MiB",
            "peak RSS after epoch MiB",
            "growth over the epoch MiB",
        ],
    )
    base = s[by_images[0]]["per_img"]
    for p in by_images:
        v = s[p]
        t1.add(
            p[0],
            fmt(v["sec"]),
            fmt(v["per_img"] * 1e3),
            f"{v['per_img'] / base:.2f}",
            fmt(v["setup"], 4),
            fmt(v["warm"], 4),
            fmt(v["peak"], 4),
            f"{v['peak'] - v['warm']:+.0f}",
        )
    # the image count shared by the most resolutions
    ref_images = max({i for i, _ in pts}, key=lambda i: sum(1 for j, _ in pts if j == i))
    by_size = sorted((p for p in pts if p[0] == ref_images), key=lambda p: p[1])
    t2 = Table(
        f"Scaling with resolution ({ctx.model}, {ref_images} images, batch {ctx.batch}, one epoch)",
        [
            "resolution",
            "epoch s",
            "ms / image",
            "time ratio",
            "pixel ratio",
            "FLOP ratio",
            "peak RSS MiB",
            "peak RSS - setup MiB",
        ],
    )
    b = s[by_size[0]]
    for p in by_size:
        v = s[p]
        t2.add(
            p[1],
            fmt(v["sec"]),
            fmt(v["per_img"] * 1e3),
            f"{v['per_img'] / b['per_img']:.2f}",
            f"{(p[1] / by_size[0][1]) ** 2:.2f}",
            f"{v['flops'] / b['flops']:.2f}",
            fmt(v["peak"], 4),
            fmt(v["peak"] - v["setup"], 3),
        )
    t1.notes.append(
        f"Median of {reps} round(s), points in rotated order, each in its own subprocess. Peak RSS "
        "includes the interpreter, torch and the model (the warm-up column); an in-memory data "
        "set would add its size over the epoch, the cache reader adds nothing."
    )
    t2.notes.append(
        "A conv net's FLOPs are ∝ pixels; at these small resolutions per-layer fixed costs make "
        "time grow more slowly than pixels (time ratio < pixel ratio)."
    )
    return [t1, t2]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    parser = argparse.ArgumentParser()
    for flag, typ in [
        ("--images", int),
        ("--size", int),
        ("--cache", str),
        ("--batch", int),
        ("--model", str),
        ("--device", str),
        ("--workers", int),
    ]:
        parser.add_argument(flag, type=typ, required=True)
    print(json.dumps(run_point(parser.parse_args())))
