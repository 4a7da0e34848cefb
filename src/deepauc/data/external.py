"""``deepauc external``: one training table from the competition and external ISIC data.

The paper trains on the 33,126 competition images plus 12,859 ISIC 2017/2018/2019
images plus 580 extra malignant images from the ISIC archive. This stage reads each
source in its published format and writes one table with the competition train
columns plus:

* ``source``: competition | isic2019 | isic2018 | isic2017 | malignant;
* ``image_path``: the original image, as a POSIX path **relative to the data root,
  the directory that holds --train-csv** (competition rows: ``jpeg/train/<name>.jpg``;
  an external image elsewhere gets a ``../`` path). ``deepauc resize --image-root``
  must therefore be that directory.

Sources and their mapping:

* ISIC 2019 (``ISIC_2019_Training_GroundTruth.csv`` one-hot + ``..._Metadata.csv``):
  the one-hot class becomes ``diagnosis``; ``target`` = MEL. The 2019 data has no
  patient ids, so ``patient_id`` is the ``lesion_id`` when present (images of one
  lesion stay together in CV) and ``ISIC2019_<image>`` otherwise. Sites are mapped
  to the 2020 vocabulary (anterior/posterior/lateral torso -> torso).
* ISIC 2018 (HAM10000 ``HAM10000_metadata.csv``): ``dx`` -> diagnosis, mel -> target
  1, ``localization`` -> 2020 site, ``patient_id`` = ``lesion_id``.
* ISIC 2017 (``*Part3_GroundTruth.csv``: melanoma, seborrheic_keratosis; optional
  ``*metadata.csv``: age_approximate, sex): ``patient_id`` = ``ISIC2017_<image>``.
* extra malignant (``malignant.csv`` in competition train columns, images under the
  folder): missing patient ids become ``MALIGNANT_<image>``.

``benign_malignant`` is derived from ``target`` (BCC and SCC are malignant lesions
but not melanoma: they are ``target`` 0, ``benign_malignant`` "benign", as the
competition's target is melanoma only).

Deduplication, in priority order competition > isic2019 > isic2018 > isic2017 >
malignant (the earlier source keeps the image):

1. by name, after stripping the ``_downsampled`` suffix of some 2019 names (so the
   ISIC 2018/2017 images that ISIC 2019 re-published are counted once; the table's
   ``image_name`` is the stripped name, ``image_path`` the real file);
2. by content: byte-identical files (BLAKE2b of the bytes, only computed for files
   whose size equals another file's size). Only exact copies are caught;
   re-encoded or resized copies are not.

Competition rows are never dropped: byte-identical images inside the competition
set are only counted in the report.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from deepauc.data.tables import (
    SEXES,
    SITE_COLUMN,
    SITES_2020,
    TRAIN_COLUMNS,
    check_age,
    check_columns,
    check_unique_names,
    describe_rows,
    map_vocabulary,
    numeric_column,
    read_csv_table,
    read_train_csv,
    validate_train_frame,
)
from deepauc.io import write_csv, write_text
from deepauc.markdown import markdown_table

SOURCES = ["competition", "isic2019", "isic2018", "isic2017", "malignant"]
DOWNSAMPLED_SUFFIX = "_downsampled"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

ISIC2019_GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
ISIC2019_METADATA = "ISIC_2019_Training_Metadata.csv"
HAM_METADATA = "HAM10000_metadata.csv"
MALIGNANT_CSV = "malignant.csv"

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
_SHOW = 5


# ------------------------------------------------------------------ file helpers


def strip_suffix(name: str) -> str:
    """The image name without the ``_downsampled`` suffix of some ISIC 2019 files."""
    return name[: -len(DOWNSAMPLED_SUFFIX)] if name.endswith(DOWNSAMPLED_SUFFIX) else name


def index_images(folder: Path) -> dict[str, Path]:
    """Map file stem -> path for every image under ``folder`` (recursive, sorted walk).

    When two files share a stem, the first in sorted path order wins.
    """
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for fname in sorted(filenames):
            stem, ext = os.path.splitext(fname)
            if ext.lower() in IMAGE_EXTENSIONS:
                found.setdefault(stem, Path(dirpath) / fname)
    return found


def find_file(folder: Path, name: str) -> Path:
    """``folder/name``, else the first file of that name below ``folder``."""
    direct = folder / name
    if direct.is_file():
        return direct
    matches = sorted(folder.rglob(name))
    if not matches:
        raise FileNotFoundError(f"{folder}: no {name} in this folder or below")
    return matches[0]


def resolve_images(names: Iterable[str], index: dict[str, Path], where: str) -> list[Path]:
    """The image file of each name; raise FileNotFoundError listing the missing ones."""
    names = list(names)
    missing = [n for n in names if n not in index]
    if missing:
        more = f" and {len(missing) - _SHOW} more" if len(missing) > _SHOW else ""
        raise FileNotFoundError(
            f"{where}: {len(missing)} image file(s) not found: {', '.join(missing[:_SHOW])}{more}"
        )
    return [index[n] for n in names]


def relative_posix(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as a POSIX string (may start with ``../``)."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """BLAKE2b-128 hex digest of the file's bytes."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _finish(
    df: pd.DataFrame, source: str, files: list[Path], root: Path, name: str
) -> pd.DataFrame:
    """Add source, image_path and the private ``_file`` column; validate as a train table."""
    df = df.reset_index(drop=True)
    df["benign_malignant"] = np.where(df["target"] == 1, "malignant", "benign")
    df = validate_train_frame(df[TRAIN_COLUMNS], name)
    df["source"] = source
    df["image_path"] = [relative_posix(f, root) for f in files]
    df["_file"] = [str(f) for f in files]
    return df


def _sex(df: pd.DataFrame, column: str, name: str) -> pd.Series:
    values = df[column].str.strip().str.lower()
    return map_vocabulary(df.assign(**{column: values}), column, _SEX, name)


# ----------------------------------------------------------------------- sources


def load_competition(train_csv: str | os.PathLike) -> pd.DataFrame:
    """The competition train table with source and image_path (``jpeg/train/<name>.jpg``)."""
    train_csv = Path(train_csv)
    df = read_train_csv(train_csv)
    if "source" in df.columns and (df["source"].fillna("competition") != "competition").any():
        raise ValueError(
            f"{train_csv}: has non-competition 'source' rows; pass the original train.csv"
        )
    extras = [c for c in df.columns if c not in TRAIN_COLUMNS and c not in ("source", "image_path")]
    out = df[TRAIN_COLUMNS + extras].copy()
    out["source"] = "competition"
    out["image_path"] = "jpeg/train/" + out["image_name"] + ".jpg"
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
    """ISIC 2019 training set as train-format rows (see the module docstring)."""
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
            "sex": _sex(meta, "sex", str(meta_path)),
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
    return _finish(df, "isic2019", files, root, str(gt_path))


def load_isic2018(folder: str | os.PathLike, root: Path) -> pd.DataFrame:
    """ISIC 2018 task 3 / HAM10000 as train-format rows."""
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
            "sex": _sex(meta, "sex", str(path)),
            "age_approx": check_age(meta, "age", str(path)),
            SITE_COLUMN: map_vocabulary(
                meta.assign(localization=loc), "localization", HAM_SITE_TO_2020, str(path)
            ),
            "diagnosis": dx.map(HAM_DIAGNOSIS),
            "target": (dx == "mel").astype(int),
        }
    )
    files = resolve_images(meta["image_id"], index_images(folder), str(path))
    return _finish(df, "isic2018", files, root, str(path))


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
        {"image_id": meta["image_id"], "age_approximate": age, "sex": _sex(meta, "sex", str(path))}
    )


def load_isic2017(folder: str | os.PathLike, root: Path) -> pd.DataFrame:
    """ISIC 2017 part 3 (all ``*GroundTruth*.csv`` found below ``folder``) as train rows."""
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
    return _finish(df, "isic2017", files, root, ", ".join(map(str, gt_paths)))


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
    """The extra malignant set: ``malignant.csv`` (train columns) + images below ``folder``."""
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
    df["sex"] = _sex(df, "sex", str(path))
    target = numeric_column(df, "target", str(path))
    df["diagnosis"] = df["diagnosis"].fillna(
        pd.Series(np.where(target == 1, "melanoma", "unknown"))
    )
    files = resolve_images(df["image_name"], index_images(folder), str(path))
    return _finish(df, "malignant", files, root, str(path))


# ------------------------------------------------------------------------- dedup


def _content_digests(files: list[str], workers: int) -> list[str | None]:
    """Digest of each file whose size is shared with another file; None otherwise."""
    sizes = [os.path.getsize(f) for f in files]
    counts = pd.Series(sizes).value_counts()
    todo = [i for i, s in enumerate(sizes) if counts[s] > 1]
    digests: list[str | None] = [None] * len(files)
    # hashlib and file reads release the GIL, so threads overlap I/O and hashing.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, d in zip(todo, pool.map(file_digest, [files[i] for i in todo])):
            digests[i] = f"{sizes[i]}:{d}"
    return digests


def deduplicate(
    df: pd.DataFrame, content: bool = True, workers: int = 4
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Drop repeated images from ``df`` (rows in priority order, ``_file`` column set).

    Returns (kept rows, dropped rows with ``reason``, ``kept_image_name``,
    ``kept_source``, number of byte-identical pairs inside the competition set).
    """
    df = df.reset_index(drop=True)
    dropped = []
    first = df.groupby("image_name", sort=False).head(1)
    keeper = pd.Series(first.index, index=first["image_name"])
    dup_name = df["image_name"].duplicated(keep="first")
    if dup_name.any():
        rows = df[dup_name].copy()
        kept = keeper[rows["image_name"]].to_numpy()
        rows["reason"] = "same image name"
        rows["kept_image_name"] = df.loc[kept, "image_name"].to_numpy()
        rows["kept_source"] = df.loc[kept, "source"].to_numpy()
        dropped.append(rows)
    df = df[~dup_name].reset_index(drop=True)

    internal = 0
    if content:
        missing = [f for f in df["_file"] if not os.path.isfile(f)]
        if missing:
            more = f" and {len(missing) - _SHOW} more" if len(missing) > _SHOW else ""
            raise FileNotFoundError(
                f"{len(missing)} image file(s) not found for the content check: "
                f"{', '.join(missing[:_SHOW])}{more} (or pass --no-content-dedup)"
            )
        digest = pd.Series(_content_digests(list(df["_file"]), workers), index=df.index)
        hashed = df[digest.notna()].assign(_digest=digest[digest.notna()])
        firsts = hashed.groupby("_digest", sort=False).head(1)
        keep_of = pd.Series(firsts.index, index=firsts["_digest"])
        repeat = hashed["_digest"].duplicated(keep="first")
        kept_idx = keep_of[hashed.loc[repeat, "_digest"]].to_numpy()
        is_comp = (hashed.loc[repeat, "source"] == "competition").to_numpy()
        internal = int(is_comp.sum())
        drop_idx = hashed.index[repeat][~is_comp]
        if len(drop_idx):
            rows = df.loc[drop_idx].copy()
            rows["reason"] = "same image content"
            rows["kept_image_name"] = df.loc[kept_idx[~is_comp], "image_name"].to_numpy()
            rows["kept_source"] = df.loc[kept_idx[~is_comp], "source"].to_numpy()
            dropped.append(rows)
            df = df.drop(index=drop_idx).reset_index(drop=True)
    cols = [
        "image_name",
        "source",
        "target",
        "image_path",
        "reason",
        "kept_image_name",
        "kept_source",
    ]
    dropped_df = (
        pd.concat(dropped, ignore_index=True)[cols] if dropped else pd.DataFrame(columns=cols)
    )
    return df, dropped_df, internal


# ------------------------------------------------------------------------- merge


def build_training_table(
    train_csv: str | os.PathLike,
    isic2019_dir: str | os.PathLike | None = None,
    isic2018_dir: str | os.PathLike | None = None,
    isic2017_dir: str | os.PathLike | None = None,
    malignant_dir: str | os.PathLike | None = None,
    content_dedup: bool = True,
    workers: int = 4,
) -> tuple[pd.DataFrame, dict]:
    """Merge the competition table with the given external sets and deduplicate.

    Returns (table, report) where table has the train columns (plus any extra
    competition columns), ``source`` and ``image_path``; report holds ``counts``
    (per source before/after), ``dropped`` (one row per dropped image) and
    ``competition_content_duplicates``.
    """
    train_csv = Path(train_csv)
    root = train_csv.parent
    loaders = [
        (isic2019_dir, load_isic2019),
        (isic2018_dir, load_isic2018),
        (isic2017_dir, load_isic2017),
        (malignant_dir, load_malignant),
    ]
    frames = [load_competition(train_csv)]
    for folder, loader in loaders:
        if folder is not None:
            if not Path(folder).is_dir():
                raise FileNotFoundError(f"{folder}: no such directory")
            frames.append(loader(folder, root))
    merged = pd.concat(frames, ignore_index=True)
    before = merged["source"].value_counts()
    kept, dropped, internal = deduplicate(merged, content=content_dedup, workers=workers)
    after = kept["source"].value_counts()
    mal = kept.groupby("source")["target"].sum()
    present = [s for s in SOURCES if s in before.index]
    counts = pd.DataFrame(
        {
            "source": present,
            "images_in": [int(before.get(s, 0)) for s in present],
            "dropped_same_name": [
                int(((dropped["source"] == s) & (dropped["reason"] == "same image name")).sum())
                for s in present
            ],
            "dropped_same_content": [
                int(((dropped["source"] == s) & (dropped["reason"] == "same image content")).sum())
                for s in present
            ],
            "images_out": [int(after.get(s, 0)) for s in present],
            "malignant_out": [int(mal.get(s, 0)) for s in present],
        }
    )
    total = counts.drop(columns="source").sum()
    counts = pd.concat(
        [counts, pd.DataFrame([{"source": "total", **total.to_dict()}])], ignore_index=True
    )
    counts["malignant_ratio"] = counts["malignant_out"] / counts["images_out"].clip(lower=1)
    table = kept.drop(columns="_file")
    cols = TRAIN_COLUMNS + [c for c in table.columns if c not in TRAIN_COLUMNS]
    report = {
        "counts": counts,
        "dropped": dropped,
        "competition_content_duplicates": internal,
        "content_dedup": content_dedup,
    }
    return table[cols], report


def format_report(report: dict, examples: int = 10) -> str:
    """The merge report as markdown: counts per source and examples of dropped images."""
    counts = report["counts"]
    total = counts[counts["source"] == "total"].iloc[0]
    lines = [
        "# External data merge",
        "",
        markdown_table(counts),
        "",
        f"Result: {int(total['images_out'])} images, {int(total['malignant_out'])} malignant "
        f"({total['malignant_ratio']:.2%}).",
    ]
    if not report["content_dedup"]:
        lines.append("Content deduplication was skipped (--no-content-dedup).")
    if report["competition_content_duplicates"]:
        lines.append(
            f"{report['competition_content_duplicates']} competition image(s) are byte-identical "
            "to another competition image; kept (competition rows are never dropped)."
        )
    dropped = report["dropped"]
    if len(dropped):
        lines += [
            "",
            f"## Dropped duplicates (first {min(examples, len(dropped))} of {len(dropped)})",
            "",
            markdown_table(dropped.head(examples)),
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--train-csv",
        required=True,
        help="competition train.csv; its folder is the data root for image_path",
    )
    parser.add_argument(
        "--isic2019-dir",
        help="folder with ISIC_2019_Training_GroundTruth.csv, _Metadata.csv, images",
    )
    parser.add_argument("--isic2018-dir", help="folder with HAM10000_metadata.csv and images")
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
