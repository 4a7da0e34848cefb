"""Readers of the resized sets' tables (2020 columns plus tfrecord, width, height): the resized
ISIC 2019 set (jpeg-isic2019-NxN, images in ``train/``) as competition-format training rows,
and the row reading it shares with the malignant-v2 set."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from deepauc.data.external.files import index_images, resolve_images, strip_suffix
from deepauc.data.external.sources import SITE_TO_2020, finish_rows, sex_column
from deepauc.data.layouts import RESIZED_COLUMNS, resized_columns
from deepauc.data.tables import (
    SITE_COLUMN,
    TRAIN_COLUMNS,
    check_age,
    check_targets,
    map_vocabulary,
    read_csv_table,
)

# The patient_id the resized sets give to a row without one (every 2019 row).
NO_PATIENT = "-1"
_SITE: dict[str, str | None] = {**SITE_TO_2020, "unknown": None}


def _missing(values: pd.Series, *also: str) -> pd.Series:
    """True where a text cell is empty or one of ``also``."""
    text = values.astype(str).str.strip()
    return values.isna() | (text == "") | text.isin(also)


def resized_rows(
    raw: pd.DataFrame, name: str, patient_prefix: str, fill_melanoma: bool = False
) -> tuple[pd.DataFrame, pd.Series]:
    """A resized set's table (``raw``, read from ``name``) as train-format rows, and the mark
    of its ``tfrecord == -1`` rows (duplicates the publisher left out of its TFRecords).

    ``patient_id`` -1 or empty is missing and becomes ``<patient_prefix><image>``; the
    ``_downsampled`` suffix is stripped from ``image_name``; sites are mapped to the 2020
    vocabulary and "unknown" sex or site is missing; an empty diagnosis is "unknown" (with
    ``fill_melanoma``: "melanoma" on a target-1 row, the competition's positive class).
    """
    _, marked = resized_columns(raw, name)
    names = raw["image_name"].map(strip_suffix)
    site = raw[SITE_COLUMN].str.strip().str.lower()
    empty = _missing(raw["diagnosis"])
    df = pd.DataFrame(
        {
            "image_name": names,
            "patient_id": np.where(
                _missing(raw["patient_id"], NO_PATIENT), patient_prefix + names, raw["patient_id"]
            ),
            "sex": sex_column(raw, "sex", name),
            "age_approx": check_age(raw, "age_approx", name),
            SITE_COLUMN: map_vocabulary(
                raw.assign(**{SITE_COLUMN: site}), SITE_COLUMN, _SITE, name
            ),
            "diagnosis": raw["diagnosis"].mask(empty, "unknown"),
            "target": check_targets(raw, name),
        }
    )
    if fill_melanoma:
        df.loc[empty & (df["target"] == 1), "diagnosis"] = "melanoma"
    return df, marked


def load_resized2019(folder: str | os.PathLike, root: Path) -> pd.DataFrame:
    """The resized ISIC 2019 set as train-format rows, ``source`` isic2019.

    Rows as :func:`resized_rows` reads them, a missing patient becoming
    ``ISIC2019_<image>``; the files keep the ``_downsampled`` suffix. Rows with
    ``tfrecord == -1`` are marked (``_duplicate_mark``) for the merge to drop.
    """
    folder = Path(folder)
    path = folder / "train.csv"
    raw = read_csv_table(path, TRAIN_COLUMNS + RESIZED_COLUMNS)
    df, marked = resized_rows(raw, str(path), "ISIC2019_")
    files = resolve_images(raw["image_name"], index_images(folder / "train"), str(path))
    return finish_rows(df, "isic2019", files, root, str(path), duplicate_mark=marked)
