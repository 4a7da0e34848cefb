"""Demo external sets in their published layouts: ISIC 2019, 2018 (HAM10000), 2017 and
the extra malignant set, overlapping each other and the competition on purpose."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from deepauc.data.demo.competition import Competition
from deepauc.data.demo.images import draw_looks, patient_style
from deepauc.data.demo.patients import (
    SEXES_ARR,
    SITE_P_MALIGNANT,
    SITES_ARR,
    fresh_names,
    unique_ids,
    with_missing,
)
from deepauc.data.demo.sizes import DemoSizes
from deepauc.data.demo.writer import EXTERNAL, ImageWriter
from deepauc.data.tables import TRAIN_COLUMNS, one_hot
from deepauc.io import write_csv

ISIC2019_CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
_ISIC2019_OTHER_P = np.array([0.0, 0.58, 0.16, 0.05, 0.13, 0.03, 0.03, 0.015, 0.005])
_SITES_2019 = [
    "anterior torso",
    "posterior torso",
    "lateral torso",
    "upper extremity",
    "lower extremity",
    "head/neck",
    "palms/soles",
    "oral/genital",
]
_SITES_2019_P = [0.18, 0.2, 0.03, 0.16, 0.2, 0.17, 0.04, 0.02]
_HAM_DX = {
    "MEL": "mel",
    "NV": "nv",
    "BCC": "bcc",
    "AK": "akiec",
    "BKL": "bkl",
    "DF": "df",
    "VASC": "vasc",
}
_HAM_LOCALIZATION = {
    "anterior torso": ["chest", "abdomen"],
    "posterior torso": ["back"],
    "lateral torso": ["trunk"],
    "upper extremity": ["upper extremity", "hand"],
    "lower extremity": ["lower extremity", "foot"],
    "head/neck": ["face", "scalp", "neck", "ear"],
    "palms/soles": ["acral"],
    "oral/genital": ["genital"],
}
# ISIC ids: the HAM10000 range, and the older archive below it.
_HAM_IDS = (24306, 34321)
_ARCHIVE_IDS = (0, 24306)


def isic2019_table(rng: np.random.Generator, n: int, mel_ratio: float) -> pd.DataFrame:
    """ISIC 2019-style rows: image name, class, metadata, lesion ids (some missing).

    Ids: the first quarter is in the HAM10000 range (ISIC_0024306..), shared with
    the 2018 set; the rest are spread over the remaining 2019 range.
    """
    n_ham = n // 4
    ham_ids = unique_ids(rng, n_ham, *_HAM_IDS)
    other_ids = unique_ids(rng, n - n_ham, *_ARCHIVE_IDS)
    ids = np.concatenate([ham_ids, other_ids])
    # Lesions: an image starts a new lesion 70% of the time, else it is another
    # image of the previous lesion (same label, site, sex and age).
    lesion_no = np.cumsum(rng.uniform(size=n) > 0.3)
    first = np.searchsorted(lesion_no, lesion_no)  # first image of each lesion
    is_mel = (rng.uniform(size=n) < mel_ratio)[first]
    other = rng.choice(ISIC2019_CLASSES, size=n, p=_ISIC2019_OTHER_P)
    label = np.where(is_mel, "MEL", other[first])
    prefix = np.where(first < n_ham, "HAM", "BCN")
    lesion = np.array([f"{p}_{k:07d}" for p, k in zip(prefix, lesion_no)], dtype=object)
    # The archive (non-HAM) part often has no lesion id: drop whole lesions' ids.
    lesion[(first >= n_ham) & (rng.uniform(size=n) < 0.35)[first]] = np.nan
    age = np.clip(np.round(rng.normal(55, 17, n) / 5) * 5 + 5 * is_mel, 0, 85)[first]
    site = rng.choice(_SITES_2019, size=n, p=_SITES_2019_P).astype(object)[first]
    sex = rng.choice(SEXES_ARR, size=n)[first]
    return pd.DataFrame(
        {
            "image": [f"ISIC_{i:07d}" for i in ids],
            "label": label,
            "age_approx": with_missing(rng, age.astype(float), 0.03),
            "anatom_site_general": with_missing(rng, site, 0.05),
            "lesion_id": lesion,
            "sex": with_missing(rng, sex, 0.03),
            "ham": np.arange(n) < n_ham,
        }
    )


@dataclasses.dataclass
class Isic2019:
    """The ISIC 2019 rows, image bytes by name, and the names that copy competition images."""

    rows: pd.DataFrame
    image_bytes: dict[str, bytes]
    copy_names: set[str]


def _wide(sizes: DemoSizes) -> tuple[int, int]:
    """(height, width) of ISIC 2019/2018/2017 images: 4:3 at the competition height."""
    return sizes.image_size, int(round(sizes.image_size * 4 / 3))


def write_isic2019(
    rng: np.random.Generator, seed: int, sizes: DemoSizes, writer: ImageWriter, comp: Competition
) -> Isic2019:
    """ISIC 2019 tables and images, a few of them byte copies of competition images."""
    folder = EXTERNAL / "isic2019"
    isic = isic2019_table(rng, sizes.n_isic2019, sizes.isic2019_mel_ratio)
    looks = draw_looks(rng, (isic["label"] == "MEL").to_numpy().astype(int))
    # `_downsampled`, as on some real 2019 names (some of them are also in 2018)
    suffix = rng.uniform(size=len(isic)) < 0.12
    isic["file_image"] = np.where(suffix, isic["image"] + "_downsampled", isic["image"])
    jobs = [(i, looks[i], patient_style(rng, *_wide(sizes), 0.45)) for i in range(len(isic))]
    isic_bytes = dict(zip(isic["image"], writer.render_many(3, jobs)))
    # Byte-identical copies of competition train images under new 2019 names, same label.
    train = comp.train
    n_copy = min(4, len(train), len(isic) // 10)
    copies = list(isic.index[len(isic) - n_copy :])
    sources = train.sample(n=n_copy, random_state=seed, weights=1 + 20 * train["target"])
    for k, src in zip(copies, sources.itertuples(index=False)):
        isic.loc[k, "label"] = "MEL" if src.target == 1 else "NV"
        isic_bytes[isic.loc[k, "image"]] = comp.train_bytes[src.image_name]
    for image, file_image in zip(isic["image"], isic["file_image"]):
        writer.write(f"{folder}/ISIC_2019_Training_Input/{file_image}.jpg", isic_bytes[image])
    onehot = pd.DataFrame({"image": isic["file_image"]}).join(
        one_hot(isic["label"], ISIC2019_CLASSES)
    )
    meta = isic[["file_image", "age_approx", "anatom_site_general", "lesion_id", "sex"]]
    write_csv(onehot, writer.root / folder / "ISIC_2019_Training_GroundTruth.csv")
    write_csv(
        meta.rename(columns={"file_image": "image"}),
        writer.root / folder / "ISIC_2019_Training_Metadata.csv",
    )
    return Isic2019(isic, isic_bytes, set(isic.loc[copies, "image"]))


def _reused_and_new(
    rng: np.random.Generator,
    isic: Isic2019,
    n: int,
    *,
    ham: bool,
    labels: list[str],
    share: float,
    random_state: int,
) -> tuple[pd.DataFrame, list[str]]:
    """The 2019 rows an older set shares, and fresh names for the rest of its ``n`` images.

    About ``share`` of the images are 2019 images of the HAM range (``ham``) or of the
    archive range, with one of ``labels``, that are not copies of competition images;
    the others get unused names in the same id range.
    """
    rows = isic.rows
    pool = rows[
        (rows["ham"] == ham) & rows["label"].isin(labels) & ~rows["image"].isin(isic.copy_names)
    ]
    n_shared = min(len(pool), int(round(share * n)))
    shared = pool.sample(n=n_shared, random_state=random_state)
    id_range = _HAM_IDS if ham else _ARCHIVE_IDS
    return shared, fresh_names(rng, n - n_shared, *id_range, set(rows["image"]))


def _write_new_or_shared(
    writer: ImageWriter,
    stream: int,
    folder: str,
    names: list[str],
    looks: np.ndarray,
    rng: np.random.Generator,
    sizes: DemoSizes,
    isic_bytes: dict[str, bytes],
) -> None:
    """Write one image per name: the 2019 bytes when the name is a 2019 image, else new."""
    jobs = [
        (i, looks[i], patient_style(rng, *_wide(sizes), 0.3))
        for i, name in enumerate(names)
        if name not in isic_bytes
    ]
    fresh = iter(writer.render_many(stream, jobs))
    for name in names:
        writer.write(
            f"{folder}/{name}.jpg", isic_bytes[name] if name in isic_bytes else next(fresh)
        )


def _ham_rows(rng: np.random.Generator, shared: pd.DataFrame, new_names: list[str]) -> pd.DataFrame:
    """HAM10000 rows: the shared 2019 rows as they are, then new drawn ones."""
    n_new = len(new_names)
    new_label = rng.choice(list(_HAM_DX), size=n_new, p=[0.2, 0.6, 0.06, 0.04, 0.08, 0.01, 0.01])
    return pd.DataFrame(
        {
            "lesion_id": [
                *shared["lesion_id"],
                *(f"HAM_{9_000_000 + k:07d}" for k in range(n_new)),
            ],
            "image_id": [*shared["image"], *new_names],
            "label": [*shared["label"], *new_label],
            "age": [
                *shared["age_approx"],
                *np.clip(np.round(rng.normal(52, 16, n_new) / 5) * 5, 0, 85),
            ],
            "sex": [*shared["sex"], *rng.choice(SEXES_ARR, size=n_new)],
            "site": [
                *shared["anatom_site_general"],
                *rng.choice(_SITES_2019, size=n_new, p=_SITES_2019_P),
            ],
        }
    )


def write_isic2018(
    rng: np.random.Generator, seed: int, sizes: DemoSizes, writer: ImageWriter, isic: Isic2019
) -> None:
    """HAM10000-style set: ~90% the HAM-range 2019 images (same names), the rest new."""
    folder = EXTERNAL / "isic2018"
    shared, new_names = _reused_and_new(
        rng, isic, sizes.n_isic2018, ham=True, labels=list(_HAM_DX), share=0.9, random_state=seed
    )
    ham = _ham_rows(rng, shared, new_names)
    looks = draw_looks(rng, (ham["label"] == "MEL").to_numpy().astype(int))
    _write_new_or_shared(
        writer, 4, f"{folder}/images", list(ham["image_id"]), looks, rng, sizes, isic.image_bytes
    )
    meta = pd.DataFrame(
        {
            "lesion_id": ham["lesion_id"],
            "image_id": ham["image_id"],
            "dx": ham["label"].map(_HAM_DX),
            "dx_type": np.where(
                ham["label"] == "MEL",
                "histo",
                rng.choice(["histo", "follow_up", "consensus"], size=len(ham)),
            ),
            "age": ham["age"].astype(float),
            "sex": ham["sex"].fillna("unknown"),
            "localization": [
                "unknown"
                if not isinstance(s, str)
                else _HAM_LOCALIZATION[s][int(rng.integers(len(_HAM_LOCALIZATION[s])))]
                for s in ham["site"]
            ],
        }
    )
    write_csv(meta, writer.root / folder / "HAM10000_metadata.csv")


def write_isic2017(
    rng: np.random.Generator, seed: int, sizes: DemoSizes, writer: ImageWriter, isic: Isic2019
) -> None:
    """ISIC 2017 part 3 style: ~80% low-id 2019 images (MEL/NV/BKL), the rest new."""
    folder = EXTERNAL / "isic2017"
    kinds = ["MEL", "NV", "BKL"]
    shared, new_names = _reused_and_new(
        rng, isic, sizes.n_isic2017, ham=False, labels=kinds, share=0.8, random_state=seed + 1
    )
    names = [*shared["image"], *new_names]
    labels = np.array(
        [*shared["label"], *rng.choice(kinds, size=len(new_names), p=[0.2, 0.65, 0.15])]
    )
    looks = draw_looks(rng, (labels == "MEL").astype(int))
    data_dir = f"{folder}/ISIC-2017_Training_Data"
    _write_new_or_shared(writer, 5, data_dir, names, looks, rng, sizes, isic.image_bytes)
    gt = pd.DataFrame(
        {
            "image_id": names,
            "melanoma": (labels == "MEL").astype(float),
            "seborrheic_keratosis": (labels == "BKL").astype(float),
        }
    )
    ages = np.clip(np.round(rng.normal(50, 16, len(names)) / 5) * 5, 5, 85)
    unknown_age = rng.uniform(size=len(names)) < 0.05
    unknown_sex = rng.uniform(size=len(names)) < 0.05
    meta = pd.DataFrame(
        {
            "image_id": names,
            "age_approximate": np.where(unknown_age, "unknown", ages.astype(int).astype(str)),
            "sex": np.where(unknown_sex, "unknown", rng.choice(SEXES_ARR, size=len(names))),
        }
    )
    write_csv(gt, writer.root / folder / "ISIC-2017_Training_Part3_GroundTruth.csv")
    write_csv(meta, writer.root / data_dir / "ISIC-2017_Training_Data_metadata.csv")


def _malignant_rows(rng: np.random.Generator, comp: Competition, m: int) -> pd.DataFrame:
    """``m`` extra malignant rows in the competition columns, on spare names and patients."""
    return pd.DataFrame(
        {
            "image_name": comp.spare_names[:m],
            "patient_id": comp.spare_patients[:m],
            "sex": with_missing(rng, rng.choice(SEXES_ARR, size=m, p=[0.6, 0.4]), 0.03),
            "age_approx": with_missing(
                rng, np.clip(np.round(rng.normal(60, 14, m) / 5) * 5, 15, 90), 0.03
            ).astype(float),
            "anatom_site_general_challenge": with_missing(
                rng, rng.choice(SITES_ARR, size=m, p=SITE_P_MALIGNANT), 0.04
            ),
            "diagnosis": "melanoma",
            "benign_malignant": "malignant",
            "target": 1,
        }
    )


def write_malignant(
    rng: np.random.Generator,
    sizes: DemoSizes,
    writer: ImageWriter,
    comp: Competition,
    isic: Isic2019,
) -> None:
    """Extra malignant set (ISIC archive style, competition columns, target 1).

    Deliberate overlaps: row 0 is a byte copy of a competition melanoma under a new
    name, row 1 is a competition melanoma under its own name, row 2 is a byte copy
    of a 2019 melanoma.
    """
    folder = EXTERNAL / "malignant"
    m = sizes.n_malignant
    mal = _malignant_rows(rng, comp, m)
    looks = draw_looks(rng, np.ones(m, dtype=int))
    side = sizes.image_size
    data = writer.render_many(
        6, [(i, looks[i], patient_style(rng, side, side, 0.1)) for i in range(m)]
    )
    train_mal = comp.train[comp.train["target"] == 1]
    rows = isic.rows
    mel2019 = rows.loc[(rows["label"] == "MEL") & ~rows["image"].isin(isic.copy_names), "image"]
    if m >= 3 and len(train_mal) >= 2 and len(mel2019):
        a, b = train_mal.iloc[0], train_mal.iloc[1]
        data[0] = comp.train_bytes[a["image_name"]]
        data[1] = comp.train_bytes[b["image_name"]]
        for col in TRAIN_COLUMNS:
            mal.loc[1, col] = b[col]
        data[2] = isic.image_bytes[mel2019.iloc[0]]
    for name, blob in zip(mal["image_name"], data):
        writer.write(f"{folder}/jpeg/{name}.jpg", blob)
    write_csv(mal[TRAIN_COLUMNS], writer.root / folder / "malignant.csv")
