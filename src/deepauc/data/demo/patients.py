"""Synthetic competition rows: patients, their image counts, labels and metadata."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from deepauc.data.tables import SEXES, SITES_2020

SEXES_ARR = np.array(SEXES, dtype=object)
SITES_ARR = np.array(SITES_2020, dtype=object)
SITE_P_BENIGN = np.array([0.10, 0.16, 0.25, 0.43, 0.035, 0.025])
SITE_P_MALIGNANT = np.array([0.16, 0.20, 0.20, 0.40, 0.02, 0.02])
_DIAG_BENIGN = ["unknown", "nevus", "seborrheic keratosis", "lentigo NOS", "lichenoid keratosis"]
_DIAG_BENIGN_P = [0.80, 0.16, 0.02, 0.01, 0.01]


def draw_images_per_patient(
    rng: np.random.Generator, n_images: int, n_patients: int, max_per: int
) -> np.ndarray:
    """Heavy-tailed images-per-patient counts, each in [1, max_per], summing to n_images.

    Counts are a discretised lognormal (median about half the mean, long right
    tail), then nudged one image at a time to hit the exact total.
    """
    mean = n_images / n_patients
    sigma = 1.2
    mu = math.log(max(mean, 1.0)) - sigma * sigma / 2
    counts = np.clip(np.round(rng.lognormal(mu, sigma, n_patients)), 1, max_per).astype(int)
    diff = n_images - int(counts.sum())
    while diff != 0:
        step = 1 if diff > 0 else -1
        ok = counts < max_per if step > 0 else counts > 1
        weights = counts * ok
        if weights.sum() == 0:
            weights = ok.astype(float)
        chosen = rng.choice(
            n_patients, size=min(abs(diff), int(ok.sum())), replace=False, p=weights / weights.sum()
        )
        counts[chosen] += step
        diff -= step * len(chosen)
    return counts


def malignant_flags(rng: np.random.Generator, counts: np.ndarray, ratio: float) -> np.ndarray:
    """Per-image 0/1 targets (patients' images contiguous): ~ratio malignant.

    A malignant patient usually has exactly one malignant image; about one in six
    has a second one (when the patient has at least two images).
    """
    n_images = int(counts.sum())
    n_mal = max(1, round(ratio * n_images))
    n_mal_patients = min(len(counts), max(1, round(n_mal / 1.15)))
    patients = rng.choice(len(counts), size=n_mal_patients, replace=False)
    per_patient = np.zeros(len(counts), dtype=int)
    per_patient[patients] = 1
    extra = n_mal - n_mal_patients
    multi = [p for p in patients if counts[p] >= 2]
    for p in rng.permutation(multi)[:extra]:
        per_patient[p] += 1
    targets = np.zeros(n_images, dtype=int)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for p in np.flatnonzero(per_patient):
        pos = rng.choice(counts[p], size=per_patient[p], replace=False)
        targets[starts[p] + pos] = 1
    return targets


def with_missing(rng: np.random.Generator, values: np.ndarray, rate: float) -> np.ndarray:
    """``values`` as objects with about ``rate`` of them replaced by NaN."""
    values = values.astype(object)
    values[rng.uniform(size=len(values)) < rate] = np.nan
    return values


def _ages(
    rng: np.random.Generator, base: np.ndarray, targets: np.ndarray, lo: int, hi: int
) -> np.ndarray:
    age = base + 6.0 * targets + rng.normal(0, 3.0, len(base))
    return np.clip(np.round(age / 5.0) * 5.0, lo, hi)


def unique_ids(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    """n distinct integers in [low, high), in random order."""
    if n > high - low:
        raise ValueError("id range too small")
    ids: set[int] = set()
    while len(ids) < n:
        ids.update(int(v) for v in rng.integers(low, high, n - len(ids)))
    return rng.permutation(np.fromiter(ids, dtype=np.int64, count=len(ids)))


def fresh_names(
    rng: np.random.Generator, n: int, low: int, high: int, taken: set[str]
) -> list[str]:
    """n distinct ISIC_xxxxxxx names with ids in [low, high), none of them in ``taken``."""
    free = np.setdiff1d(np.arange(low, high), [int(t[5:12]) for t in taken])
    if n > len(free):
        raise ValueError("id range too small")
    return [f"ISIC_{i:07d}" for i in rng.choice(free, size=n, replace=False)]


def competition_table(
    rng: np.random.Generator,
    names: np.ndarray,
    patient_ids: np.ndarray,
    counts: np.ndarray,
    ratio: float,
) -> pd.DataFrame:
    """Competition-style rows (train columns) for patients with the given image counts."""
    n = int(counts.sum())
    targets = malignant_flags(rng, counts, ratio)
    pidx = np.repeat(np.arange(len(counts)), counts)
    # Malignancy is weakly commoner in men (sex is a patient attribute).
    has_mal = np.bincount(pidx, weights=targets, minlength=len(counts)) > 0
    p_male = np.where(has_mal, 0.62, 0.5)
    sex_p = np.where(rng.uniform(size=len(counts)) < p_male, "male", "female").astype(object)
    base_age = np.clip(rng.normal(48, 14, len(counts)), 15, 88)
    site_p = np.where(targets[:, None] == 1, SITE_P_MALIGNANT, SITE_P_BENIGN)
    u = rng.uniform(size=n)[:, None]
    site_idx = (u > np.cumsum(site_p, axis=1)).sum(axis=1)
    sex = sex_p[pidx]
    diagnosis = np.where(
        targets == 1, "melanoma", rng.choice(_DIAG_BENIGN, size=n, p=_DIAG_BENIGN_P)
    )
    df = pd.DataFrame(
        {
            "image_name": names,
            "patient_id": patient_ids[pidx],
            "sex": with_missing(rng, sex, 0.02),
            "age_approx": with_missing(rng, _ages(rng, base_age[pidx], targets, 15, 90), 0.03),
            "anatom_site_general_challenge": with_missing(
                rng, SITES_ARR[np.minimum(site_idx, 5)], 0.04
            ),
            "diagnosis": diagnosis,
            "benign_malignant": np.where(targets == 1, "malignant", "benign"),
            "target": targets,
        }
    )
    df["age_approx"] = df["age_approx"].astype(float)
    df["patient_idx"] = pidx
    return df
