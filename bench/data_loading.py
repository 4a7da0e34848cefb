"""3. Data loading: the resize cache's images/s against what training consumes, and the
resize stage's own images/s on large JPEGs with and without reduced-size decoding.

(a) One epoch of the training loader (:func:`deepauc.pipeline.runtime.make_loader` over
:class:`deepauc.data.dataset.CachedImages` with the training augmentation, then
:func:`deepauc.data.dataset.to_device_batch`) with 0, 1 and 2 workers, interleaved with
the bare training step (forward/backward + SGD on an in-memory batch) at the same
resolution and batch. Headroom = loader images/s / training images/s: above 1 the
cache keeps training compute-bound. Worker start-up (paid every epoch, as the loader
has ``persistent_workers=False``) is included in "epoch" and excluded in "steady".

(b) :func:`deepauc.data.image_decode.resize_image` to 384 px on 6000x4000 JPEGs (libjpeg's
reduced-size decode, ``cv2.IMREAD_REDUCED_COLOR_8`` here) against a full-size decode
followed by the same crop and INTER_AREA resize.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from common import (
    Ctx,
    Table,
    compare,
    experiment,
    fmt,
    fmt_ratio,
    lesion_image,
    median,
    paired_ratio,
    write_cache,
)

NAME = "data_loading"


def _opencv_threads_on(_worker_id: int) -> None:
    cv2.setNumThreads(os.cpu_count() or 1)


def _sizes(ctx: Ctx) -> list[int]:
    if ctx.sizes:
        return ctx.sizes
    return [64] if ctx.quick else [64, 128]


def loader_table(ctx: Ctx) -> Table:
    b = ctx.batch
    worker_counts = [0, 1, 2] if ctx.device.type == "cpu" else sorted({0, 2, ctx.workers or 8})
    n_batches = 8 if ctx.quick else 16
    if ctx.device.type == "cuda":  # steady state: several batches per worker after start-up
        n_batches = max(n_batches, 4 * max(worker_counts))
    table = Table(
        f"Data loading from the resize cache vs the training step ({ctx.model}, batch {b})",
        [
            "resolution",
            "workers",
            "loader img/s (epoch)",
            "loader img/s (steady)",
            "start-up s",
            "train img/s (bare)",
            "headroom = loader / train",
        ],
    )
    for size in _sizes(ctx):
        _loader_rows(ctx, size, n_batches if size <= 64 else n_batches // 2, worker_counts, table)
    table.notes += [
        f"{n_batches} batches per epoch at 64 px, half that above; 'steady' excludes the first batch of each "
        "worker (worker start-up, paid again every epoch because the loader is rebuilt per epoch without "
        "persistent workers).",
        "Loader and training step are timed alternately, each with the whole machine: during "
        "training, workers share the cores with the network's own threads, so on a 2-core CPU "
        "the headroom of 1-2 workers is an upper bound; with 0 workers the loader time adds "
        "to the step time (see the training-step table).",
        "'OpenCV threads on': the same loader with OpenCV's thread pool re-enabled in each worker "
        "(CachedImages turns it off).",
    ]
    return table


def _loader_rows(
    ctx: Ctx, size: int, n_batches: int, worker_counts: list[int], table: Table
) -> None:
    from deepauc.data.augment import build_train_transform
    from deepauc.data.dataset import CachedImages, to_device_batch
    from deepauc.models import create_model
    from deepauc.pipeline.runtime import amp_dtype, make_loader

    dev, b = ctx.device, ctx.batch
    cache = ctx.tmp / "cache"
    n = n_batches * b
    df = write_cache(cache, size, n, seed=size)
    cfg = experiment(cache, size, ctx)
    ds = CachedImages(df, str(cache), size, build_train_transform(cfg.augment), seed=0)
    keys = [(w, False) for w in worker_counts] + [(worker_counts[-1], True)]
    first: dict = {k: [] for k in keys}
    epoch = [0]

    def epoch_of(key):
        workers, opencv_threads = key

        def call():
            epoch[0] += 1
            ds.set_epoch(epoch[0])
            t0 = time.perf_counter()
            loader = make_loader(ds, b, workers, True, 0, epoch[0], drop_last=True)
            if opencv_threads:  # the same loader, but OpenCV's thread pool left on in workers
                loader = torch.utils.data.DataLoader(
                    ds,
                    batch_size=b,
                    sampler=loader.sampler,
                    num_workers=workers,
                    drop_last=True,
                    worker_init_fn=_opencv_threads_on,
                )
            for i, (x, y) in enumerate(loader):
                to_device_batch(x, dev, True)
                y.to(dev)
                if i == max(workers, 1) - 1:  # every worker has delivered its first batch
                    first[key].append(time.perf_counter() - t0)

        return call

    torch.manual_seed(0)
    model = create_model(ctx.model, False, 0.2).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, foreach=True)
    x = torch.randn(b, 3, size, size, device=dev).contiguous(memory_format=torch.channels_last)
    y = (torch.arange(b, device=dev) % 4 == 0).float()
    train_steps = 1 if dev.type == "cpu" else 20
    amp = amp_dtype(cfg.train.amp, dev)  # the dtype the pipeline trains in

    def train():
        for _ in range(train_steps):
            with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits = model(x).squeeze(1)
            loss = F.binary_cross_entropy_with_logits(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    contenders = {k: epoch_of(k) for k in keys}
    contenders["train"] = train
    ctx.note(f"data_loading {size}px: {n} images per epoch, workers {worker_counts}")
    t = compare(contenders, ctx.reps, ctx.warmup, dev)
    train_ips = [train_steps * b / s for s in t["train"]]
    for key in keys:
        tw = t[key]
        fb = first[key][-len(tw) :]
        epoch_ips = [n / s for s in tw]
        skipped = max(key[0], 1) * b
        steady_ips = [(n - skipped) / (s - f) for s, f in zip(tw, fb)]
        headroom = paired_ratio(epoch_ips, train_ips)
        label = f"{key[0]}, OpenCV threads on" if key[1] else key[0]
        table.add(
            size,
            label,
            fmt(median(epoch_ips)),
            fmt(median(steady_ips)),
            f"{median(fb):.2f}",
            fmt(median(train_ips)),
            fmt_ratio(headroom),
        )


def resize_table(ctx: Ctx) -> Table:
    from deepauc.data.image_decode import resize_image, square
    from deepauc.data.image_header import check_complete

    n_images = 1 if ctx.quick else 3
    h, w, out = 4000, 6000, 384
    src_dir = ctx.tmp / "large"
    src_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    rng = np.random.default_rng(7)
    ctx.note(f"data_loading: writing {n_images} {w}x{h} JPEGs")
    for i in range(n_images):
        p = src_dir / f"large_{i}.jpg"
        if not p.exists():
            cv2.imwrite(
                str(p),
                cv2.cvtColor(lesion_image(rng, h, w), cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 90],
            )
        paths.append(p)
    mb = sum(p.stat().st_size for p in paths) / len(paths) / 2**20

    def reduced():
        for p in paths:
            resize_image(p, out)

    def full():
        for p in paths:
            check_complete(p)
            bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
            cv2.cvtColor(square(bgr, out), cv2.COLOR_BGR2RGB)

    threads = cv2.getNumThreads()
    cv2.setNumThreads(0)  # as in `deepauc resize` workers: one process per core
    try:
        t = compare({"reduced": reduced, "full": full}, ctx.reps, ctx.warmup, torch.device("cpu"))
    finally:
        cv2.setNumThreads(threads)
    table = Table(
        f"Resize stage: {w}x{h} JPEG (q90, {mb:.1f} MB) -> {out}x{out}, one process, OpenCV threads off",
        ["decode", "images/s", "ms / image", "speed-up"],
    )
    ratio = paired_ratio(t["full"], t["reduced"])
    for name, label in [
        ("full", "full-size decode + crop + INTER_AREA"),
        ("reduced", "`resize_image` (reduced-size decode, 1/8)"),
    ]:
        per = median(t[name]) / n_images
        table.add(
            label, fmt(1 / per), fmt(per * 1e3), fmt_ratio(ratio) if name == "reduced" else "1"
        )
    table.notes.append(
        "`deepauc resize` runs one such process per core (`--workers`, default CPU count), so "
        "multiply images/s by the core count for the stage's throughput; it runs once per size."
    )
    return table


def run(ctx: Ctx) -> list[Table]:
    return [loader_table(ctx), resize_table(ctx)]
