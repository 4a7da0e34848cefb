"""Reader of the resized ISIC 2019 set (jpeg-isic2019-NxN): 2019 rows in the 2020 columns
plus tfrecord, width, height, images in ``train/``; as competition-format training rows."""

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

# The patient_id the resized 2019 set gives to every row: it has no patient ids.
NO_PATIENT = "-1"
_SITE: dict[str, str | None] = {**SITE_TO_2020, "unknown": None}


def _missing(values: pd.Series, *also: str) -> pd.Series:
    """True where a text cell is empty or one of ``also``."""
    text = values.astype(str).str.strip()
    return values.isna() | (text == "") | text.isin(also)


def load_resized2019(folder: str | os.PathLike, root: Path) -> pd.DataFrame:
    """The resized ISIC 2019 set as train-format rows, ``source`` isic2019.

    ``patient_id`` -1 is missing and becomes ``ISIC2019_<image>``; the ``_downsampled``
    suffix is stripped from ``image_name`` (the file keeps it); sites are mapped to the
    2020 vocabulary and "unknown" sex or site is missing; an empty diagnosis is
    "unknown". Rows with ``tfrecord == -1`` are duplicates the publisher left out of
    its TFRecords: they are marked (``_duplicate_mark``) for the merge to drop.
    """
    folder = Path(folder)
    path = folder / "train.csv"
    raw = read_csv_table(path, TRAIN_COLUMNS + RESIZED_COLUMNS)
    name = str(path)
    _, marked = resized_columns(raw, name)
    names = raw["image_name"].map(strip_suffix)
    site = raw[SITE_COLUMN].str.strip().str.lower()
    df = pd.DataFrame(
        {
            "image_name": names,
            "patient_id": np.where(
                _missing(raw["patient_id"], NO_PATIENT), "ISIC2019_" + names, raw["patient_id"]
            ),
            "sex": sex_column(raw, "sex", name),
            "age_approx": check_age(raw, "age_approx", name),
            SITE_COLUMN: map_vocabulary(
                raw.assign(**{SITE_COLUMN: site}), SITE_COLUMN, _SITE, name
            ),
            "diagnosis": raw["diagnosis"].mask(_missing(raw["diagnosis"]), "unknown"),
            "target": check_targets(raw, name),
        }
    )
    files = resolve_images(raw["image_name"], index_images(folder / "train"), name)
    return finish_rows(df, "isic2019", files, root, name, duplicate_mark=marked)
