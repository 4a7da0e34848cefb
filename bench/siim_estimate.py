"""Estimated GPU hours of the siim recipe from counted FLOPs (no GPU needed).

Counts one forward pass per backbone and size with torch's FLOP counter (x3 for a training
step, the usual forward + backward estimate), multiplies by the images the recipe trains on
and predicts, and divides by an assumed achieved throughput: a share of the card's dense
bf16 peak. The share is an assumption, not a measurement; `make gpu-check` measures it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import step_flops  # noqa: E402
from deepauc.models import create_model  # noqa: E402

# the paper's training set: 33,126 competition + 12,859 ISIC + 580 malignant images;
# the competition's test set: 10,982 images
TRAIN_IMAGES, COMPETITION_IMAGES, TEST_IMAGES = 46_131, 33_126, 10_982


def recipe_flops(configs: Path, folds: int) -> list[dict]:
    rows = []
    for ce in sorted(configs.glob("ce_*.yaml")):
        ce_cfg = yaml.safe_load(ce.read_text())
        auc_cfg = yaml.safe_load((configs / ce.name.replace("ce_", "aucm_")).read_text())
        backbone, size = ce_cfg["model"]["backbone"], ce_cfg["data"]["image_size"]
        model = create_model(backbone, False).to(memory_format=torch.channels_last)
        forward = step_flops(model, torch.randn(1, 3, size, size), backward=False)
        epochs = ce_cfg["schedule"]["epochs"] + auc_cfg["schedule"]["epochs"]
        train_rows = TRAIN_IMAGES - COMPETITION_IMAGES / folds  # one fold validates
        views = auc_cfg["tta"]["dihedral"] + auc_cfg["tta"]["n_random"]
        # both stages predict: out-of-fold rows once, the test set once per fold
        predicted = 2 * (COMPETITION_IMAGES + TEST_IMAGES * folds) * views
        total = 3 * forward * train_rows * epochs * folds + forward * predicted
        rows.append(
            dict(
                model=f"{backbone}@{size}",
                gflop_fwd=forward / 1e9,
                epochs=epochs,
                pflop=total / 1e15,
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="configs/siim")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100/H200 SXM)"
    )
    parser.add_argument("--share", type=float, action="append", help="assumed share of the peak")
    args = parser.parse_args()
    shares = args.share or [0.01, 0.02, 0.05]
    rows = recipe_flops(Path(args.configs), args.folds)
    head = " | ".join(f"h at {s:.0%} of peak" for s in shares)
    print(
        f"| model | forward GFLOP/image | epochs (CE + AUC-M) | PFLOP, {args.folds} folds with TTA | {head} |"
    )
    print("|---|---|---|---|" + "---|" * len(shares))
    for r in rows + [
        dict(model="all", gflop_fwd=None, epochs="", pflop=sum(r["pflop"] for r in rows))
    ]:
        hours = " | ".join(
            f"{r['pflop'] * 1e15 / (args.peak_tflops * 1e12 * s) / 3600:.1f}" for s in shares
        )
        print(
            f"| {r['model']} | {r['gflop_fwd']:.2f} | {r['epochs']} | {r['pflop']:.0f} | {hours} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
