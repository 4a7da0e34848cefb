"""4. Inference with TTA: ``deepauc.pipeline.predict.tta_predict`` against a bare batched forward.

``tta_predict`` reads the cached JPEGs, normalises on the device, stacks the 8 dihedral
views of each batch into one forward pass and averages the sigmoid scores. The bare
contender runs the same network (eval mode, channels-last, no grad, the pipeline's
autocast dtype) on a normalised
in-memory batch of the same number of images x views per forward. A third contender,
"data + views", runs everything of ``tta_predict`` except the network; a fourth is the
bare forward on the NCHW-contiguous layout that ``dihedral_views`` produces.

Goal: tta_predict ≥ 0.90 of the bare images x views per second.
"""

from __future__ import annotations

import copy

import torch

from common import (
    Ctx,
    Table,
    compare,
    experiment,
    fmt,
    fmt_ratio,
    median,
    paired_ratio,
    verdict,
    write_cache,
)

NAME = "tta"
GOAL = 0.90
VIEWS = 8


def _sizes(ctx: Ctx) -> list[int]:
    if ctx.sizes:
        return ctx.sizes
    return [64] if ctx.quick else [64, 128]


def run(ctx: Ctx) -> list[Table]:
    dev, b = ctx.device, ctx.batch
    table = Table(
        f"Inference with {VIEWS}-view TTA ({ctx.model}, {b} images x {VIEWS} views per forward, "
        f"{ctx.workers} loader workers)",
        [
            "resolution",
            "bare views/s",
            "data + views only, views/s",
            "tta_predict views/s",
            "tta_predict / bare",
            f"goal ≥ {GOAL:.2f}",
            "bare with NCHW input / bare",
        ],
    )
    for size in _sizes(ctx):
        n_batches = 20 if dev.type == "cuda" else (2 if size <= 64 else 1)
        _one_size(ctx, size, n_batches, table)
    table.notes.append(
        "views/s = images x views per second; ratio = median of per-round paired ratios (min–max). "
        "The last column is the same bare forward fed the NCHW-contiguous layout that "
        "`dihedral_views` returns (the model is channels-last)."
    )
    return [table]


def _one_size(ctx: Ctx, size: int, n_batches: int, table: Table) -> None:
    from deepauc.data.augment import dihedral_views
    from deepauc.data.dataset import CachedImages, to_device_batch
    from deepauc.models import create_model
    from deepauc.pipeline.predict import tta_predict
    from deepauc.pipeline.runtime import amp_dtype, make_loader

    dev, b = ctx.device, ctx.batch
    cache = ctx.tmp / "cache"
    n = n_batches * b
    df = write_cache(cache, size, n, seed=size)
    cfg = experiment(cache, size, ctx)
    torch.manual_seed(0)
    model = create_model(ctx.model, False).to(dev).eval().to(memory_format=torch.channels_last)
    bare_model = copy.deepcopy(model)
    x = torch.randn(VIEWS * b, 3, size, size, device=dev).contiguous(
        memory_format=torch.channels_last
    )
    ds = CachedImages(df, str(cache), size)

    x_nchw = x.contiguous()

    amp = amp_dtype(cfg.train.amp, dev)  # the dtype tta_predict runs in

    @torch.no_grad()
    def bare():
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            for _ in range(n_batches):
                torch.sigmoid(bare_model(x).float())

    @torch.no_grad()
    def bare_nchw():  # dihedral_views returns an NCHW-contiguous batch even from channels-last input
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            for _ in range(n_batches):
                torch.sigmoid(bare_model(x_nchw).float())

    def data_views():
        for xb, _ in make_loader(ds, b, cfg.train.num_workers, shuffle=False):
            dihedral_views(to_device_batch(xb, dev, True), VIEWS)

    def pipeline():
        tta_predict(model, df, cfg, dev)

    ctx.note(f"tta {size}px: {n} images x {VIEWS} views")
    t = compare(
        {"bare": bare, "data": data_views, "tta": pipeline, "nchw": bare_nchw},
        ctx.reps, ctx.warmup, dev,
    )  # fmt: skip
    views = n * VIEWS
    ratio = paired_ratio(t["bare"], t["tta"])
    table.add(
        size,
        fmt(views / median(t["bare"])),
        fmt(views / median(t["data"])),
        fmt(views / median(t["tta"])),
        fmt_ratio(ratio),
        verdict(ratio[0] >= GOAL),
        fmt_ratio(paired_ratio(t["bare"], t["nchw"])),
    )
