"""``deepauc demo-data``: a small synthetic data set in the exact competition layout.

The pipeline has to run end to end on machines without the 100 GB of competition
and ISIC downloads, so this module writes look-alike data, deterministically from a
seed::

    DIR/train.csv, DIR/test.csv, DIR/sample_submission.csv      (competition columns)
    DIR/jpeg/train/<image_name>.jpg, DIR/jpeg/test/<image_name>.jpg
    DIR/external/isic2019/ISIC_2019_Training_GroundTruth.csv     (one-hot MEL..UNK)
    DIR/external/isic2019/ISIC_2019_Training_Metadata.csv
    DIR/external/isic2019/ISIC_2019_Training_Input/<image>.jpg  (some `_downsampled`)
    DIR/external/isic2018/HAM10000_metadata.csv + images/<image_id>.jpg
    DIR/external/isic2017/ISIC-2017_Training_Part3_GroundTruth.csv
        + ISIC-2017_Training_Data/<image_id>.jpg + ISIC-2017_Training_Data_metadata.csv
    DIR/external/malignant/malignant.csv + jpeg/<image_name>.jpg
    DIR/demo_solution.csv   test labels (Kaggle "solution" format with a Usage column);
                            not part of the competition layout, for scoring the demo only
    DIR/README.txt

``train.csv`` is written last, so its presence means the set is complete.

Images: a skin-toned background (per-patient tone, illumination gradient, noise,
hair-like dark curves) with a pigmented lesion whose radius varies with angle
through random harmonics. Each image has a latent severity ``s ~ N(0, 1) + D·look``
where ``look`` is its label except for label noise (some malignant lesions look
benign and vice versa). Size, border irregularity, asymmetry, darkness and colour
variegation (black, blue-grey, red, regression-white patches) each follow ``s`` plus
their own noise, so no single cue separates the classes and a CNN can learn a
useful but imperfect score. Metadata (age, sex, site) is weakly related to the
label and 2-5% missing.

Overlaps made on purpose, for the ``external`` stage: most ISIC 2018 and 2017 images
are also in ISIC 2019 under the same name (some 2019 copies carry the real
``_downsampled`` suffix); a few 2019 and extra-malignant images are byte-identical
copies of competition images under other names; a few extra-malignant rows reuse a
competition image name.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from deepauc.data.tables import SITES_2020, TEST_COLUMNS, TRAIN_COLUMNS
from deepauc.io import atomic_path, write_csv, write_text

# --------------------------------------------------------------------------- sizes


@dataclasses.dataclass(frozen=True)
class DemoSizes:
    """How much data to generate."""

    n_train: int = 2000
    n_patients: int = 400
    n_test: int = 600
    n_test_patients: int = 120
    malignant_ratio: float = 0.02
    n_isic2019: int = 600
    isic2019_mel_ratio: float = 0.18
    n_isic2018: int = 100
    n_isic2017: int = 40
    n_malignant: int = 60
    image_size: int = 128
    max_images_per_patient: int = 60

    def validate(self) -> None:
        for field in dataclasses.fields(self):
            if getattr(self, field.name) < 0:
                raise ValueError(f"{field.name} must be >= 0")
        if self.n_patients < 1 or self.n_train < self.n_patients:
            raise ValueError("need 1 <= --n-patients <= --n-train")
        if self.n_test_patients < 1 or self.n_test < self.n_test_patients:
            raise ValueError("need 1 <= --n-test-patients <= --n-test")
        if self.n_test > self.n_test_patients * self.max_images_per_patient:
            raise ValueError(f"--n-test > --n-test-patients * {self.max_images_per_patient}")
        if not 10 <= self.n_isic2019 <= 20_000 or self.n_isic2018 > 5000 or self.n_isic2017 > 5000:
            raise ValueError(
                "need 10 <= --n-isic2019 <= 20000, --n-isic2018 and --n-isic2017 <= 5000"
            )
        if self.n_train > self.n_patients * self.max_images_per_patient:
            raise ValueError(f"--n-train > --n-patients * {self.max_images_per_patient}")
        if not 0 < self.malignant_ratio < 0.5 or not 0 < self.isic2019_mel_ratio < 1:
            raise ValueError(
                "--malignant-ratio must be in (0, 0.5), --isic2019-mel-ratio in (0, 1)"
            )
        if self.image_size < 32:
            raise ValueError("--image-size must be >= 32")


# ---------------------------------------------------------------- image synthesis

# Separation of the latent severity between benign- and malignant-looking lesions.
SEVERITY_SHIFT = 2.2
# Label noise: P(a malignant lesion looks benign), P(a benign lesion looks malignant).
LOOK_FLIP = (0.08, 0.03)

_SKIN_TONES = np.array(  # RGB
    [[232, 190, 165], [222, 172, 140], [205, 150, 118], [238, 205, 185], [180, 125, 95]],
    dtype=np.float32,
)
_LESION_LIGHT = np.array([175, 120, 85], dtype=np.float32)
_LESION_DARK = np.array([85, 50, 32], dtype=np.float32)
# Variegation colours: black, dark brown, blue-grey, red, regression white.
_PATCH_COLOURS = np.array(
    [[35, 28, 28], [70, 40, 25], [105, 115, 135], [175, 80, 80], [215, 200, 195]],
    dtype=np.float32,
)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Band-limited noise: a ``cells``-wide Gaussian grid upsampled bicubically to h x w."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


@dataclasses.dataclass(frozen=True)
class Style:
    """Acquisition style shared by a patient or a source: skin tone and camera look."""

    skin: tuple[float, float, float]
    height: int
    width: int
    vignette: float  # probability of a dark circular dermoscope field


def patient_style(rng: np.random.Generator, height: int, width: int, vignette: float) -> Style:
    """Draw a skin tone (a palette colour with jitter) for one patient."""
    tone = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] + rng.normal(0, 8, 3)
    return Style(tuple(float(v) for v in tone), height, width, vignette)


def render_lesion(rng: np.random.Generator, look_malignant: bool, style: Style) -> np.ndarray:
    """Render one synthetic dermoscopy image (RGB uint8, style.height x style.width).

    ``look_malignant`` shifts the latent severity that drives lesion size, border
    irregularity, asymmetry, darkness and colour variegation.
    """
    h, w = style.height, style.width
    side = min(h, w)
    s = rng.normal() + SEVERITY_SHIFT * float(look_malignant)
    f_size, f_irr, f_asym, f_dark, f_col = s + rng.normal(0.0, 1.0, 5)

    # Background: skin tone under uneven illumination, mottled, plus sensor noise.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gx, gy = rng.normal(0, 0.10, 2)
    light = 1.0 + gx * (xx / w - 0.5) + gy * (yy / h - 0.5)
    light += 0.05 * _smooth_noise(rng, h, w, 4)
    skin = np.asarray(style.skin, dtype=np.float32) * rng.uniform(0.94, 1.04)
    img = skin[None, None, :] * light[..., None]
    img += 6.0 * _smooth_noise(rng, h, w, 12)[..., None]

    # Lesion shape: r(theta) with random harmonics; k = 1 moves mass off-centre.
    cx = w / 2 + rng.normal(0, 0.05 * side)
    cy = h / 2 + rng.normal(0, 0.05 * side)
    r0 = float(np.clip(0.19 * side * math.exp(0.17 * f_size), 0.07 * side, 0.42 * side))
    aspect = 1.0 + abs(rng.normal(0, 0.12)) + 0.25 * _sigmoid(f_asym - 1.0)
    rot = rng.uniform(0, math.pi)
    dx, dy = xx - cx, yy - cy
    u = (dx * math.cos(rot) + dy * math.sin(rot)) / aspect
    v = -dx * math.sin(rot) + dy * math.cos(rot)
    dist = np.sqrt(u * u + v * v)
    # cos(k*theta + phi) = Re(z^k e^{i phi}) with z = e^{i theta}: powers of z are
    # much cheaper than arctan2 and one cos per harmonic.
    z = ((u + 1j * v) / np.maximum(dist, 1e-6)).astype(np.complex64)
    amp = 0.03 + 0.10 * _sigmoid(f_irr - 1.0)
    radius = np.ones_like(dist)
    zk = z.copy()
    for k in range(1, 8):
        if k > 1:
            zk *= z
        coef = 0.6 * amp * _sigmoid(f_asym - 0.5) if k == 1 else rng.normal(0, amp / k**0.6)
        phi = rng.uniform(0, 2 * math.pi)
        radius += coef * (zk.real * math.cos(phi) - zk.imag * math.sin(phi))
    rough = (0.02 + 0.10 * _sigmoid(f_irr - 1.0)) * _smooth_noise(rng, h, w, 14)
    edge = r0 * (radius + rough)
    softness = 0.04 * r0 * (1.0 + 2.0 * _sigmoid(-f_irr))
    alpha = np.clip((edge - dist) / softness + 0.5, 0.0, 1.0)

    # Pigment: light-to-dark brown, darker towards one side for asymmetric lesions.
    darkness = _sigmoid(0.8 * f_dark - 0.6 + rng.normal(0, 0.3))
    side_shade = 0.25 * _sigmoid(f_asym - 1.0) * (u / (r0 + 1e-6)) * rng.choice([-1.0, 1.0])
    dark_map = np.clip(darkness + side_shade + 0.12 * _smooth_noise(rng, h, w, 10), 0.0, 1.0)
    pigment = _LESION_LIGHT + (_LESION_DARK - _LESION_LIGHT) * dark_map[..., None]
    network = 0.07 * _smooth_noise(rng, h, w, 40)  # fine reticular texture
    pigment = pigment * (1.0 + network[..., None])

    # Variegation: blotches of other colours inside the lesion.
    n_patches = int(rng.poisson(0.4 + 3.0 * _sigmoid(f_col - 1.2)))
    colour_p = np.array([1.0, 1.5, 0.3 + 2.0 * _sigmoid(f_col - 1.5), 0.4, 0.4])
    colour_p = colour_p / colour_p.sum()
    for _ in range(n_patches):
        ang = rng.uniform(0, 2 * math.pi)
        rad = r0 * math.sqrt(rng.uniform(0.0, 0.5))
        px, py = cx + rad * math.cos(ang), cy + rad * math.sin(ang)
        spread = r0 * rng.uniform(0.15, 0.4)
        blob = np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * spread * spread))
        blob *= np.clip(0.8 + 0.5 * _smooth_noise(rng, h, w, 8), 0.0, 1.0)
        colour = _PATCH_COLOURS[rng.choice(len(_PATCH_COLOURS), p=colour_p)]
        pigment += (colour - pigment) * (0.85 * blob)[..., None]

    img += (pigment * light[..., None] - img) * alpha[..., None]
    img += 3.0 * rng.standard_normal(img.shape, dtype=np.float32)

    if rng.uniform() < style.vignette:
        rim = np.sqrt((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (0.5 * math.hypot(w, h))
        fall = np.clip((rim - rng.uniform(0.72, 0.9)) * 12.0, 0.0, 0.92)
        img *= (1.0 - fall)[..., None]

    out = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.poisson(1.3))):  # hairs: dark quadratic Bezier curves
        p0, p1, p2 = rng.uniform([0, 0], [w, h], (3, 2))
        t = np.linspace(0.0, 1.0, 24)[:, None]
        curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        shade = float(rng.uniform(20, 70))
        cv2.polylines(
            out,
            [np.round(curve * 16).astype(np.int32)],
            False,
            (shade, shade * 0.8, shade * 0.7),
            thickness=int(rng.choice([1, 1, 1, 2])),
            lineType=cv2.LINE_AA,
            shift=4,
        )
    return out


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an RGB uint8 image."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def _image_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    # One generator per image, keyed by (seed, set, index): images do not depend on
    # the order they are drawn in, so the generator may be parallelised later.
    return np.random.default_rng([seed, stream, index])


# -------------------------------------------------------------- tables synthesis


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


SEXES_ARR = np.array(["male", "female"], dtype=object)
_SITE_P_BENIGN = np.array([0.10, 0.16, 0.25, 0.43, 0.035, 0.025])
_SITE_P_MALIGNANT = np.array([0.16, 0.20, 0.20, 0.40, 0.02, 0.02])
_DIAG_BENIGN = ["unknown", "nevus", "seborrheic keratosis", "lentigo NOS", "lichenoid keratosis"]
_DIAG_BENIGN_P = [0.80, 0.16, 0.02, 0.01, 0.01]


def _with_missing(rng: np.random.Generator, values: np.ndarray, rate: float) -> np.ndarray:
    values = values.astype(object)
    values[rng.uniform(size=len(values)) < rate] = np.nan
    return values


def _ages(rng: np.random.Generator, base: np.ndarray, targets: np.ndarray, lo: int, hi: int):
    age = base + 6.0 * targets + rng.normal(0, 3.0, len(base))
    return np.clip(np.round(age / 5.0) * 5.0, lo, hi)


def _unique_ids(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    """n distinct integers in [low, high), in random order."""
    if n > high - low:
        raise ValueError("id range too small")
    ids: set[int] = set()
    while len(ids) < n:
        ids.update(int(v) for v in rng.integers(low, high, n - len(ids)))
    return rng.permutation(np.fromiter(ids, dtype=np.int64, count=len(ids)))


def _fresh_names(
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
    site_p = np.where(targets[:, None] == 1, _SITE_P_MALIGNANT, _SITE_P_BENIGN)
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
            "sex": _with_missing(rng, sex, 0.02),
            "age_approx": _with_missing(rng, _ages(rng, base_age[pidx], targets, 15, 90), 0.03),
            "anatom_site_general_challenge": _with_missing(
                rng, np.array(SITES_2020, dtype=object)[np.minimum(site_idx, 5)], 0.04
            ),
            "diagnosis": diagnosis,
            "benign_malignant": np.where(targets == 1, "malignant", "benign"),
            "target": targets,
        }
    )
    df["age_approx"] = df["age_approx"].astype(float)
    df["patient_idx"] = pidx
    return df


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


def isic2019_table(rng: np.random.Generator, n: int, mel_ratio: float) -> pd.DataFrame:
    """ISIC 2019-style rows: image name, class, metadata, lesion ids (some missing).

    Ids: the first quarter is in the HAM10000 range (ISIC_0024306..), shared with
    the 2018 set; the rest are spread over the remaining 2019 range.
    """
    n_ham = n // 4
    ham_ids = _unique_ids(rng, n_ham, 24306, 34321)
    other_ids = _unique_ids(rng, n - n_ham, 0, 24306)
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
            "age_approx": _with_missing(rng, age.astype(float), 0.03),
            "anatom_site_general": _with_missing(rng, site, 0.05),
            "lesion_id": lesion,
            "sex": _with_missing(rng, sex, 0.03),
            "ham": np.arange(n) < n_ham,
        }
    )


# ------------------------------------------------------------------------ writer

EXTERNAL = Path("external")


def _render_job(job: tuple[int, int, int, bool, Style]) -> bytes:
    seed, stream, index, look, style = job
    return encode_jpeg(render_lesion(_image_rng(seed, stream, index), look, style))


def _single_thread() -> None:
    # The pool already uses every core; OpenCV threads would only contend.
    cv2.setNumThreads(1)


class _ImageWriter:
    """Renders (in worker processes) and writes images, tracking the files written."""

    def __init__(self, seed: int, root: Path, workers: int = 1):
        self.seed = seed
        self.root = root
        self.written: set[Path] = set()
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> _ImageWriter:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    @property
    def count(self) -> int:
        return len(self.written)

    def write(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        self.written.add(path)

    def remove_stale(self) -> int:
        """Delete .jpg files left by an earlier run in the folders this run wrote to."""
        stale = [
            p
            for folder in {p.parent for p in self.written}
            for p in folder.glob("*.jpg")
            if p not in self.written
        ]
        for path in stale:
            path.unlink()
        return len(stale)

    def render_many(self, stream: int, jobs: list[tuple[int, bool, Style]]) -> list[bytes]:
        """JPEG bytes for each (index, look, style); the same whatever the worker count."""
        full = [(self.seed, stream, i, bool(look), style) for i, look, style in jobs]
        if self.workers > 1 and len(full) >= 64:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.workers, initializer=_single_thread)
            return list(self._pool.map(_render_job, full, chunksize=16))
        return [_render_job(job) for job in full]


def _looks(rng: np.random.Generator, targets: np.ndarray) -> np.ndarray:
    """Appearance class after label noise (see LOOK_FLIP)."""
    u = rng.uniform(size=len(targets))
    flip = np.where(targets == 1, u < LOOK_FLIP[0], u < LOOK_FLIP[1])
    return np.where(flip, 1 - targets, targets).astype(bool)


def generate(
    out: str | Path, seed: int = 0, sizes: DemoSizes | None = None, workers: int = 1
) -> dict:
    """Write the demo data set under ``out``; return a summary dict of counts.

    The output depends on ``seed`` and ``sizes`` only, not on ``workers``.
    """
    sizes = sizes or DemoSizes()
    sizes.validate()
    with _ImageWriter(seed, Path(out), workers) as writer:
        return _generate(Path(out), seed, sizes, writer)


def _generate(out: Path, seed: int, sizes: DemoSizes, writer: _ImageWriter) -> dict:
    rng = np.random.default_rng(seed)
    comp = _competition(rng, sizes, writer)
    isic, isic_bytes, copy_names = _isic2019(rng, seed, sizes, writer, comp)
    _isic2018(rng, seed, sizes, writer, isic, isic_bytes, copy_names)
    _isic2017(rng, seed, sizes, writer, isic, isic_bytes, copy_names)
    _malignant(rng, sizes, writer, comp, isic, isic_bytes, copy_names)

    # competition tables last, train.csv very last: its presence means "complete"
    stale = writer.remove_stale()
    test = comp.test.sort_values("image_name", kind="stable")
    usage = np.where(rng.uniform(size=len(test)) < 0.3, "Public", "Private")
    write_csv(
        pd.DataFrame({"image_name": test["image_name"], "target": test["target"], "Usage": usage}),
        out / "demo_solution.csv",
    )
    write_csv(
        pd.DataFrame({"image_name": test["image_name"], "target": 0.0}),
        out / "sample_submission.csv",
    )
    write_csv(test[TEST_COLUMNS], out / "test.csv")
    write_text(README_TEXT.format(seed=seed, sizes=dataclasses.asdict(sizes)), out / "README.txt")
    train = comp.train.sort_values("image_name", kind="stable")
    write_csv(train[TRAIN_COLUMNS], out / "train.csv")

    return {
        "train images": len(train),
        "train patients": int(train["patient_id"].nunique()),
        "train malignant": int(train["target"].sum()),
        "train malignant ratio": float(train["target"].mean()),
        "max images per patient": int(train["patient_id"].value_counts().max()),
        "test images": len(test),
        "test patients": int(test["patient_id"].nunique()),
        "isic2019 images": len(isic),
        "isic2019 MEL ratio": float((isic["label"] == "MEL").mean()),
        "isic2018 images": sizes.n_isic2018,
        "isic2017 images": sizes.n_isic2017,
        "extra malignant images": sizes.n_malignant,
        "image files written": writer.count,
        "stale image files removed": stale,
    }


@dataclasses.dataclass
class _Competition:
    train: pd.DataFrame
    test: pd.DataFrame
    train_bytes: dict[str, bytes]
    spare_names: np.ndarray  # unused ISIC names / patient ids, for the malignant set
    spare_patients: np.ndarray


def _competition(rng: np.random.Generator, sizes: DemoSizes, writer: _ImageWriter) -> _Competition:
    """Competition train and test rows (disjoint patients) and their images."""
    side = sizes.image_size
    n_names = sizes.n_train + sizes.n_test + sizes.n_malignant
    names = np.array(
        [f"ISIC_{i:07d}" for i in _unique_ids(rng, n_names, 100_000, 10_000_000)], dtype=object
    )
    n_pat = sizes.n_patients + sizes.n_test_patients + sizes.n_malignant
    pids = np.array([f"IP_{i:07d}" for i in _unique_ids(rng, n_pat, 0, 10_000_000)], dtype=object)
    frames = {}
    bytes_of: dict[str, bytes] = {}
    start_img = start_pat = 0
    splits = [
        ("train", sizes.n_train, sizes.n_patients),
        ("test", sizes.n_test, sizes.n_test_patients),
    ]
    for stream, (split, n_img, n_pat_split) in enumerate(splits, start=1):
        counts = draw_images_per_patient(rng, n_img, n_pat_split, sizes.max_images_per_patient)
        df = competition_table(
            rng,
            names[start_img : start_img + n_img],
            pids[start_pat : start_pat + n_pat_split],
            counts,
            sizes.malignant_ratio,
        )
        start_img, start_pat = start_img + n_img, start_pat + n_pat_split
        styles = [patient_style(rng, side, side, 0.05) for _ in range(n_pat_split)]
        looks = _looks(rng, df["target"].to_numpy())
        jobs = [(i, looks[i], styles[p]) for i, p in enumerate(df["patient_idx"])]
        for name, data in zip(df["image_name"], writer.render_many(stream, jobs)):
            writer.write(f"jpeg/{split}/{name}.jpg", data)
            if split == "train":
                bytes_of[name] = data
        frames[split] = df
    return _Competition(
        frames["train"], frames["test"], bytes_of, names[start_img:], pids[start_pat:]
    )


def _isic2019(
    rng: np.random.Generator,
    seed: int,
    sizes: DemoSizes,
    writer: _ImageWriter,
    comp: _Competition,
) -> tuple[pd.DataFrame, dict[str, bytes], set[str]]:
    """ISIC 2019 tables and images; returns (rows, bytes by image name, names of the
    images that are byte copies of competition images)."""
    folder = EXTERNAL / "isic2019"
    isic = isic2019_table(rng, sizes.n_isic2019, sizes.isic2019_mel_ratio)
    looks = _looks(rng, (isic["label"] == "MEL").to_numpy().astype(int))
    # `_downsampled`, as on some real 2019 names (some of them are also in 2018)
    suffix = rng.uniform(size=len(isic)) < 0.12
    isic["file_image"] = np.where(suffix, isic["image"] + "_downsampled", isic["image"])
    wide = _wide(sizes)
    jobs = [(i, looks[i], patient_style(rng, *wide, 0.45)) for i in range(len(isic))]
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
    onehot = pd.DataFrame({"image": isic["file_image"]})
    for c in ISIC2019_CLASSES:
        onehot[c] = (isic["label"] == c).astype(float)
    meta = isic[["file_image", "age_approx", "anatom_site_general", "lesion_id", "sex"]]
    write_csv(onehot, writer.root / folder / "ISIC_2019_Training_GroundTruth.csv")
    write_csv(
        meta.rename(columns={"file_image": "image"}),
        writer.root / folder / "ISIC_2019_Training_Metadata.csv",
    )
    return isic, isic_bytes, set(isic.loc[copies, "image"])


def _wide(sizes: DemoSizes) -> tuple[int, int]:
    """(height, width) of ISIC 2019/2018/2017 images: 4:3 at the competition height."""
    return sizes.image_size, int(round(sizes.image_size * 4 / 3))


def _write_new_or_shared(
    writer: _ImageWriter,
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


def _isic2018(
    rng: np.random.Generator,
    seed: int,
    sizes: DemoSizes,
    writer: _ImageWriter,
    isic: pd.DataFrame,
    isic_bytes: dict[str, bytes],
    copy_names: set[str],
) -> None:
    """HAM10000-style set: ~90% the HAM-range 2019 images (same names), the rest new."""
    folder = EXTERNAL / "isic2018"
    pool = isic[isic["ham"] & isic["label"].isin(list(_HAM_DX)) & ~isic["image"].isin(copy_names)]
    n_shared = min(len(pool), int(round(0.9 * sizes.n_isic2018)))
    shared = pool.sample(n=n_shared, random_state=seed)
    n_new = sizes.n_isic2018 - n_shared
    new_names = _fresh_names(rng, n_new, 24306, 34321, set(isic["image"]))
    new_label = rng.choice(list(_HAM_DX), size=n_new, p=[0.2, 0.6, 0.06, 0.04, 0.08, 0.01, 0.01])
    ham = pd.DataFrame(
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
    looks = _looks(rng, (ham["label"] == "MEL").to_numpy().astype(int))
    _write_new_or_shared(
        writer, 4, f"{folder}/images", list(ham["image_id"]), looks, rng, sizes, isic_bytes
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


def _isic2017(
    rng: np.random.Generator,
    seed: int,
    sizes: DemoSizes,
    writer: _ImageWriter,
    isic: pd.DataFrame,
    isic_bytes: dict[str, bytes],
    copy_names: set[str],
) -> None:
    """ISIC 2017 part 3 style: ~80% low-id 2019 images (MEL/NV/BKL), the rest new."""
    folder = EXTERNAL / "isic2017"
    pool = isic[
        ~isic["ham"] & isic["label"].isin(["MEL", "NV", "BKL"]) & ~isic["image"].isin(copy_names)
    ]
    n_shared = min(len(pool), int(round(0.8 * sizes.n_isic2017)))
    shared = pool.sample(n=n_shared, random_state=seed + 1)
    n_new = sizes.n_isic2017 - n_shared
    names = [*shared["image"], *_fresh_names(rng, n_new, 0, 24306, set(isic["image"]))]
    labels = np.array(
        [*shared["label"], *rng.choice(["MEL", "NV", "BKL"], size=n_new, p=[0.2, 0.65, 0.15])]
    )
    looks = _looks(rng, (labels == "MEL").astype(int))
    data_dir = f"{folder}/ISIC-2017_Training_Data"
    _write_new_or_shared(writer, 5, data_dir, names, looks, rng, sizes, isic_bytes)
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


def _malignant(
    rng: np.random.Generator,
    sizes: DemoSizes,
    writer: _ImageWriter,
    comp: _Competition,
    isic: pd.DataFrame,
    isic_bytes: dict[str, bytes],
    copy_names: set[str],
) -> None:
    """Extra malignant set (ISIC archive style, competition columns, target 1).

    Deliberate overlaps: row 0 is a byte copy of a competition melanoma under a new
    name, row 1 is a competition melanoma under its own name, row 2 is a byte copy
    of a 2019 melanoma.
    """
    folder = EXTERNAL / "malignant"
    m = sizes.n_malignant
    mal = pd.DataFrame(
        {
            "image_name": comp.spare_names[:m],
            "patient_id": comp.spare_patients[:m],
            "sex": _with_missing(rng, rng.choice(SEXES_ARR, size=m, p=[0.6, 0.4]), 0.03),
            "age_approx": _with_missing(
                rng, np.clip(np.round(rng.normal(60, 14, m) / 5) * 5, 15, 90), 0.03
            ).astype(float),
            "anatom_site_general_challenge": _with_missing(
                rng,
                rng.choice(np.array(SITES_2020, dtype=object), size=m, p=_SITE_P_MALIGNANT),
                0.04,
            ),
            "diagnosis": "melanoma",
            "benign_malignant": "malignant",
            "target": 1,
        }
    )
    looks = _looks(rng, np.ones(m, dtype=int))
    data = writer.render_many(
        6,
        [
            (i, looks[i], patient_style(rng, sizes.image_size, sizes.image_size, 0.1))
            for i in range(m)
        ],
    )
    train_mal = comp.train[comp.train["target"] == 1]
    mel2019 = isic.loc[(isic["label"] == "MEL") & ~isic["image"].isin(copy_names), "image"]
    if m >= 3 and len(train_mal) >= 2 and len(mel2019):
        a, b = train_mal.iloc[0], train_mal.iloc[1]
        data[0] = comp.train_bytes[a["image_name"]]
        data[1] = comp.train_bytes[b["image_name"]]
        for col in TRAIN_COLUMNS:
            mal.loc[1, col] = b[col]
        data[2] = isic_bytes[mel2019.iloc[0]]
    for name, blob in zip(mal["image_name"], data):
        writer.write(f"{folder}/jpeg/{name}.jpg", blob)
    write_csv(mal[TRAIN_COLUMNS], writer.root / folder / "malignant.csv")


README_TEXT = """\
SYNTHETIC DEMO DATA - not real patients, not real images.

Written by `deepauc demo-data` (seed {seed}) in the SIIM-ISIC Melanoma Classification
(Kaggle 2020) layout, plus ISIC 2019 / 2018 (HAM10000) / 2017 and an extra-malignant
set under external/, so that the whole pipeline can run without the real downloads.
Images are procedurally drawn lesions on skin-toned backgrounds; labels follow a
latent severity with deliberate overlap and label noise, so scores are imperfect.
Metadata (age, sex, site) is weakly related to the label and partly missing.
demo_solution.csv holds the test labels (Kaggle solution format, Usage
Public/Private); it does not exist in the real competition.

Sizes: {sizes}
"""


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DemoSizes()
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--n-train", type=int, default=d.n_train)
    parser.add_argument("--n-patients", type=int, default=d.n_patients)
    parser.add_argument("--n-test", type=int, default=d.n_test)
    parser.add_argument("--n-test-patients", type=int, default=d.n_test_patients)
    parser.add_argument("--malignant-ratio", type=float, default=d.malignant_ratio)
    parser.add_argument("--n-isic2019", type=int, default=d.n_isic2019)
    parser.add_argument("--isic2019-mel-ratio", type=float, default=d.isic2019_mel_ratio)
    parser.add_argument("--n-isic2018", type=int, default=d.n_isic2018)
    parser.add_argument("--n-isic2017", type=int, default=d.n_isic2017)
    parser.add_argument("--n-malignant", type=int, default=d.n_malignant)
    parser.add_argument(
        "--image-size",
        type=int,
        default=d.image_size,
        help="side of competition images in pixels (ISIC 2019/2018 are 4:3)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes drawing images (default: CPU count); output is the same",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="write even if OUT/train.csv already exists"
    )


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if (out / "train.csv").exists() and not args.overwrite:
        raise ValueError(f"{out / 'train.csv'} already exists (use --overwrite to regenerate)")
    sizes = DemoSizes(
        n_train=args.n_train,
        n_patients=args.n_patients,
        n_test=args.n_test,
        n_test_patients=args.n_test_patients,
        malignant_ratio=args.malignant_ratio,
        n_isic2019=args.n_isic2019,
        isic2019_mel_ratio=args.isic2019_mel_ratio,
        n_isic2018=args.n_isic2018,
        n_isic2017=args.n_isic2017,
        n_malignant=args.n_malignant,
        image_size=args.image_size,
    )
    start = time.perf_counter()
    summary = generate(out, args.seed, sizes, workers=args.workers)
    width = max(len(k) for k in summary)
    print(f"demo data written to {out} in {time.perf_counter() - start:.1f} s")
    for key, value in summary.items():
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"  {key:<{width}}  {text}")
    return 0
