"""Which published layout the competition data root holds (Kaggle 2020 JPEGs or a resized
``jpeg-melanoma-NxN`` set), and the file names and checks the external layouts share
(docs/data-layouts.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from deepauc.data.tables import TRAIN_COLUMNS, describe_rows, numeric_column

# The columns the resized sets (jpeg-melanoma-NxN, jpeg-isic2019-NxN) add to train.csv.
RESIZED_COLUMNS = ["tfrecord", "width", "height"]
# The tfrecord value the resized sets give to a duplicate left out of their TFRecords.
DUPLICATE_TFRECORD = -1

ISIC2019_GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
ISIC2019_METADATA = "ISIC_2019_Training_Metadata.csv"
ISIC2018_GROUND_TRUTH = "ISIC2018_Task3_Training_GroundTruth.csv"
ISIC2018_LESION_GROUPINGS = "ISIC2018_Task3_Training_LesionGroupings.csv"
HAM_METADATA = "HAM10000_metadata.csv"
MALIGNANT_CSV = "malignant.csv"
ISIC2017_COLUMNS = ["image_id", "melanoma", "seborrheic_keratosis"]

# Per competition layout: what its data root must hold (for error messages). The external
# layouts are in the registry of external sources (deepauc.data.external.registry).
COMPETITION_LOOKED_FOR = {
    "kaggle2020": "train.csv + jpeg/train/ (the Kaggle 2020 competition JPEGs)",
    "resized2020": "train.csv with columns tfrecord,width,height + train/ (jpeg-melanoma-NxN)",
}


@dataclass(frozen=True)
class Layout:
    """A detected layout: its name, the folder and where images are.

    ``train_images`` and ``test_images`` are set for the competition layouts only.
    """

    name: str
    folder: Path
    train_images: Path | None = None
    test_images: Path | None = None


def csv_header(path: str | os.PathLike) -> list[str]:
    """The column names of a CSV file (stripped); [] for a file without a header."""
    try:
        return [str(c).strip() for c in pd.read_csv(path, nrows=0).columns]
    except (pd.errors.EmptyDataError, UnicodeDecodeError, pd.errors.ParserError):
        return []


def is_resized_table(path: Path) -> bool:
    """True if ``path`` is a train.csv of a resized set: the 2020 columns + tfrecord, width, height."""
    return path.is_file() and set(TRAIN_COLUMNS + RESIZED_COLUMNS) <= set(csv_header(path))


def unknown_layout(folder: Path, looked_for: list[str], what: str) -> ValueError:
    """The one-line error for a folder in none of the layouts described by ``looked_for``."""
    looked = "; ".join(looked_for)
    return ValueError(f"{folder}: not a known {what} layout; looked for: {looked}")


def _has_dicom_only(folder: Path) -> bool:
    train = folder / "train"
    return (
        not (folder / "jpeg").exists()
        and train.is_dir()
        and next(train.glob("*.dcm"), None) is not None
    )


def detect_competition(train_csv: str | os.PathLike) -> Layout:
    """The layout of the competition data root, the folder of ``train_csv``.

    ``kaggle2020``: images in ``jpeg/train/`` and ``jpeg/test/``; ``resized2020``
    (jpeg-melanoma-NxN): train.csv with tfrecord, width, height and images in ``train/``
    and ``test/``. A DICOM-only folder and any other layout raise ValueError.
    """
    train_csv = Path(train_csv)
    root = train_csv.parent
    if (root / "jpeg" / "train").is_dir():
        return Layout("kaggle2020", root, root / "jpeg" / "train", root / "jpeg" / "test")
    if (root / "train").is_dir() and is_resized_table(train_csv):
        return Layout("resized2020", root, root / "train", root / "test")
    if _has_dicom_only(root):
        raise ValueError(
            f"{root}: train/ holds DICOM (.dcm) files and there is no jpeg/ folder; the "
            "pipeline reads JPEGs: download the competition's jpeg/ folders or a resized "
            "JPEG set (jpeg-melanoma-NxN), see docs/data-layouts.md"
        )
    raise unknown_layout(root, list(COMPETITION_LOOKED_FOR.values()), "competition data")


def resized_columns(df: pd.DataFrame, name: str) -> tuple[pd.DataFrame, pd.Series]:
    """tfrecord, width and height of a resized set's table as integers (nullable Int64,
    so that rows without them stay integers in a merged CSV), and the duplicate mark.

    Returns (the three columns, True where ``tfrecord == -1``). A value that is not a
    whole number raises ValueError naming its lines.
    """
    out = {}
    for column in RESIZED_COLUMNS:
        values = numeric_column(df, column, name)
        bad = (values.notna() & (values != values.round())).to_numpy()
        if bad.any():
            raise ValueError(
                f"{name}: column {column!r} must hold whole numbers, bad at "
                f"{describe_rows(df, bad, column)}"
            )
        out[column] = values.astype("Int64")
    frame = pd.DataFrame(out, index=df.index)
    marked = (frame["tfrecord"] == DUPLICATE_TFRECORD).fillna(False).astype(bool)
    return frame, marked
