"""Estimated GPU hours of the siim and kaggle recipes from counted FLOPs (no GPU needed).

Counts one forward pass per backbone and size with torch's FLOP counter (x3 for a training
step, the usual forward + backward estimate), multiplies by the images the recipe trains on
and predicts, and divides by an assumed achieved throughput: a share of the card's dense
16-bit peak, times the GPUs that run jobs side by side. The share is an assumption, not a
measurement; `make gpu-check` measures it.

    python bench/siim_estimate.py                       # configs/siim on one H100/H200
    python bench/siim_estimate.py --experiment kaggle   # configs/kaggle on Kaggle's 2x T4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "src"), str(Path(__file__).parent)]
from common import step_flops  # noqa: E402
from deepauc.config import read_config_mapping  # noqa: E402
from deepauc.models import create_model  # noqa: E402

# the paper's training set: 33,126 competition + 12,859 ISIC + 580 malignant images;
# the competition's test set: 10,982 images; Deotte's resized ISIC 2019 set: 25,331 images
TRAIN_IMAGES, COMPETITION_IMAGES, TEST_IMAGES = 46_131, 33_126, 10_982
ISIC2019_IMAGES = 25_331
# per experiment: the card's dense 16-bit peak (TFLOP/s), GPUs running jobs side by side,
# assumed shares of the peak, training images, usable hours of a session (None: no limit)
PRESETS = {
    "siim": dict(peak=989.0, gpus=1, shares=[0.01, 0.02, 0.05], train=TRAIN_IMAGES, session=None),
    # T4: 65 TFLOP/s fp16 tensor peak; EfficientNet's depthwise convolutions and BN are
    # memory-bound, so a few percent of it; 8.5 of a session's 9 hours train (set-up, carry)
    "kaggle": dict(
        peak=65.0,
        gpus=2,
        shares=[0.02, 0.04],
        train=COMPETITION_IMAGES + ISIC2019_IMAGES,
        session=8.5,
    ),
}


def recipe_flops(configs: Path, folds: int, train_images: int) -> list[dict]:
    rows = []
    for ce in sorted(configs.glob("ce_*.yaml")):
        ce_cfg = read_config_mapping(ce)  # with its base: chain
        auc_cfg = read_config_mapping(configs / ce.name.replace("ce_", "aucm_"))
        backbone, size = ce_cfg["model"]["backbone"], ce_cfg["data"]["image_size"]
        model = create_model(backbone, False).to(memory_format=torch.channels_last)
        forward = step_flops(model, torch.randn(1, 3, size, size), backward=False)
        epochs = ce_cfg["schedule"]["epochs"] + auc_cfg["schedule"]["epochs"]
        train_rows = train_images - COMPETITION_IMAGES / folds  # one fold validates
        views = auc_cfg["tta"]["dihedral"] + auc_cfg["tta"]["n_random"]
        # both stages predict: out-of-fold rows once, the test set once per fold
        predicted = 2 * (COMPETITION_IMAGES + TEST_IMAGES * folds) * views
        total = 3 * forward * train_rows * epochs * folds + forward * predicted
        rows.append(
            dict(
                model=f"{backbone}@{size}",
                gflop=f"{forward / 1e9:.2f}",
                epochs=epochs,
                views=views,
                pflop=total / 1e15,
            )
        )
    return rows


def print_table(rows: list[dict], args, preset: dict) -> None:
    shares, gpus, session = args.share or preset["shares"], args.gpus, preset["session"]
    head = " | ".join(f"h at {s:.0%} of peak" for s in shares)
    extra = f" | {gpus}-GPU h | sessions of {session:g} h" if session else ""
    print(
        f"| model | forward GFLOP/image | epochs (CE + AUC-M) | TTA views | "
        f"PFLOP, {args.folds} folds with TTA | {head}{extra} |"
    )
    print("|---|---|---|---|---|" + "---|" * (len(shares) + (2 if session else 0)))
    total = dict(model="all", gflop="", epochs="", views="", pflop=sum(r["pflop"] for r in rows))
    for r in [*rows, total]:
        hours = [r["pflop"] * 1e15 / (args.peak_tflops * 1e12 * s) / 3600 for s in shares]
        cells = " | ".join(f"{h:.1f}" for h in hours)
        if session:  # one GPU-hour range: the lowest and highest share
            wall = [h / gpus for h in (hours[-1], hours[0])]
            cells += (
                f" | {wall[0]:.1f}–{wall[1]:.1f} | {wall[0] / session:.1f}–{wall[1] / session:.1f}"
            )
        print(
            f"| {r['model']} | {r['gflop']} | {r['epochs']} | {r['views']} | {r['pflop']:.0f} | {cells} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", choices=sorted(PRESETS), default="siim")
    parser.add_argument("--configs", help="default: configs/<experiment>")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, help="dense 16-bit peak of one GPU")
    parser.add_argument("--gpus", type=int, help="GPUs running jobs side by side")
    parser.add_argument("--train-images", type=int, help="training rows before the fold split")
    parser.add_argument("--share", type=float, action="append", help="assumed share of the peak")
    args = parser.parse_args()
    preset = PRESETS[args.experiment]
    args.peak_tflops = args.peak_tflops or preset["peak"]
    args.gpus = args.gpus or preset["gpus"]
    configs = Path(args.configs or f"configs/{args.experiment}")
    rows = recipe_flops(configs, args.folds, args.train_images or preset["train"])
    print(
        f"{configs}: {args.peak_tflops:g} TFLOP/s peak per GPU, {args.gpus} GPU(s), "
        f"{args.train_images or preset['train']} training images, {args.folds} folds"
    )
    print_table(rows, args, preset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
