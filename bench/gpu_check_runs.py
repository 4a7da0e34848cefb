"""The device check's pipeline run and throughput sections (see ``bench/gpu_check.py``).

The pipeline run trains and predicts through ``deepauc``'s own functions on generated
lesion-like images; throughput is timed with CUDA events after warm-up.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
import yaml

from deepauc.markdown import markdown_table


def table(rows: list[dict], floatfmt: str = ".3g") -> str:
    return markdown_table(pd.DataFrame(rows), floatfmt) if rows else "(no rows)"


def write_images(root: Path, size: int, n: int) -> pd.DataFrame:
    """``n`` lesion-like JPEGs cached at ``size`` px under ``root/cache``; their table."""
    folder = root / "cache" / str(size)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(size)
    rows = []
    for i in range(n):
        name, positive = f"IMG_{i:06d}", i % 4 == 0
        img = np.full((size, size, 3), (200, 160, 140), np.uint8)
        img += rng.integers(0, 30, (size, size, 3), dtype=np.uint8)
        radius = int(size * (0.3 if positive else 0.15) * rng.uniform(0.8, 1.2))
        cv2.circle(img, (size // 2, size // 2), radius, (40, 40, 120), -1)
        cv2.imwrite(str(folder / f"{name}.jpg"), img)
        rows.append({"image_name": name, "target": int(positive), "fold": (i // 4) % 2})
    table_path = root / "folds.csv"
    pd.DataFrame(rows).to_csv(table_path, index=False)
    return pd.DataFrame(rows)


def experiment(plan, name: str, **sections):
    """An experiment config over the generated images at ``plan.pipeline_size``."""
    from deepauc.pipeline.experiment import load_experiment

    cfg = {
        "name": name,
        "n_folds": 2,
        "folds": [0],
        "data": {
            "train_csv": str(plan.tmp / "folds.csv"),
            "cache_dir": str(plan.tmp / "cache"),
            "image_size": plan.pipeline_size,
        },
        "model": {"backbone": plan.pipeline_backbone, "pretrained": False},
        "train": {
            "batch_size": plan.batch,
            "num_workers": plan.workers,
            "max_steps_per_epoch": plan.ce_steps,
            "threads": plan.threads,
        },
        "tta": {"dihedral": 8, "n_random": 2, "batch_size": plan.batch},
        "models_dir": str(plan.tmp / "models"),
        "preds_dir": str(plan.tmp / "preds"),
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    path = plan.tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_experiment(str(path))


class _Stop(Exception):
    """Raised right after the first checkpoint is written: a run killed mid-way."""


def _train_killed_then_resumed(cfg, device) -> Path:
    import deepauc.pipeline.train as train_mod

    real_save = train_mod._save_checkpoint

    def save_then_stop(*args, **kwargs):
        real_save(*args, **kwargs)
        raise _Stop

    train_mod._save_checkpoint = save_then_stop
    try:
        train_mod.train_fold(cfg, 0, device)
        raise RuntimeError("the run ended without writing a checkpoint")
    except _Stop:
        pass
    finally:
        train_mod._save_checkpoint = real_save
    return train_mod.train_fold(cfg, 0, device)


def _fold_row(stage: str, cfg, seconds: float, result: str) -> dict:
    log = pd.read_csv(cfg.run_dir(0) / "log.csv")
    return {
        "stage": stage,
        "seconds": seconds,
        "train images/s": float(log["images_per_s"].median()),
        "steps": int(cfg.train.max_steps_per_epoch * len(log)),
        "result": result,
    }


def _max_weight_diff(cfg_a, cfg_b) -> float:
    a = torch.load(cfg_a.run_dir(0) / "model.pt", weights_only=True)["model"]
    b = torch.load(cfg_b.run_dir(0) / "model.pt", weights_only=True)["model"]
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def pipeline_section(plan) -> str:
    from deepauc.metrics import roc_auc
    from deepauc.pipeline.predict import predict_experiment
    from deepauc.pipeline.train import train_fold

    n = 2 * plan.batch * plan.ce_steps + 2 * plan.batch
    write_images(plan.tmp, plan.pipeline_size, n)
    ce = experiment(plan, "ce")
    stage2 = {
        "model": {"init_from": str(Path(ce.models_dir) / "ce")},
        "loss": {"name": "auc_m"},
        "optim": {"name": "pesg", "lr": 0.05, "epoch_decay": 3e-3},
        "schedule": {"name": "stagewise", "epochs": 2, "decay_epochs": [1]},
        "train": {"max_steps_per_epoch": max(1, plan.ce_steps // 3)},
    }
    aucm = experiment(plan, "aucm", **stage2)
    control = experiment(plan, "aucm", models_dir=str(plan.tmp / "models_control"), **stage2)
    resumed = experiment(plan, "aucm", models_dir=str(plan.tmp / "models_resumed"), **stage2)
    rows, device = [], plan.device
    for stage, cfg, run in [
        ("CE (stage 1)", ce, lambda c: train_fold(c, 0, device)),
        ("AUC-M from CE, stage end after epoch 1", aucm, lambda c: train_fold(c, 0, device)),
        ("same again, uninterrupted (control)", control, lambda c: train_fold(c, 0, device)),
        ("same, killed after its checkpoint, resumed", resumed, lambda c: _train_killed_then_resumed(c, device)),
    ]:  # fmt: skip
        t0 = time.perf_counter()
        path = run(cfg)
        rows.append(_fold_row(stage, cfg, time.perf_counter() - t0, path.name))
    # two uninterrupted runs differ by the device's own non-determinism: the noise floor
    # the resumed run's difference is read against
    rows[-2]["result"] = f"max |Δ weights| vs uninterrupted: {_max_weight_diff(aucm, control):.3g}"
    rows[-1]["result"] = f"max |Δ weights| vs uninterrupted: {_max_weight_diff(aucm, resumed):.3g}"

    t0 = time.perf_counter()
    out = predict_experiment(aucm, device)
    seconds = time.perf_counter() - t0
    oof = pd.read_csv(out / "oof.csv")
    views = len(oof) * (aucm.tta.dihedral + aucm.tta.n_random)
    rows.append(
        {
            "stage": f"TTA ({aucm.tta.dihedral} dihedral + {aucm.tta.n_random} random views)",
            "seconds": seconds,
            "train images/s": float("nan"),
            "steps": 0,
            "result": f"{views / seconds:.0f} views/s, OOF AUC {roc_auc(oof['target'], oof['pred']):.3f}",
        }
    )
    head = (
        f"{plan.pipeline_backbone} at {plan.pipeline_size} px, batch {plan.batch}, "
        f"{plan.workers} workers, {n} generated images (fold 0 validates), on {device}. "
        "The control row is a second uninterrupted run: its difference is the device's "
        "non-determinism (cuDNN, bf16), the floor for the resumed row's; on CPU both are 0."
    )
    return head + "\n\n" + table(rows)


# -- throughput (CUDA) -------------------------------------------------------------------------
def _cuda_seconds(fn, n: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000


def _train_step(model, loss_fn, opt, device):
    def step(x, y):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x).squeeze(1)
        loss = loss_fn(torch.sigmoid(logits.float()), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _trainer(backbone: str, device: torch.device):
    from deepauc.losses import create_loss
    from deepauc.models import create_model
    from deepauc.optim import create_optimizer

    model = create_model(backbone, pretrained=False).to(device, memory_format=torch.channels_last)
    loss_fn = create_loss("auc_m", imratio=0.1).to(device)
    opt = create_optimizer("pesg", model.parameters(), loss_fn, lr=0.01, epoch_decay=3e-3)
    return model, _train_step(model, loss_fn, opt, device)


def _train_images_per_s(step, x: torch.Tensor, y: torch.Tensor) -> float:
    """Training images/s of ``step`` on one fixed batch: 10 steps after 3 warm-up ones."""
    _cuda_seconds(lambda: step(x, y), 3)
    return 10 * x.shape[0] / _cuda_seconds(lambda: step(x, y), 10)


def _forward_flops(model, size: int, device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size, device=device))
    return float(counter.get_total_flops())


def training_throughput_section(plan) -> str:
    if plan.device.type != "cuda":
        return "skipped: needs CUDA"
    rows, device = [], plan.device
    for backbone, size, batch in plan.throughput:
        model, step = _trainer(backbone, device)
        flops = 3 * _forward_flops(model, size, device)  # forward + backward ≈ 3 forwards
        x = torch.randn(batch, 3, size, size, device=device).contiguous(
            memory_format=torch.channels_last
        )
        y = (torch.arange(batch, device=device) % 8 == 0).float()
        for autotune in [False, True]:
            torch.backends.cudnn.benchmark = autotune
            torch.cuda.reset_peak_memory_stats(device)
            ips = _train_images_per_s(step, x, y)
            rows.append(
                {
                    "model": f"{backbone}@{size}",
                    "batch": batch,
                    "cudnn.benchmark": autotune,
                    "images/s": ips,
                    "share of bf16 peak": ips * flops / (plan.peak_tflops * 1e12),
                    "peak GiB": torch.cuda.max_memory_allocated(device) / 2**30,
                }
            )
        del model, step
        torch.cuda.empty_cache()
    torch.backends.cudnn.benchmark = False
    return (
        "Synthetic input, bf16 autocast, channels-last, AUC-M + PESG (momentum 0); 10 timed "
        f"steps after 3 warm-up steps (CUDA events). Peak: {plan.peak_tflops:g} TFLOP/s, "
        "FLOPs = 3 × the forward's (torch's FLOP counter).\n\n" + table(rows)
    )


def _timed_loader_run(loader, consume=None, device=None) -> tuple[float, float]:
    """(images/s over the whole run, seconds to the first batch) of one pass of ``loader``.

    The window is the whole run, from the loader's creation (worker start-up included)
    to its last batch: a steady-state tail would hide the start-up every epoch pays.
    """
    t0, seen, first = time.perf_counter(), 0, float("nan")
    for x, y in loader:
        if seen == 0:
            first = time.perf_counter() - t0
        if consume is not None:
            consume(x, y)
        seen += x.shape[0]
    if device is not None:
        torch.cuda.synchronize(device)
    return seen / (time.perf_counter() - t0), first


def _loader_images_per_s(ds, batch: int, workers: int) -> tuple[float, float]:
    from deepauc.pipeline.runtime import make_loader

    loader = make_loader(ds, batch, workers, shuffle=True, seed=0, epoch=0, drop_last=True)
    return _timed_loader_run(loader)


def loader_throughput_section(plan) -> str:
    if plan.device.type != "cuda":
        return "skipped: needs CUDA (its worker counts)"
    from deepauc.data.augment import AugmentConfig, build_train_transform
    from deepauc.data.dataset import CachedImages

    rows = []
    for size in sorted({s for _, s, _ in plan.throughput}):
        frame = write_images(plan.tmp / f"loader{size}", size, 64 * 40)
        ds = CachedImages(frame, str(plan.tmp / f"loader{size}" / "cache"), size,
                          build_train_transform(AugmentConfig()), seed=0)  # fmt: skip
        for workers in plan.loader_workers:
            ips, first = _loader_images_per_s(ds, 64, workers)
            rows.append({"size": size, "workers": workers, "images/s": ips, "first batch s": first})
    return (
        "Training loader (cached JPEG decode + augmentation + collate), batch 64, one pass "
        "over 2560 images, timed as a whole from the loader's creation (worker start-up "
        "included).\n\n" + table(rows)
    )


def _loader_fed_images_per_s(ds, step, batch: int, workers: int, device) -> float:
    """Training images/s fed by the loader, over the whole pass (start-up included)."""
    from deepauc.data.dataset import to_device_batch
    from deepauc.pipeline.runtime import make_loader

    def consume(x, y):
        step(to_device_batch(x, device), y.to(device, non_blocking=True))

    torch.cuda.synchronize(device)
    loader = make_loader(ds, batch, workers, shuffle=True, seed=0, epoch=1, drop_last=True)
    return _timed_loader_run(loader, consume, device)[0]


def _bare_views_per_s(model, n_views: int, size: int, chunk: int, device) -> float:
    x = torch.randn(chunk, 3, size, size, device=device).contiguous(
        memory_format=torch.channels_last
    )

    def forward():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            model(x)

    _cuda_seconds(forward, 2)
    n_calls = max(1, n_views // chunk)
    return n_calls * chunk / _cuda_seconds(forward, n_calls)


def fed_and_tta_section(plan) -> str:
    """Loader-fed against synthetic training, and TTA against a bare forward, at B5@384."""
    if plan.device.type != "cuda":
        return "skipped: needs CUDA"
    from deepauc.data.augment import AugmentConfig, build_train_transform
    from deepauc.data.dataset import CachedImages
    from deepauc.pipeline.predict import tta_predict

    backbone, size, batch, workers, device = "tf_efficientnet_b5", 384, 48, 12, plan.device
    root = plan.tmp / f"loader{size}"
    frame = write_images(root, size, 64 * 40)
    ds = CachedImages(frame, str(root / "cache"), size, build_train_transform(AugmentConfig()))
    model, step = _trainer(backbone, device)
    torch.backends.cudnn.benchmark = True
    x = torch.randn(batch, 3, size, size, device=device).contiguous(
        memory_format=torch.channels_last
    )
    y = (torch.arange(batch, device=device) % 8 == 0).float()
    synthetic = _train_images_per_s(step, x, y)
    fed = _loader_fed_images_per_s(ds, step, batch, workers, device)
    model.eval()
    cfg = experiment(
        plan, "tta_b5",
        data={"train_csv": str(root / "folds.csv"), "cache_dir": str(root / "cache"), "image_size": size},
        model={"backbone": backbone},
        train={"num_workers": workers, "batch_size": batch},
        tta={"dihedral": 8, "n_random": 22, "batch_size": batch},
    )  # fmt: skip
    # 768 rows: with 192 (the first H200 run, 0.27 of the bare forward) each of the 4 view
    # blocks gave its 12 workers 4 batches, too few to tell start-up from steady state
    rows_tta = frame.iloc[: 16 * batch]
    # warm-up on both sides: a first TTA pass (autotuning, worker start-up code paths)
    # before the timed one, as _bare_views_per_s runs two forwards before its timing
    tta_predict(model, frame.iloc[16 * batch : 18 * batch], cfg, device)
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    tta_predict(model, rows_tta, cfg, device)
    tta = len(rows_tta) * 30 / (time.perf_counter() - t0)
    bare = _bare_views_per_s(model, len(rows_tta) * 30, size, batch * 8, device)
    torch.backends.cudnn.benchmark = False
    rows = [
        {"measure": "training, synthetic input, images/s", "value": synthetic, "ratio": 1.0},
        {"measure": f"training, loader-fed ({workers} workers), images/s", "value": fed,
         "ratio": fed / synthetic},
        {"measure": "bare bf16 forward, views/s", "value": bare, "ratio": 1.0},
        {"measure": "tta_predict (8 dihedral + 22 random), views/s", "value": tta,
         "ratio": tta / bare},
    ]  # fmt: skip
    return (
        f"{backbone}@{size}, batch {batch}, bf16, channels-last, cudnn.benchmark on. Goals: "
        "loader-fed ≥ 0.9 × synthetic (one whole pass, worker start-up included); TTA ≥ "
        "0.9 × bare forward, each timed after a warm-up (TTA includes decoding, augmentation "
        f"and its loaders' start-up over {len(rows_tta)} images).\n\n" + table(rows)
    )
