"""``deepauc external``: one training table from the competition and external ISIC data,
each image once, whichever published layout each folder holds (docs/data-layouts.md)."""

from __future__ import annotations

import argparse
import os

from deepauc.data.external.files import strip_suffix
from deepauc.data.external.merge import SOURCES, build_training_table, deduplicate
from deepauc.data.external.report import format_report
from deepauc.data.tables import TRAIN_COLUMNS, check_columns
from deepauc.io import write_csv, write_text

__all__ = [
    "SOURCES",
    "add_arguments",
    "build_training_table",
    "deduplicate",
    "format_report",
    "run",
    "strip_suffix",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--train-csv",
        required=True,
        help="competition train.csv (Kaggle 2020 or jpeg-melanoma-NxN layout); its folder "
        "is the data root for image_path",
    )
    parser.add_argument(
        "--isic2019-dir",
        help="folder with ISIC_2019_Training_GroundTruth.csv, _Metadata.csv, images, "
        "or a jpeg-isic2019-NxN folder (train.csv, train/); none: competition rows only",
    )
    parser.add_argument(
        "--isic2018-dir",
        help="folder with ISIC2018_Task3_Training_GroundTruth.csv (ISIC challenge) "
        "or HAM10000_metadata.csv (Kaggle/Dataverse), and images",
    )
    parser.add_argument(
        "--isic2017-dir", help="folder with ISIC 2017 part 3 ground truth and images"
    )
    parser.add_argument("--malignant-dir", help="folder with malignant.csv and images")
    parser.add_argument("--out", required=True, help="merged training table (CSV)")
    parser.add_argument("--report", help="also write the merge report here (markdown)")
    parser.add_argument(
        "--no-content-dedup",
        action="store_true",
        help="skip the byte-identical image check (no image reads)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="threads for hashing (default: CPU count, at most 8)",
    )


def run(args: argparse.Namespace) -> int:
    table, report = build_training_table(
        args.train_csv,
        isic2019_dir=args.isic2019_dir,
        isic2018_dir=args.isic2018_dir,
        isic2017_dir=args.isic2017_dir,
        malignant_dir=args.malignant_dir,
        content_dedup=not args.no_content_dedup,
        workers=args.workers,
    )
    check_columns(table, TRAIN_COLUMNS + ["source", "image_path"], args.out)
    write_csv(table, args.out)
    text = format_report(report)
    print(text, end="")
    if args.report:
        write_text(text, args.report)
    print(f"wrote {args.out}")
    return 0
