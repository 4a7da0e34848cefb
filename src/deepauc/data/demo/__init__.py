"""``deepauc demo-data``: a small synthetic data set in the exact competition and ISIC layouts,
written deterministically from a seed, so the pipeline runs without the downloads."""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from deepauc.data.demo.competition import write_competition
from deepauc.data.demo.images import Style, render_lesion
from deepauc.data.demo.isic import write_isic2017, write_isic2018, write_isic2019, write_malignant
from deepauc.data.demo.patients import draw_images_per_patient, malignant_flags
from deepauc.data.demo.sizes import DemoSizes
from deepauc.data.demo.writer import ImageWriter
from deepauc.data.tables import TEST_COLUMNS, TRAIN_COLUMNS
from deepauc.io import write_csv, write_text

__all__ = [
    "DemoSizes",
    "Style",
    "add_arguments",
    "draw_images_per_patient",
    "generate",
    "malignant_flags",
    "render_lesion",
    "run",
]

README_TEXT = """\
SYNTHETIC DEMO DATA - not real patients, not real images.

Written by `deepauc demo-data` (seed {seed}) in the SIIM-ISIC Melanoma Classification
(Kaggle 2020) layout, plus ISIC 2019 / 2018 (HAM10000) / 2017 and an extra-malignant
set under external/, so that the whole pipeline can run without the real downloads.
Images are procedurally drawn lesions on skin-toned backgrounds; labels follow a
latent severity with deliberate overlap and label noise, so scores are imperfect.
Metadata (age, sex, site) is weakly related to the label and partly missing.
demo_solution.csv holds the test labels (Kaggle solution format, Usage
Public/Private); it does not exist in the real competition.

Sizes: {sizes}
"""


def generate(
    out: str | Path, seed: int = 0, sizes: DemoSizes | None = None, workers: int = 1
) -> dict:
    """Write the demo data set under ``out``; return a summary dict of counts.

    The output depends on ``seed`` and ``sizes`` only, not on ``workers``::

        DIR/train.csv, DIR/test.csv, DIR/sample_submission.csv      (competition columns)
        DIR/jpeg/train/<image_name>.jpg, DIR/jpeg/test/<image_name>.jpg
        DIR/external/isic2019/ISIC_2019_Training_GroundTruth.csv     (one-hot MEL..UNK)
        DIR/external/isic2019/ISIC_2019_Training_Metadata.csv
        DIR/external/isic2019/ISIC_2019_Training_Input/<image>.jpg  (some `_downsampled`)
        DIR/external/isic2018/HAM10000_metadata.csv + images/<image_id>.jpg
        DIR/external/isic2017/ISIC-2017_Training_Part3_GroundTruth.csv
            + ISIC-2017_Training_Data/<image_id>.jpg + ISIC-2017_Training_Data_metadata.csv
        DIR/external/malignant/malignant.csv + jpeg/<image_name>.jpg
        DIR/demo_solution.csv   test labels (Kaggle "solution" format with a Usage column);
                                not part of the competition layout, for scoring the demo only
        DIR/README.txt

    ``train.csv`` is written last, so its presence means the set is complete.
    """
    sizes = sizes or DemoSizes()
    sizes.validate()
    with ImageWriter(seed, Path(out), workers) as writer:
        return _generate(Path(out), seed, sizes, writer)


def _generate(out: Path, seed: int, sizes: DemoSizes, writer: ImageWriter) -> dict:
    rng = np.random.default_rng(seed)
    comp = write_competition(rng, sizes, writer)
    isic2019 = write_isic2019(rng, seed, sizes, writer, comp)
    write_isic2018(rng, seed, sizes, writer, isic2019)
    write_isic2017(rng, seed, sizes, writer, isic2019)
    write_malignant(rng, sizes, writer, comp, isic2019)
    isic = isic2019.rows

    # competition tables last, train.csv very last: its presence means "complete"
    stale = writer.remove_stale()
    test = comp.test.sort_values("image_name", kind="stable")
    usage = np.where(rng.uniform(size=len(test)) < 0.3, "Public", "Private")
    write_csv(
        pd.DataFrame({"image_name": test["image_name"], "target": test["target"], "Usage": usage}),
        out / "demo_solution.csv",
    )
    write_csv(
        pd.DataFrame({"image_name": test["image_name"], "target": 0.0}),
        out / "sample_submission.csv",
    )
    write_csv(test[TEST_COLUMNS], out / "test.csv")
    write_text(README_TEXT.format(seed=seed, sizes=dataclasses.asdict(sizes)), out / "README.txt")
    train = comp.train.sort_values("image_name", kind="stable")
    write_csv(train[TRAIN_COLUMNS], out / "train.csv")

    return {
        "train images": len(train),
        "train patients": int(train["patient_id"].nunique()),
        "train malignant": int(train["target"].sum()),
        "train malignant ratio": float(train["target"].mean()),
        "max images per patient": int(train["patient_id"].value_counts().max()),
        "test images": len(test),
        "test patients": int(test["patient_id"].nunique()),
        "isic2019 images": len(isic),
        "isic2019 MEL ratio": float((isic["label"] == "MEL").mean()),
        "isic2018 images": sizes.n_isic2018,
        "isic2017 images": sizes.n_isic2017,
        "extra malignant images": sizes.n_malignant,
        "image files written": writer.count,
        "stale image files removed": stale,
    }


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DemoSizes()
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--n-train", type=int, default=d.n_train)
    parser.add_argument("--n-patients", type=int, default=d.n_patients)
    parser.add_argument("--n-test", type=int, default=d.n_test)
    parser.add_argument("--n-test-patients", type=int, default=d.n_test_patients)
    parser.add_argument("--malignant-ratio", type=float, default=d.malignant_ratio)
    parser.add_argument("--n-isic2019", type=int, default=d.n_isic2019)
    parser.add_argument("--isic2019-mel-ratio", type=float, default=d.isic2019_mel_ratio)
    parser.add_argument("--n-isic2018", type=int, default=d.n_isic2018)
    parser.add_argument("--n-isic2017", type=int, default=d.n_isic2017)
    parser.add_argument("--n-malignant", type=int, default=d.n_malignant)
    parser.add_argument(
        "--image-size",
        type=int,
        default=d.image_size,
        help="side of competition images in pixels (ISIC 2019/2018 are 4:3)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes drawing images (default: CPU count); output is the same",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="write even if OUT/train.csv already exists"
    )


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if (out / "train.csv").exists() and not args.overwrite:
        raise ValueError(f"{out / 'train.csv'} already exists (use --overwrite to regenerate)")
    sizes = DemoSizes(
        n_train=args.n_train,
        n_patients=args.n_patients,
        n_test=args.n_test,
        n_test_patients=args.n_test_patients,
        malignant_ratio=args.malignant_ratio,
        n_isic2019=args.n_isic2019,
        isic2019_mel_ratio=args.isic2019_mel_ratio,
        n_isic2018=args.n_isic2018,
        n_isic2017=args.n_isic2017,
        n_malignant=args.n_malignant,
        image_size=args.image_size,
    )
    start = time.perf_counter()
    summary = generate(out, args.seed, sizes, workers=args.workers)
    width = max(len(k) for k in summary)
    print(f"demo data written to {out} in {time.perf_counter() - start:.1f} s")
    for key, value in summary.items():
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"  {key:<{width}}  {text}")
    return 0
