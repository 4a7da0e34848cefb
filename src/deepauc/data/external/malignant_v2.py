"""Reader of Chris Deotte's malignant-v2 set (``malignant-v2-NxN``): up to three tables of
malignant rows in the resized 2020 columns, concatenated, as ``malignant`` training rows."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from deepauc.data.external.files import index_images, resolve_images
from deepauc.data.external.resized import resized_rows
from deepauc.data.external.sources import finish_rows
from deepauc.data.layouts import RESIZED_COLUMNS
from deepauc.data.tables import TRAIN_COLUMNS, check_unique_names, read_csv_table

# The set's tables. Which one holds which source (copies of 2020 competition rows, 2019,
# 2017/18) is not documented by the publisher, so each is read alike and none is required.
MALIGNANT_V2_CSVS = ("train_malig_1.csv", "train_malig_2.csv", "train_malig_3.csv")


def malignant_v2_tables(folder: Path) -> list[Path]:
    """The set's tables present in ``folder`` or below it, in MALIGNANT_V2_CSVS order (the
    first in sorted path order where one name occurs twice)."""
    found = []
    for name in MALIGNANT_V2_CSVS:
        paths = sorted(folder.rglob(name))
        if paths:
            found.append(paths[0])
    return found


def load_malignant_v2(folder: str | os.PathLike, root: Path) -> pd.DataFrame:
    """Every malignant-v2 table below ``folder`` (at least one) as train-format rows, ``source``
    malignant, in table order.

    Each table has the resized 2020 columns (tfrecord, width, height after ``target``) and
    unique image names; rows are read as the resized sets' (:func:`resized_rows`), a missing
    patient becoming ``MALIGNANT_<image>`` and an empty diagnosis of a malignant row
    "melanoma"; ``tfrecord == -1`` rows are marked for the merge to drop. Images are the files
    named ``<image_name>.jpg`` anywhere below ``folder``. A name in two tables, or a copy of a
    competition image, is left to the merge's de-duplication (same name, same bytes).
    """
    folder = Path(folder)
    paths = malignant_v2_tables(folder)
    if not paths:
        raise FileNotFoundError(
            f"{folder}: none of {', '.join(MALIGNANT_V2_CSVS)} in this folder or below"
        )
    images = index_images(folder)
    frames = []
    for path in paths:
        raw = read_csv_table(path, TRAIN_COLUMNS + RESIZED_COLUMNS)
        check_unique_names(raw, str(path))
        df, marked = resized_rows(raw, str(path), "MALIGNANT_", fill_melanoma=True)
        files = resolve_images(raw["image_name"], images, str(path))
        frames.append(finish_rows(df, "malignant", files, root, str(path), duplicate_mark=marked))
    return pd.concat(frames, ignore_index=True)
