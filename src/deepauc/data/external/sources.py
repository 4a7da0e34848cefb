"""Readers of the external sets in their published layouts, each as competition-format
training rows with ``source`` and ``image_path``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from deepauc.data.external.files import (
    find_file,
    index_images,
    relative_posix,
    resolve_images,
    strip_suffix,
)
from deepauc.data.layouts import (
    HAM_METADATA,
    ISIC2018_GROUND_TRUTH,
    ISIC2018_LESION_GROUPINGS,
    ISIC2019_GROUND_TRUTH,
    ISIC2019_METADATA,
    MALIGNANT_CSV,
    RESIZED_COLUMNS,
    detect_competition,
    resized_columns,
)
from deepauc.data.tables import (
    SEXES,
    SITE_COLUMN,
    SITES_2020,
    TRAIN_COLUMNS,
    check_age,
    check_unique_names,
    describe_rows,
    map_vocabulary,
    numeric_column,
    read_csv_table,
    read_train_csv,
    validate_train_frame,
)

ISIC2019_DIAGNOSIS = {
    "MEL": "melanoma",
    "NV": "nevus",
    "BCC": "basal cell carcinoma",
    "AK": "actinic keratosis",
    "BKL": "benign keratosis",
    "DF": "dermatofibroma",
    "VASC": "vascular lesion",
    "SCC": "squamous cell carcinoma",
    "UNK": "unknown",
}
ISIC2018_DIAGNOSIS = {
    "MEL": "melanoma",
    "NV": "nevus",
    "BCC": "basal cell carcinoma",
    "AKIEC": "actinic keratosis",
    "BKL": "benign keratosis",
    "DF": "dermatofibroma",
    "VASC": "vascular lesion",
}
HAM_DIAGNOSIS = {
    "mel": "melanoma",
    "nv": "nevus",
    "bcc": "basal cell carcinoma",
    "akiec": "actinic keratosis",
    "bkl": "benign keratosis",
    "df": "dermatofibroma",
    "vasc": "vascular lesion",
}
# 2019 sites (and the 2020 ones, for the extra malignant set) -> 2020 vocabulary.
SITE_TO_2020: dict[str, str | None] = {
    **{site: site for site in SITES_2020},
    "anterior torso": "torso",
    "posterior torso": "torso",
    "lateral torso": "torso",
}
# HAM10000 localization -> 2020 vocabulary; "unknown" is missing.
HAM_SITE_TO_2020: dict[str, str | None] = {
    "abdomen": "torso",
    "back": "torso",
    "chest": "torso",
    "trunk": "torso",
    "face": "head/neck",
    "ear": "head/neck",
    "neck": "head/neck",
    "scalp": "head/neck",
    "upper extremity": "upper extremity",
    "hand": "upper extremity",
    "lower extremity": "lower extremity",
    "foot": "lower extremity",
    "acral": "palms/soles",
    "genital": "oral/genital",
    "unknown": None,
}
_SEX: dict[str, str | None] = {**{s: s for s in SEXES}, "unknown": None}


def finish_rows(
    df: pd.DataFrame,
    source: str,
    files: list[Path],
    root: Path,
    name: str,
    duplicate_mark: pd.Series | None = None,
) -> pd.DataFrame:
    """Add source, image_path and the private ``_file`` and ``_duplicate_mark`` columns
    (a row the publisher marked as a duplicate); validate as a train table."""
    df = df.reset_index(drop=True)
    # The competition's target is melanoma only: BCC and SCC, malignant lesions but not
    # melanoma, are target 0 and therefore "benign" here.
    df["benign_malignant"] = np.where(df["target"] == 1, "malignant", "benign")
    df = validate_train_frame(df[TRAIN_COLUMNS], name)
    df["source"] = source
    df["image_path"] = [relative_posix(f, root) for f in files]
    df["_file"] = [str(f) for f in files]
    mark = False if duplicate_mark is None else duplicate_mark.to_numpy(dtype=bool)
    df["_duplicate_mark"] = mark
    return df


def sex_column(df: pd.DataFrame, column: str, name: str) -> pd.Series:
    """Sex in the 2020 vocabulary; "unknown" and empty cells are missing."""
    values = df[column].str.strip().str.lower()
    return map_vocabulary(df.assign(**{column: values}), column, _SEX, name)


def load_competition(train_csv: str | os.PathLike) -> pd.DataFrame:
    """The competition train table with source and image_path, in either 2020 layout.

    Kaggle layout: image_path ``jpeg/train/<name>.jpg``; resized set (jpeg-melanoma-NxN):
    ``train/<name>.jpg``. When tfrecord, width and height are present they are integers
    and the ``_duplicate_mark`` column is True on the ``tfrecord == -1`` rows.
    """
    train_csv = Path(train_csv)
    df = read_train_csv(train_csv)
    if "source" in df.columns and (df["source"].fillna("competition") != "competition").any():
        raise ValueError(
            f"{train_csv}: has non-competition 'source' rows; pass the original train.csv"
        )
    layout = detect_competition(train_csv)
    extras = [c for c in df.columns if c not in TRAIN_COLUMNS and c not in ("source", "image_path")]
    out = df[TRAIN_COLUMNS + extras].copy()
    out["source"] = "competition"
    out["_duplicate_mark"] = False
    # A Kaggle-layout train.csv may carry the resized set's columns too: read them alike.
    if set(RESIZED_COLUMNS) <= set(df.columns):
        columns, out["_duplicate_mark"] = resized_columns(df, str(train_csv))
        for column in RESIZED_COLUMNS:
            out[column] = columns[column]
    assert layout.train_images is not None
    folder = relative_posix(layout.train_images, train_csv.parent)
    out["image_path"] = folder + "/" + out["image_name"] + ".jpg"
    out["_file"] = [str(train_csv.parent / p) for p in out["image_path"]]
    return out


def _check_onehot(gt: pd.DataFrame, classes: list[str], name: str) -> np.ndarray:
    """The one-hot matrix of ``gt``; a cell not 0/1 or a row not summing to 1 raises."""
    values = np.stack([numeric_column(gt, c, name).to_numpy() for c in classes], axis=1)
    cell_bad = ~np.isin(values, [0.0, 1.0]).all(axis=1)
    if cell_bad.any():
        raise ValueError(f"{name}: label cells must be 0 or 1 at {describe_rows(gt, cell_bad)}")
    sums = values.sum(axis=1)
    bad = sums != 1
    if bad.any():
        shown = gt.assign(labels_set=sums.astype(int))
        raise ValueError(
            f"{name}: a one-hot row must have exactly one label set; "
            f"bad at {describe_rows(shown, bad, 'labels_set')}"
        )
    return values


def load_isic2019(folder: str | os.PathLike, root: Path) -> pd.DataFrame:
    """ISIC 2019 training set (one-hot ground truth + metadata) as train-format rows.

    The one-hot class becomes ``diagnosis``; ``target`` = MEL. The 2019 data has no
    patient ids, so ``patient_id`` is the ``lesion_id`` when present (images of one
    lesion stay together in CV) and ``ISIC2019_<image>`` otherwise. Sites are mapped
    to the 2020 vocabulary (anterior/posterior/lateral torso -> torso).
    """
    folder = Path(folder)
    gt_path = find_file(folder, ISIC2019_GROUND_TRUTH)
    classes = list(ISIC2019_DIAGNOSIS)
    gt = read_csv_table(gt_path, ["image", *classes])
    check_unique_names(gt, str(gt_path), "image")
    onehot = _check_onehot(gt, classes, str(gt_path))
    labels = np.array(classes)[onehot.argmax(axis=1)]

    meta_path = find_file(folder, ISIC2019_METADATA)
    meta = read_csv_table(
        meta_path,
        ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"],
        text_columns=["anatom_site_general", "lesion_id"],
    )
    check_unique_names(meta, str(meta_path), "image")
    meta = pd.DataFrame(
        {
            "image": meta["image"],
            "age_approx": check_age(meta, "age_approx", str(meta_path)),
            "site": map_vocabulary(meta, "anatom_site_general", SITE_TO_2020, str(meta_path)),
            "lesion_id": meta["lesion_id"],
            "sex": sex_column(meta, "sex", str(meta_path)),
        }
    )
    merged = gt[["image"]].merge(meta, on="image", how="left", validate="one_to_one")
    names = merged["image"].map(strip_suffix)
    lesion = merged["lesion_id"]
    has_lesion = lesion.notna() & (lesion.astype(str).str.strip() != "")
    df = pd.DataFrame(
        {
            "image_name": names,
            "patient_id": np.where(has_lesion, lesion, "ISIC2019_" + names),
            "sex": merged["sex"],
            "age_approx": merged["age_approx"],
            SITE_COLUMN: merged["site"],
            "diagnosis": [ISIC2019_DIAGNOSIS[c] for c in labels],
            "target": (labels == "MEL").astype(int),
        }
    )
    files = resolve_images(merged["image"], index_images(folder), str(gt_path))
    return finish_rows(df, "isic2019", files, root, str(gt_path))


def load_isic2018(folder: str | os.PathLike, root: Path) -> pd.DataFrame:
    """ISIC 2018 in the Kaggle/Dataverse HAM10000 layout as train-format rows.

    ``dx`` -> diagnosis, mel -> target 1, ``localization`` -> 2020 site,
    ``patient_id`` = ``lesion_id``.
    """
    folder = Path(folder)
    path = find_file(folder, HAM_METADATA)
    meta = read_csv_table(
        path,
        ["lesion_id", "image_id", "dx", "age", "sex", "localization"],
        text_columns=["lesion_id", "dx", "localization"],
    )
    check_unique_names(meta, str(path), "image_id")
    dx = meta["dx"].str.strip().str.lower()
    bad_dx = ~dx.isin(list(HAM_DIAGNOSIS)).to_numpy()
    if bad_dx.any():
        raise ValueError(
            f"{path}: unknown dx at {describe_rows(meta, bad_dx, 'dx')}; "
            f"allowed: {list(HAM_DIAGNOSIS)}"
        )
    loc = meta["localization"].str.strip().str.lower()
    df = pd.DataFrame(
        {
            "image_name": meta["image_id"],
            "patient_id": meta["lesion_id"],
            "sex": sex_column(meta, "sex", str(path)),
            "age_approx": check_age(meta, "age", str(path)),
            SITE_COLUMN: map_vocabulary(
                meta.assign(localization=loc), "localization", HAM_SITE_TO_2020, str(path)
            ),
            "diagnosis": dx.map(HAM_DIAGNOSIS),
            "target": (dx == "mel").astype(int),
        }
    )
    files = resolve_images(meta["image_id"], index_images(folder), str(path))
    return finish_rows(df, "isic2018", files, root, str(path))


def _lesion_groupings(folder: Path) -> pd.DataFrame | None:
    """image -> lesion_id of the ISIC 2018 Task 3 lesion groupings file, if present."""
    paths = sorted(folder.rglob(ISIC2018_LESION_GROUPINGS))
    if not paths:
        return None
    table = read_csv_table(
        paths[0], ["image", "lesion_id", "diagnosis_confirm_type"], text_columns=["lesion_id"]
    )
    check_unique_names(table, str(paths[0]), "image")
    return table[["image", "lesion_id"]]


def load_isic2018_task3(folder: str | os.PathLike, root: Path) -> pd.DataFrame:
    """ISIC 2018 in the ISIC challenge (Task 3) layout as train-format rows.

    The one-hot class (MEL, NV, BCC, AKIEC, BKL, DF, VASC) becomes ``diagnosis``;
    ``target`` = MEL. ``patient_id`` is the ``lesion_id`` of the lesion groupings file
    when it is present, else ``ISIC2018_<image>``. This layout has no age, sex or site:
    they are missing.
    """
    folder = Path(folder)
    gt_path = find_file(folder, ISIC2018_GROUND_TRUTH)
    classes = list(ISIC2018_DIAGNOSIS)
    gt = read_csv_table(gt_path, ["image", *classes])
    check_unique_names(gt, str(gt_path), "image")
    labels = np.array(classes)[_check_onehot(gt, classes, str(gt_path)).argmax(axis=1)]
    lesion = pd.Series(np.nan, index=gt.index, dtype=object)
    groupings = _lesion_groupings(folder)
    if groupings is not None:
        merged = gt[["image"]].merge(groupings, on="image", how="left", validate="one_to_one")
        lesion = merged["lesion_id"]
    has_lesion = lesion.notna() & (lesion.astype(str).str.strip() != "")
    df = pd.DataFrame(
        {
            "image_name": gt["image"],
            "patient_id": np.where(has_lesion, lesion, "ISIC2018_" + gt["image"]),
            "sex": np.nan,
            "age_approx": np.nan,
            SITE_COLUMN: np.nan,
            "diagnosis": [ISIC2018_DIAGNOSIS[c] for c in labels],
            "target": (labels == "MEL").astype(int),
        }
    )
    files = resolve_images(gt["image"], index_images(folder), str(gt_path))
    return finish_rows(df, "isic2018", files, root, str(gt_path))


def _concat_tables(paths: list[Path], required: list[str], id_column: str) -> pd.DataFrame:
    frames = []
    for p in paths:
        frame = read_csv_table(p, required)
        check_unique_names(frame, str(p), id_column)
        frames.append(frame.assign(_table=str(p)))
    return pd.concat(frames, ignore_index=True)


def _isic2017_metadata(path: Path) -> pd.DataFrame:
    """One ISIC 2017 metadata file with "unknown" age/sex read as missing, checked."""
    meta = read_csv_table(path, ["image_id", "age_approximate", "sex"])
    check_unique_names(meta, str(path), "image_id")
    unknown = meta["age_approximate"].astype(str).str.strip().str.lower() == "unknown"
    age = check_age(
        meta.assign(age_approximate=meta["age_approximate"].mask(unknown)),
        "age_approximate",
        str(path),
    )
    return pd.DataFrame(
        {
            "image_id": meta["image_id"],
            "age_approximate": age,
            "sex": sex_column(meta, "sex", str(path)),
        }
    )


def load_isic2017(folder: str | os.PathLike, root: Path) -> pd.DataFrame:
    """ISIC 2017 part 3 (all ``*GroundTruth*.csv`` found below ``folder``) as train rows.

    Ground truth columns melanoma, seborrheic_keratosis; optional ``*metadata*.csv``
    with age_approximate, sex; ``patient_id`` = ``ISIC2017_<image>``.
    """
    folder = Path(folder)
    gt_paths = sorted(
        p
        for p in folder.rglob("*GroundTruth*.csv")
        if {"image_id", "melanoma", "seborrheic_keratosis"} <= set(pd.read_csv(p, nrows=0).columns)
    )
    if not gt_paths:
        raise FileNotFoundError(
            f"{folder}: no ISIC 2017 ground truth (*GroundTruth*.csv with columns "
            "image_id, melanoma, seborrheic_keratosis) in this folder or below"
        )
    gt = _concat_tables(gt_paths, ["image_id", "melanoma", "seborrheic_keratosis"], "image_id")
    mel = np.zeros(len(gt))
    sk = np.zeros(len(gt))
    for table, rows in gt.groupby("_table", sort=False).groups.items():
        part = gt.loc[rows]
        values = _check_onehot_or_none(part, table)
        mel[rows], sk[rows] = values[:, 0], values[:, 1]
    meta_paths = sorted(
        p
        for p in folder.rglob("*metadata*.csv")
        if {"image_id", "age_approximate", "sex"} <= set(pd.read_csv(p, nrows=0).columns)
    )
    if meta_paths:
        meta = pd.concat([_isic2017_metadata(p) for p in meta_paths], ignore_index=True)
        meta = meta.drop_duplicates("image_id")
        gt = gt.merge(meta[["image_id", "age_approximate", "sex"]], on="image_id", how="left")
    else:
        gt["age_approximate"] = np.nan
        gt["sex"] = np.nan
    dup = gt["image_id"].duplicated().to_numpy()
    if dup.any():
        raise ValueError(
            f"{folder}: image_id in several ground-truth files: {describe_rows(gt, dup)}"
        )
    df = pd.DataFrame(
        {
            "image_name": gt["image_id"],
            "patient_id": "ISIC2017_" + gt["image_id"],
            "sex": gt["sex"],
            "age_approx": gt["age_approximate"],
            SITE_COLUMN: np.nan,
            "diagnosis": np.select(
                [mel == 1, sk == 1], ["melanoma", "seborrheic keratosis"], "nevus"
            ),
            "target": (mel == 1).astype(int),
        }
    )
    files = resolve_images(gt["image_id"], index_images(folder), str(folder))
    return finish_rows(df, "isic2017", files, root, ", ".join(map(str, gt_paths)))


def _check_onehot_or_none(gt: pd.DataFrame, name: str) -> np.ndarray:
    """(melanoma, seborrheic_keratosis) as 0/1; both set on one row raises ValueError."""
    gt = gt.reset_index(drop=True)
    values = np.stack(
        [numeric_column(gt, c, name).to_numpy() for c in ("melanoma", "seborrheic_keratosis")],
        axis=1,
    )
    bad = ~np.isin(values, [0.0, 1.0]).all(axis=1) | (values.sum(axis=1) > 1)
    if bad.any():
        raise ValueError(f"{name}: labels must be 0/1 and not both set at {describe_rows(gt, bad)}")
    return values


def load_malignant(folder: str | os.PathLike, root: Path) -> pd.DataFrame:
    """The extra malignant set: ``malignant.csv`` (train columns) + images below ``folder``.

    Missing patient ids become ``MALIGNANT_<image>``.
    """
    folder = Path(folder)
    path = folder / MALIGNANT_CSV
    if not path.is_file():
        csvs = sorted(folder.glob("*.csv"))
        if len(csvs) != 1:
            raise FileNotFoundError(f"{folder}: expected {MALIGNANT_CSV} (or exactly one *.csv)")
        path = csvs[0]
    df = read_csv_table(path, ["image_name", "target"])
    for col in TRAIN_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    check_unique_names(df, str(path))
    pid = df["patient_id"]
    no_pid = pid.isna() | (pid.astype(str).str.strip() == "")
    df["patient_id"] = np.where(no_pid, "MALIGNANT_" + df["image_name"], pid)
    df[SITE_COLUMN] = map_vocabulary(df, SITE_COLUMN, SITE_TO_2020, str(path))
    df["sex"] = sex_column(df, "sex", str(path))
    target = numeric_column(df, "target", str(path))
    df["diagnosis"] = df["diagnosis"].fillna(
        pd.Series(np.where(target == 1, "melanoma", "unknown"))
    )
    files = resolve_images(df["image_name"], index_images(folder), str(path))
    return finish_rows(df, "malignant", files, root, str(path))
