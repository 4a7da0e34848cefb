"""The device check's 16 GB section: the recipes' 16 GB settings trained in fp16 under a cap.

Each config in ``CONFIGS`` runs a few training steps through ``train_fold`` with
``train.gpu_memory_gb=16`` and ``train.amp=fp16`` (a T4 or P100 path), the caching
allocator capped at what such a card leaves to tensors; peak memory is read per config.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from gpu_check_runs import table, write_images

ROOT = Path(__file__).resolve().parent.parent
# every recipe model that a 16 GB card trains; the siim AUC-M files share their CE
# twin's batch and memory table, B6 (checkpointing, PESG's reference copy) stands for them
CONFIGS = [
    "configs/siim/ce_b3_256.yaml",
    "configs/siim/ce_b5_384.yaml",
    "configs/siim/ce_b6_512.yaml",
    "configs/siim/aucm_b6_512.yaml",
    "configs/kaggle/ce_b3_256.yaml",
    "configs/kaggle/ce_b5_384.yaml",
]
# a 16 GB T4 shows 15 GiB; the CUDA context and cuDNN's handles take about half a GiB
# outside the caching allocator, which leaves this much to tensors
CARD_GIB = 14.5
STEPS = 3


def _overrides(plan, path: str, root: Path) -> list[str]:
    tiny = [f"model.backbone={plan.pipeline_backbone}", f"data.image_size={plan.pipeline_size}"]
    return [
        f"data.train_csv={root / 'folds.csv'}",
        f"data.cache_dir={root / 'cache'}",
        f"data.test_csv={root / 'folds.csv'}",  # training never reads it
        "model.pretrained=false",
        "model.init_from=null",
        "n_folds=2",
        "folds=[0]",
        "schedule.epochs=1",
        "train.gpu_memory_gb=16",
        f"train.amp={'fp16' if plan.device.type == 'cuda' else 'off'}",
        f"train.max_steps_per_epoch={1 if plan.tiny else STEPS}",
        f"train.num_workers={plan.workers}",
        f"models_dir={plan.tmp / 'memory_models' / Path(path).parent.name}",
        f"preds_dir={plan.tmp / 'memory_preds'}",
    ] + (tiny if plan.tiny else [])


def _load(plan, path: str):
    from deepauc.pipeline.experiment import load_experiment

    # the image size first (tiny runs override it), then the images at that size
    size = plan.pipeline_size if plan.tiny else load_experiment(str(ROOT / path)).data.image_size
    root = plan.tmp / f"memory{size}"
    cfg = load_experiment(str(ROOT / path), _overrides(plan, path, root))
    if not (root / "folds.csv").exists():
        steps = cfg.train.max_steps_per_epoch
        write_images(root, size, 2 * cfg.train.batch_size * steps + 2 * cfg.train.batch_size)
    return cfg


def _run(plan, path: str) -> dict:
    from deepauc.pipeline.steps import is_out_of_memory
    from deepauc.pipeline.train import train_fold

    cfg = _load(plan, path)
    t, cuda = cfg.train, plan.device.type == "cuda"
    row = {
        "config": path.removeprefix("configs/"),
        "model": f"{cfg.model.backbone}@{cfg.data.image_size}",
        "batch": t.batch_size,
        "micro-batch": t.batch_size // t.accumulate,
        "grad ckpt": cfg.model.grad_checkpointing,
    }
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(plan.device)
    t0 = time.perf_counter()
    try:
        train_fold(cfg, 0, plan.device)
        log = pd.read_csv(cfg.run_dir(0) / "log.csv")
        finite = bool(torch.isfinite(torch.tensor(log["train_loss"].values)).all())
        result = ("fits" if cuda else "ran") if finite else "loss not finite"
    except Exception as err:  # an OOM is this section's finding; anything else fails it
        if not is_out_of_memory(err):
            raise
        result = f"OUT OF MEMORY: {str(err).splitlines()[0][:160]}"
    row["seconds"] = time.perf_counter() - t0
    if cuda:
        row["peak allocated GiB"] = torch.cuda.max_memory_allocated(plan.device) / 2**30
        row["peak reserved GiB"] = torch.cuda.max_memory_reserved(plan.device) / 2**30
    row["result"] = result
    return row


def memory_16gb_section(plan) -> str:
    cuda = plan.device.type == "cuda"
    # the cap takes a device index, not a bare torch.device("cuda")
    index = plan.device.index
    if cuda:
        index = torch.cuda.current_device() if index is None else index
        total = torch.cuda.get_device_properties(index).total_memory / 2**30
        torch.cuda.set_per_process_memory_fraction(min(1.0, CARD_GIB / total), index)
    try:
        rows = [_run(plan, path) for path in CONFIGS]
    finally:
        if cuda:
            torch.cuda.set_per_process_memory_fraction(1.0, index)
            torch.cuda.empty_cache()
    where = (
        f"fp16 autocast with the GradScaler, the caching allocator capped at {CARD_GIB:g} GiB "
        f"(a 16 GB card less its CUDA context), {STEPS} steps and the validation pass"
        if cuda
        else f"CPU dry run: {plan.pipeline_backbone} at {plan.pipeline_size} px, 1 step, no cap"
    )
    return (
        "Each recipe's `train.gpu_memory_gb=16` setting (micro-batch, gradient checkpointing) "
        f"trained through `train_fold` from random weights: {where}. Peak memory is the "
        "allocator's, over training and validation.\n\n" + table(rows)
    )
