"""Diagnosis strings of the 2020 table and the external sets mapped to 9 or 4 classes,
melanoma first: the auxiliary multi-class target of the training stage (docs/pipeline.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from deepauc.data.tables import describe_rows

# The ISIC 2019 eight and unknown, melanoma first (its index is MELANOMA in both sets).
CLASSES_9 = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
# melanoma, nevus, the benign keratosis family, everything else
CLASSES_4 = ("MEL", "NV", "BKL", "OTHER")
CLASS_SETS = {9: CLASSES_9, 4: CLASSES_4}
MELANOMA = 0
UNKNOWN = "UNK"

# Every diagnosis the merged table can hold, lower case, to its 2019 class: the 2020 strings,
# the long names the external readers write, the 2019/2018 codes the resized 2019 set keeps
# and HAM10000's dx codes. The 2020 keratosis and lentigo kinds are the 2019 BKL family; the
# two 2020 melanocytic look-alikes that are neither nevus nor melanoma count as unknown.
DIAGNOSIS_TO_2019 = {
    "melanoma": "MEL",
    "mel": "MEL",
    "nevus": "NV",
    "nv": "NV",
    "basal cell carcinoma": "BCC",
    "bcc": "BCC",
    "actinic keratosis": "AK",
    "ak": "AK",
    "akiec": "AK",
    "benign keratosis": "BKL",
    "pigmented benign keratosis": "BKL",
    "bkl": "BKL",
    "seborrheic keratosis": "BKL",
    "lichenoid keratosis": "BKL",
    "solar lentigo": "BKL",
    "lentigo nos": "BKL",
    "dermatofibroma": "DF",
    "df": "DF",
    "vascular lesion": "VASC",
    "vasc": "VASC",
    "squamous cell carcinoma": "SCC",
    "scc": "SCC",
    "unknown": UNKNOWN,
    "unk": UNKNOWN,
    "cafe-au-lait macule": UNKNOWN,
    "atypical melanocytic proliferation": UNKNOWN,
}
# 2019 class -> 4-class set
_TO_4 = {"MEL": "MEL", "NV": "NV", "BKL": "BKL"}


def class_names(n_classes: int) -> tuple[str, ...]:
    """The class names of the 9- or 4-class set, melanoma first."""
    if n_classes not in CLASS_SETS:
        raise ValueError(
            f"the diagnosis classes come in sets of {sorted(CLASS_SETS)}, not {n_classes}"
        )
    return CLASS_SETS[n_classes]


def to_2019_class(diagnosis: object) -> str | None:
    """The 2019 class of one diagnosis string; None for an empty cell or a string not in
    :data:`DIAGNOSIS_TO_2019` (any case, surrounding spaces ignored)."""
    if not isinstance(diagnosis, str):
        return None
    return DIAGNOSIS_TO_2019.get(diagnosis.strip().lower())


def diagnosis_classes(table: pd.DataFrame, n_classes: int, name: str) -> np.ndarray:
    """Each row's class index (int64) in the ``n_classes`` set, melanoma = :data:`MELANOMA`.

    A row without a diagnosis, or with one the map does not know, is unknown/other, unless
    its ``target`` is 1: a malignant row is melanoma. A diagnosis of melanoma with target 0,
    or of a named non-melanoma class with target 1, is a ValueError naming the rows of
    ``name`` (the table's file).
    """
    names = class_names(n_classes)
    if "diagnosis" not in table:
        raise ValueError(f"{name}: no diagnosis column, which model.aux_classes needs")
    known = [to_2019_class(d) for d in table["diagnosis"]]
    target = table["target"].to_numpy()
    said_mel = np.array([k == "MEL" for k in known])
    said_other = np.array([k is not None and k not in ("MEL", UNKNOWN) for k in known])
    for clash, what in [
        (said_mel & (target == 0), "diagnosis melanoma with target 0"),
        (said_other & (target == 1), "target 1 (melanoma) with a non-melanoma diagnosis"),
    ]:
        if clash.any():
            raise ValueError(f"{name}: {what} at {describe_rows(table, clash, 'diagnosis')}")
    classes = [k if k is not None else UNKNOWN for k in known]
    if n_classes == 4:
        classes = [_TO_4.get(c, "OTHER") for c in classes]
    index = {c: i for i, c in enumerate(names)}
    out = np.array([index[c] for c in classes], dtype=np.int64)
    out[target == 1] = MELANOMA
    return out


def unmapped(table: pd.DataFrame) -> list[str]:
    """The distinct non-empty diagnosis strings the map does not know (they count as unknown)."""
    values = table["diagnosis"].dropna().astype(str)
    return sorted({v for v in values if v.strip() and to_2019_class(v) is None})


def one_vs_rest(classes: np.ndarray, n_classes: int) -> np.ndarray:
    """(rows, n_classes) float32 0/1 targets: column k is 1 where the row's class is k."""
    return np.eye(n_classes, dtype=np.float32)[np.asarray(classes, dtype=np.int64)]


def class_ratios(classes: np.ndarray, n_classes: int) -> list[float]:
    """Each class's share of the rows, smoothed as (count + 0.5) / (rows + 1) so that a class
    absent from the rows still has a ratio inside (0, 1) (the AUC losses' p)."""
    counts = np.bincount(np.asarray(classes, dtype=np.int64), minlength=n_classes)
    return [float((c + 0.5) / (len(classes) + 1)) for c in counts]
