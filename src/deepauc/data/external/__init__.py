"""``deepauc external``: one training table from the competition and external ISIC data,
each image once, whichever published layout each folder holds (docs/data-layouts.md)."""

from __future__ import annotations

import argparse
import os

from deepauc.data.external.files import strip_suffix
from deepauc.data.external.merge import SOURCES, build_training_table, deduplicate
from deepauc.data.external.registry import EXTERNAL_SOURCES, add_source_arguments
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
    add_source_arguments(parser)
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
        external=args.external,
        content_dedup=not args.no_content_dedup,
        workers=args.workers,
        **{f"{name}_dir": getattr(args, f"{name}_dir") for name in EXTERNAL_SOURCES},
    )
    check_columns(table, TRAIN_COLUMNS + ["source", "image_path"], args.out)
    write_csv(table, args.out)
    text = format_report(report)
    print(text, end="")
    if args.report:
        write_text(text, args.report)
    print(f"wrote {args.out}")
    return 0
