"""1. Training step: the pipeline's real loop against the network's bare loop.

Contenders, all on the same architecture, resolution and batch, interleaved:

* **bare**: forward/backward (BCE on logits) + ``torch.optim.SGD(foreach=True,
  momentum=0.9)`` on a normalised batch already in memory (the network's own speed);
* **bare + AUC-M/PESG**: the same in-memory batch, but the pipeline's loss and optimizer
  (isolates their cost);
* **data only**: the pipeline's loader (cached JPEG decode, albumentations, collate) and
  :func:`deepauc.data.dataset.to_device_batch`, no network;
* **pipeline**: :func:`deepauc.pipeline.train.run_epoch` over a fresh
  :func:`deepauc.pipeline.runtime.make_loader` of :class:`deepauc.data.dataset.CachedImages`, the
  code ``deepauc train`` runs (AUC-M + PESG, channels-last, amp per config).

The loaders of "data only" and "pipeline" start their workers before the timed call, so
the figures are the steady state of an epoch, not worker start-up.

Goal: pipeline ≥ 0.90 of bare images/s.
"""

from __future__ import annotations

import copy
import itertools
import os

import torch
import torch.nn.functional as F

from common import (
    Ctx,
    Table,
    compare,
    experiment,
    fmt,
    fmt_ratio,
    median,
    paired_ratio,
    step_flops,
    verdict,
    write_cache,
)

NAME = "train_step"
GOAL = 0.90


def default_sizes(ctx: Ctx) -> list[int]:
    if ctx.sizes:
        return ctx.sizes
    if ctx.quick:
        return [64]
    return [64, 128, 224] if ctx.full else [64, 128]


class Contenders:
    """The four training loops of one (model, resolution, batch), ready to call."""

    def __init__(self, ctx: Ctx, size: int, steps: int, n_images: int | None = None) -> None:
        from deepauc.data.augment import build_train_transform
        from deepauc.data.dataset import CachedImages, to_device_batch
        from deepauc.losses import build_loss, loss_input
        from deepauc.models import create_model
        from deepauc.pipeline.runtime import amp_dtype
        from deepauc.pipeline.train import build_optimizer

        os.environ.setdefault("DEEPAUC_PROGRESS", "0")
        self.ctx, self.size, self.steps = ctx, size, steps
        dev = ctx.device
        b = ctx.batch
        n = n_images or steps * b
        cache = ctx.tmp / "cache"
        table = write_cache(cache, size, n, seed=size)
        self.cfg = cfg = experiment(cache, size, ctx)
        self.amp = amp_dtype(cfg.train.amp, dev)
        self.cl = cfg.train.channels_last
        imratio = float(table["target"].mean())
        torch.manual_seed(0)
        base = create_model(cfg.model.backbone, False, cfg.model.drop_rate)

        def fresh():
            m = copy.deepcopy(base).to(dev)
            return m.to(memory_format=torch.channels_last) if self.cl else m

        # bare: in-memory batch, BCE, SGD
        self.bare_model = fresh()
        self.sgd = torch.optim.SGD(
            self.bare_model.parameters(), lr=0.01, momentum=0.9, foreach=True
        )
        fmt_ = torch.channels_last if self.cl else torch.contiguous_format
        self.x = torch.randn(b, 3, size, size, device=dev).contiguous(memory_format=fmt_)
        self.y = (torch.arange(b, device=dev) % 4 == 0).float()
        # bare with the pipeline's loss and optimizer
        self.pesg_model = fresh()
        self.pesg_loss = build_loss("auc_m", margin=cfg.loss.margin, imratio=imratio).to(dev)
        self.pesg = build_optimizer(cfg, self.pesg_model, self.pesg_loss)
        self._loss_input = loss_input
        # the pipeline
        self.pipe_model = fresh()
        self.pipe_loss = build_loss("auc_m", margin=cfg.loss.margin, imratio=imratio).to(dev)
        self.pipe_opt = build_optimizer(cfg, self.pipe_model, self.pipe_loss)
        self.scaler = torch.amp.GradScaler(dev.type, enabled=self.amp is torch.float16)
        self.ds = CachedImages(table, str(cache), size, build_train_transform(cfg.augment), seed=0)
        self._to_device = to_device_batch
        self.epochs = itertools.count()
        self.flops = step_flops(copy.deepcopy(self.bare_model), self.x)

    def _autocast(self):
        dev = self.ctx.device
        return torch.autocast(
            dev.type, dtype=self.amp or torch.float32, enabled=self.amp is not None
        )

    def bare(self) -> None:
        for _ in range(self.steps):
            with self._autocast():
                logits = self.bare_model(self.x).squeeze(1)
            loss = F.binary_cross_entropy_with_logits(logits.float(), self.y)
            self.sgd.zero_grad(set_to_none=True)
            loss.backward()
            self.sgd.step()

    def bare_pesg(self) -> None:
        for _ in range(self.steps):
            with self._autocast():
                logits = self.pesg_model(self.x).squeeze(1)
            loss = self.pesg_loss(self._loss_input(self.pesg_loss, logits.float()), self.y)
            self.pesg.zero_grad(set_to_none=True)
            loss.backward()
            self.pesg.step()

    def loader(self, epoch: int):
        from deepauc.pipeline.runtime import make_loader

        self.ds.set_epoch(epoch)
        cfg = self.cfg
        return make_loader(
            self.ds, cfg.train.batch_size, cfg.train.num_workers, True, 0, epoch, drop_last=True
        )

    def start_loader(self) -> None:
        """The next epoch's loader with its workers started (untimed: before the call)."""
        self.epoch = next(self.epochs)
        self.batches = iter(self.loader(self.epoch))

    def data_only(self) -> None:
        for step, (x, y) in enumerate(self.batches):
            if step >= self.steps:
                break
            self._to_device(x, self.ctx.device, self.cl)
            y.to(self.ctx.device, non_blocking=True)

    def pipeline(self) -> None:
        from deepauc.pipeline.train import TrainState, run_epoch

        state = TrainState(
            *(self.cfg, self.pipe_model, self.pipe_model, self.pipe_loss, self.pipe_opt),
            *(self.scaler, self.ctx.device, self.amp),
        )
        run_epoch(state, self.batches, self.epoch, self.steps)


def steps_per_call(ctx: Ctx, size: int) -> int:
    if ctx.device.type == "cuda":
        return 20
    return 2 if size <= 128 else 1


def run(ctx: Ctx) -> list[Table]:
    b = ctx.batch
    table = Table(
        f"Training step: pipeline vs bare loop ({ctx.model}, batch {b}, {ctx.device.type}, "
        f"{ctx.workers} loader workers)",
        [
            "resolution",
            "bare img/s",
            "bare+AUC-M/PESG img/s",
            "data-only img/s",
            "pipeline img/s",
            "pipeline / bare",
            "bare GFLOP/s",
            f"goal ≥ {GOAL:.2f}",
        ],
    )
    for size in default_sizes(ctx):
        steps = steps_per_call(ctx, size)
        c = Contenders(ctx, size, steps)
        ctx.note(f"train_step {size}px: {steps} steps x batch {b} per call, {ctx.reps} rounds")
        t = compare(
            {"bare": c.bare, "pesg": c.bare_pesg, "data": c.data_only, "pipe": c.pipeline},
            ctx.reps,
            ctx.warmup,
            ctx.device,
            setup={"data": c.start_loader, "pipe": c.start_loader},
        )
        imgs = steps * b
        ips = {k: imgs / median(v) for k, v in t.items()}
        ratio = paired_ratio(t["bare"], t["pipe"])
        gflops = c.flops * ips["bare"] / b / 1e9
        peak = f" ({gflops / 1e3 / ctx.peak_tflops:.1%} of peak)" if ctx.peak_tflops else ""
        table.add(
            size,
            fmt(ips["bare"]),
            fmt(ips["pesg"]),
            fmt(ips["data"]),
            fmt(ips["pipe"]),
            fmt_ratio(ratio),
            fmt(gflops) + peak,
            verdict(ratio[0] >= GOAL),
        )
        # the pipeline's time, decomposed (seconds per image)
        per = {k: median(v) / imgs for k, v in t.items()}
        extra_opt = per["pesg"] - per["bare"]
        table.notes.append(
            f"{size}px: per image bare {per['bare'] * 1e3:.2f} ms, AUC-M+PESG adds "
            f"{extra_opt * 1e3:+.2f} ms, data (decode+aug+collate+normalise) {per['data'] * 1e3:.2f} ms; "
            f"bare+opt+data = {(per['pesg'] + per['data']) * 1e3:.2f} ms vs pipeline "
            f"{per['pipe'] * 1e3:.2f} ms"
        )
        ctx.shared.setdefault("train_ips", {})[size] = ips
        ctx.shared.setdefault("train_flops", {})[size] = c.flops / b
        del c
    table.notes += [
        "img/s are medians over rounds; the ratio is the median of per-round paired ratios "
        "(min–max in brackets).",
        "With 0 loader workers the pipeline decodes and augments serially with the step, so "
        "its ceiling is 1 / (1 + data time / step time); workers overlap that time with compute "
        "on a machine whose spare cores can run them.",
    ]
    return [table]
