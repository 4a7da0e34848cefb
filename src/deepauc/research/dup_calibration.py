"""Near-duplicate search calibrated on real photographs: per collection, the rate of
pairs of distinct images called duplicates, the largest group they chain into, and the
recall on real copies (re-encoded, resized, cropped, brightened, flipped) of real images.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from deepauc.data import duplicates as dup

COPY_KINDS = ("jpeg q60-95", "resize 0.5-2x", "crop/shift <= 1%", "brightness +-15%", "flip/rotate")


@dataclass(frozen=True)
class Setting:
    """One way of calling a pair a duplicate: hash distance, then (optionally) the
    thumbnail correlation."""

    name: str
    threshold: int
    min_similarity: float | None


OLD = Setting("old: hash <= 32", 32, None)
NEW = Setting(
    f"new: hash <= {dup.DEFAULT_THRESHOLD} and r >= {dup.DEFAULT_MIN_SIMILARITY}",
    dup.DEFAULT_THRESHOLD,
    dup.DEFAULT_MIN_SIMILARITY,
)


# ----------------------------------------------------------------------- collections


def elpv_images(limit: int | None = None) -> list[np.ndarray]:
    """ELPV solar cells (pip ``elpv-dataset``): 300 x 300 grey PNGs, in file order."""
    import elpv_dataset

    folder = Path(elpv_dataset.__file__).parent / "data" / "images"
    files = sorted(folder.glob("*.png"))[:limit]
    return [_read_grey(f) for f in files]


def fashion_mnist_images(limit: int | None = 3000) -> list[np.ndarray]:
    """Fashion-MNIST test images (Debian ``dataset-fashion-mnist``), 28 x 28 grey."""
    from deepauc.research.datasets import FASHION_MNIST_ROOT, read_idx

    root = Path(os.environ.get("FASHION_MNIST_ROOT", FASHION_MNIST_ROOT))
    data = read_idx(root / "t10k-images-idx3-ubyte.gz")
    return list(data[:limit])


def digits_images(limit: int | None = None) -> list[np.ndarray]:
    """scikit-learn's handwritten digits: 1,797 8 x 8 grey scans (16 levels)."""
    from sklearn.datasets import load_digits

    data = (load_digits().images * 255 / 16).round().astype(np.uint8)
    return list(data[:limit])


def lfw_images(limit: int | None = None) -> list[np.ndarray]:
    """scikit-image's LFW subset: 200 25 x 25 grey crops (100 faces, 100 non-faces)."""
    from skimage import data

    return list((data.lfw_subset() * 255).round().astype(np.uint8)[:limit])


def skimage_photos(limit: int | None = None) -> list[np.ndarray]:
    """scikit-image's sample photographs that ship with it, as grey."""
    from skimage import data

    folder = Path(data.__file__).parent
    files = sorted([*folder.glob("*.png"), *folder.glob("*.jpg")])[:limit]
    grey = [_read_grey(f) for f in files]
    # drop the synthetic test patterns (flat colours, chessboards): not photographs
    return [g for g in grey if min(g.shape) >= 64 and len(np.unique(g)) > 32]


def _read_grey(path: Path) -> np.ndarray:
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise ValueError(f"{path}: cannot decode image")
    return grey


COLLECTIONS: dict[str, Callable[[int | None], list[np.ndarray]]] = {
    "elpv": elpv_images,
    "fashion-mnist": fashion_mnist_images,
    "digits": digits_images,
    "lfw-subset": lfw_images,
    "skimage-photos": skimage_photos,
}


# ----------------------------------------------------------------------- copies


def make_copy(grey: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A real copy of ``grey`` of one kind, as a second source would ship it (JPEG)."""
    h, w = grey.shape
    img = grey
    if kind == "resize 0.5-2x":
        f = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        size = (max(8, round(w * f)), max(8, round(h * f)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)
    elif kind.startswith("crop"):
        top, bottom, left, right = (rng.uniform(0, 0.01, 4) * [h, h, w, w]).round().astype(int)
        img = img[top : h - bottom, left : w - right]
    elif kind.startswith("brightness"):
        gain = rng.uniform(0.85, 1.15)
        img = np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    elif kind == "flip/rotate":
        img = dup.dihedral_image(img, int(rng.integers(1, 8)))
    quality = int(rng.integers(60, 96))
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(img), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    copy = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    if copy is None:
        raise RuntimeError("JPEG decoding failed")
    return copy


# ----------------------------------------------------------------------- measuring


def signatures(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(hashes (n, WORDS), thumbnails (n, THUMB_SIDE, THUMB_SIDE)) of grey images."""
    hashes = dup.pack(np.stack([dup.dct_signs(g) for g in images]))
    thumbs = np.stack([dup.thumbnail(g) for g in images])
    return hashes, thumbs


def called_pairs(hashes, thumbs, setting: Setting, query=None, qthumbs=None) -> np.ndarray:
    """(k, 2) pairs called duplicates under ``setting``: within ``hashes`` (query None)
    or from ``query`` to ``hashes``."""
    same = query is None
    q, qt = (hashes, thumbs) if same else (query, qthumbs)
    found = dup.close_pairs_with_variant(q, hashes, setting.threshold, same=same)
    if setting.min_similarity is not None and len(found):
        r = dup.similarity(qt[found[:, 0]], thumbs[found[:, 1]], found[:, 2])
        found = found[r >= setting.min_similarity]
    return found[:, :2]


def largest_group(n: int, pairs: np.ndarray) -> int:
    """Images in the largest group that union-find makes of ``pairs`` (1 if none)."""
    labels = dup.group_labels(pd.Series(np.arange(n)), pairs)
    return int(labels.value_counts().max()) if n else 0


def false_pairs(name: str, images: list[np.ndarray], settings: list[Setting]) -> list[dict]:
    """Per setting, pairs of distinct images called duplicates and the largest group."""
    hashes, thumbs = signatures(images)
    n = len(images)
    rows = []
    for s in settings:
        pairs = called_pairs(hashes, thumbs, s)
        rows.append(
            {
                "collection": name,
                "setting": s.name,
                "images": n,
                "pairs compared": n * (n - 1) // 2,
                "pairs called": len(pairs),
                "false-pair rate": len(pairs) / max(1, n * (n - 1) // 2),
                "largest group": largest_group(n, pairs),
            }
        )
    return rows


def recall(
    name: str, images: list[np.ndarray], settings: list[Setting], n: int, seed: int = 0
) -> list[dict]:
    """Per setting and copy kind, the fraction of n real copies found among the images."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(images), min(n, len(images)), replace=False)
    hashes, thumbs = signatures(images)
    rows = []
    for kind in COPY_KINDS:
        copies = [make_copy(images[i], kind, rng) for i in picks]
        qh, qt = signatures(copies)
        for s in settings:
            found = called_pairs(hashes, thumbs, s, qh, qt)
            hit = {(int(a), int(b)) for a, b in found}
            got = sum((k, int(i)) in hit for k, i in enumerate(picks))
            rows.append(
                {
                    "collection": name,
                    "setting": s.name,
                    "copy": kind,
                    "copies": len(picks),
                    "found": got,
                    "recall": got / max(1, len(picks)),
                }
            )
    return rows


def calibrate(
    limits: dict[str, int | None], n_copies: int, settings: list[Setting] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(false-pair table, recall table) over the collections named in ``limits``."""
    settings = settings or [OLD, NEW]
    fp, rc = [], []
    for name, limit in limits.items():
        images = COLLECTIONS[name](limit)
        fp += false_pairs(name, images, settings)
        rc += recall(name, images, settings, n_copies)
    return pd.DataFrame(fp), pd.DataFrame(rc)
