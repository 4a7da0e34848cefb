"""Imbalanced binary benchmarks built from labelled image sets (the paper's §4.1), and their loaders."""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from deepauc.io import atomic_path

__all__ = [
    "DATASETS",
    "DatasetUnavailable",
    "FASHION_MNIST_ROOT",
    "ImbalancedSplit",
    "LabelledImages",
    "fixed_test_split",
    "load_benchmark",
    "load_cats_vs_dogs",
    "load_cifar10",
    "load_cifar100",
    "load_digits_images",
    "load_elpv",
    "load_fashion_mnist",
    "load_stl10",
    "make_imbalanced",
    "read_idx",
    "resize_images",
]

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"


class DatasetUnavailable(FileNotFoundError):
    """A data set's files or package are not installed; the message says how to get them."""


@dataclass
class LabelledImages:
    """A labelled image set: uint8 images ``N×C×H×W`` and integer class ids."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for part in ("train", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if x.ndim != 4:
                raise ValueError(f"{self.name}: x_{part} must be N×C×H×W, got shape {x.shape}")
            if len(x) != len(y):
                raise ValueError(f"{self.name}: {len(x)} {part} images but {len(y)} labels")


@dataclass
class ImbalancedSplit:
    """The imbalanced binary benchmark of one seed: train / validation / test, labels 0/1."""

    name: str
    seed: int
    imratio: float  # achieved positive ratio of the training set (train + validation)
    requested_imratio: float
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    train_index: np.ndarray  # rows of the source training set, train part
    val_index: np.ndarray  # rows of the source training set, validation part

    @property
    def n_pos(self) -> int:
        return int(self.y_train.sum() + self.y_val.sum())

    @property
    def n_neg(self) -> int:
        return int(len(self.y_train) + len(self.y_val) - self.n_pos)

    def summary(self) -> dict:
        return dict(
            dataset=self.name,
            seed=self.seed,
            imratio=self.imratio,
            requested_imratio=self.requested_imratio,
            n_train=len(self.y_train),
            n_val=len(self.y_val),
            n_test=len(self.y_test),
            pos_train=int(self.y_train.sum()),
            pos_val=int(self.y_val.sum()),
            pos_test=int(self.y_test.sum()),
            image_shape=tuple(self.x_train.shape[1:]),
        )


# ----------------------------------------------------------------------------------------
# the construction


def binarize(
    y: np.ndarray, num_classes: int, positive_classes: list[int] | None = None
) -> np.ndarray:
    """0/1 labels: class ids in ``positive_classes`` (default: the upper half) are positive."""
    if positive_classes is None:
        positive_classes = list(range(num_classes // 2, num_classes))
    bad = [c for c in positive_classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"positive_classes {bad} outside 0..{num_classes - 1}")
    if not 0 < len(set(positive_classes)) < num_classes:
        raise ValueError("positive_classes must hold some but not all classes")
    return np.isin(y, positive_classes).astype(np.int64)


def positives_for_ratio(n_neg: int, imratio: float) -> int:
    """Positives to keep beside ``n_neg`` negatives for a training ratio of ``imratio``."""
    return int(round(imratio / (1.0 - imratio) * n_neg))


def make_imbalanced(
    data: LabelledImages,
    imratio: float,
    seed: int,
    val_fraction: float = 0.1,
    positive_classes: list[int] | None = None,
    min_positives: int = 0,
) -> ImbalancedSplit:
    """The paper's imbalanced binary benchmark for one seed.

    1. Binarise the classes: the lower half of the class ids is negative, the upper half
       positive (``positive_classes`` overrides; a binary set keeps 0/1).
    2. Drop positive training images at random (seeded) until positives are ``imratio`` of
       the training set: ``n_pos = round(imratio / (1 - imratio) · n_neg)``, every negative
       kept. ``min_positives`` raises ``n_pos`` where the ratio would leave too few.
    3. Hold out ``val_fraction`` of the training set for validation, stratified by class.
    4. Leave the test set untouched (binarised the same way).

    The same seed gives the same split, byte for byte.

    Raises:
        ValueError: ``imratio`` outside (0, 0.5], or more positives needed than exist.
    """
    if not 0 < imratio <= 0.5:
        raise ValueError(f"imratio must lie in (0, 0.5], got {imratio}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    y_all = binarize(data.y_train, data.num_classes, positive_classes)
    y_test = binarize(data.y_test, data.num_classes, positive_classes)
    neg = np.flatnonzero(y_all == 0)
    pos = np.flatnonzero(y_all == 1)
    n_pos = max(positives_for_ratio(len(neg), imratio), min_positives, 1)
    if n_pos > len(pos):
        raise ValueError(
            f"{data.name}: imratio {imratio} needs {n_pos} positives beside {len(neg)} negatives, "
            f"only {len(pos)} exist"
        )
    rng = np.random.default_rng([seed, 20211011])
    kept_pos = np.sort(rng.choice(pos, size=n_pos, replace=False))
    val_parts, train_parts = [], []
    for idx in (neg, kept_pos):
        idx = rng.permutation(idx)
        n_val = int(round(val_fraction * len(idx)))
        val_parts.append(idx[:n_val])
        train_parts.append(idx[n_val:])
    train_index = rng.permutation(np.concatenate(train_parts))
    val_index = np.sort(np.concatenate(val_parts))
    return ImbalancedSplit(
        name=data.name,
        seed=seed,
        imratio=n_pos / (n_pos + len(neg)),
        requested_imratio=imratio,
        x_train=data.x_train[train_index],
        y_train=y_all[train_index],
        x_val=data.x_train[val_index],
        y_val=y_all[val_index],
        x_test=data.x_test,
        y_test=y_test,
        train_index=train_index,
        val_index=val_index,
    )


def fixed_test_split(
    y: np.ndarray, test_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Class-stratified (train_index, test_index) for sets that ship without a test split.

    Fixed by ``seed`` (not the study's seed), so every study seed sees the same test set.
    """
    rng = np.random.default_rng([seed, 7])
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def resize_images(x: np.ndarray, size: int | None) -> np.ndarray:
    """Area-average (or bilinear, when enlarging) resize of uint8 ``N×C×H×W`` to ``size``².

    Chunked to bound memory; returns uint8.
    """
    if size is None or (x.shape[2] == size and x.shape[3] == size):
        return x
    import torch
    import torch.nn.functional as F

    mode = "area" if size <= min(x.shape[2:]) else "bilinear"
    out = np.empty((x.shape[0], x.shape[1], size, size), np.uint8)
    for start in range(0, len(x), 4096):
        chunk = torch.from_numpy(np.array(x[start : start + 4096], np.float32))
        kw = {} if mode == "area" else {"align_corners": False}
        r = F.interpolate(chunk, size=(size, size), mode=mode, **kw)
        out[start : start + 4096] = r.round().clamp(0, 255).to(torch.uint8).numpy()
    return out


# ----------------------------------------------------------------------------------------
# loaders of the sets that install here


def load_digits_images(test_fraction: float = 0.3) -> LabelledImages:
    """scikit-learn's 8×8 digits (values 0–16 scaled to 0–255), fixed stratified test split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    y = d.target.astype(np.int64)
    tr, te = fixed_test_split(y, test_fraction)
    return LabelledImages(
        "digits", x[tr], y[tr], x[te], y[te], 10, {"licence": "BSD-3-Clause (scikit-learn)"}
    )


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not, into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    code, ndim = raw[2], raw[3]
    if code not in dtypes:
        raise ValueError(f"{path}: unknown IDX type code {code:#x}")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.dtype(cast(Any, dtypes[code])), offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape}, file holds {data.size} values")
    return data.reshape(shape)


def _idx_file(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise DatasetUnavailable(
        f"Fashion-MNIST file {stem}(.gz) not found under {root}. Install it with "
        "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; files go to "
        f"{FASHION_MNIST_ROOT}), or put the four IDX files from "
        "https://github.com/zalandoresearch/fashion-mnist (MIT licence) in that folder and "
        "point the study's `root` at it."
    )


def load_fashion_mnist(root: str | Path | None = None) -> LabelledImages:
    """Fashion-MNIST from its four IDX files (60k train, 10k test, 28×28, 10 classes)."""
    root = Path(root or FASHION_MNIST_ROOT)
    xtr = read_idx(_idx_file(root, "train-images-idx3-ubyte"))
    ytr = read_idx(_idx_file(root, "train-labels-idx1-ubyte"))
    xte = read_idx(_idx_file(root, "t10k-images-idx3-ubyte"))
    yte = read_idx(_idx_file(root, "t10k-labels-idx1-ubyte"))
    return LabelledImages(
        "fashion_mnist",
        np.array(xtr[:, None]),
        ytr.astype(np.int64),
        np.array(xte[:, None]),
        yte.astype(np.int64),
        10,
        {"licence": "MIT"},
    )


def load_elpv(
    image_size: int | None = 32,
    test_fraction: float = 0.25,
    cache_dir: str | Path | None = None,
    threshold: float = 0.5,
) -> LabelledImages:
    """ELPV solar cells: defective (probability ≥ ``threshold``) = 1, downsampled to ``image_size``."""
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"elpv_{image_size or 300}_{threshold:g}.npz"
        if cache.is_file():
            with np.load(cache) as z:
                x, y = z["x"], z["y"]
            return _elpv_split(x, y, test_fraction)
    try:
        from elpv_dataset.utils import load_dataset
    except ImportError as err:
        raise DatasetUnavailable(
            "ELPV needs the `elpv-dataset` package: `pip install elpv-dataset` (or "
            "`pip install -r requirements-study.txt`). Its data licence is CC BY-NC-SA 4.0: "
            "never commit the images."
        ) from err
    images, probs, _types = load_dataset()
    x = resize_images(np.asarray(images, np.uint8)[:, None], image_size)
    y = (np.asarray(probs) >= threshold).astype(np.int64)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, x=x, y=y)
    return _elpv_split(x, y, test_fraction)


def _elpv_split(x: np.ndarray, y: np.ndarray, test_fraction: float) -> LabelledImages:
    tr, te = fixed_test_split(y, test_fraction)
    return LabelledImages("elpv", x[tr], y[tr], x[te], y[te], 2, {"licence": "CC BY-NC-SA 4.0"})


# ----------------------------------------------------------------------------------------
# readers for the paper's sets (standard files, present locally)


def _find_dir(root: Path, name: str, marker: str) -> Path:
    for cand in (root / name, root):
        if (cand / marker).is_file():
            return cand
    raise DatasetUnavailable(
        f"{name}/{marker} not found under {root}: download the data set's standard archive "
        "on a machine with network access and unpack it there (it cannot be downloaded here)."
    )


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def _cifar_part(paths: list[Path], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for p in paths:
        d = _unpickle(p)
        xs.append(np.asarray(d["data"], np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[label_key], np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def load_cifar10(root: str | Path) -> LabelledImages:
    """CIFAR-10 from the python version's pickled batches (``cifar-10-batches-py``)."""
    d = _find_dir(Path(root), "cifar-10-batches-py", "test_batch")
    train = sorted(d.glob("data_batch_*"))
    if not train:
        raise DatasetUnavailable(f"no data_batch_* files in {d}")
    xtr, ytr = _cifar_part(train, "labels")
    xte, yte = _cifar_part([d / "test_batch"], "labels")
    return LabelledImages("cifar10", xtr, ytr, xte, yte, 10)


def load_cifar100(root: str | Path) -> LabelledImages:
    """CIFAR-100 (fine labels) from the python version (``cifar-100-python``)."""
    d = _find_dir(Path(root), "cifar-100-python", "test")
    xtr, ytr = _cifar_part([d / "train"], "fine_labels")
    xte, yte = _cifar_part([d / "test"], "fine_labels")
    return LabelledImages("cifar100", xtr, ytr, xte, yte, 100)


def _stl_images(path: Path) -> np.ndarray:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % (3 * 96 * 96):
        raise ValueError(f"{path}: size {raw.size} is not a multiple of 3·96·96")
    # stored column-major per channel: swap to row-major H×W
    return np.ascontiguousarray(raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2))


def load_stl10(root: str | Path) -> LabelledImages:
    """STL-10 from the binary version (``stl10_binary``); labels 1–10 become 0–9."""
    d = _find_dir(Path(root), "stl10_binary", "test_X.bin")
    out = {}
    for part in ("train", "test"):
        x = _stl_images(d / f"{part}_X.bin")
        y = np.fromfile(d / f"{part}_y.bin", dtype=np.uint8).astype(np.int64) - 1
        if len(x) != len(y):
            raise ValueError(f"{d}: {len(x)} {part} images but {len(y)} labels")
        out[part] = (x, y)
    return LabelledImages("stl10", *out["train"], *out["test"], 10)


def load_cats_vs_dogs(
    root: str | Path, image_size: int = 32, test_fraction: float = 0.2
) -> LabelledImages:
    """Cats vs dogs from a folder of jpgs (Kaggle flat names or ``Cat/``, ``Dog/`` folders)."""
    from PIL import Image

    root = Path(root)
    files: list[tuple[Path, int]] = []
    for sub, label in (("Cat", 0), ("Dog", 1)):
        if (root / sub).is_dir():
            files += [(p, label) for p in sorted((root / sub).glob("*.jpg"))]
    if not files:
        for p in sorted(root.glob("*.jpg")):
            stem = p.name.lower()
            if stem.startswith("cat."):
                files.append((p, 0))
            elif stem.startswith("dog."):
                files.append((p, 1))
    if not files:
        raise DatasetUnavailable(
            f"no cat/dog jpgs under {root}: expected Kaggle's cat.N.jpg / dog.N.jpg or Cat/ and Dog/ folders"
        )
    xs, ys, skipped = [], [], 0
    for path, label in files:
        try:
            with Image.open(path) as opened:
                im = opened.convert("RGB").resize(
                    (image_size, image_size), Image.Resampling.BILINEAR
                )
                xs.append(np.asarray(im, np.uint8).transpose(2, 0, 1))
                ys.append(label)
        except OSError:
            skipped += 1
    if len(set(ys)) < 2:
        raise ValueError(f"{root}: found readable images of only one class")
    x, y = np.stack(xs), np.asarray(ys, np.int64)
    tr, te = fixed_test_split(y, test_fraction)
    return LabelledImages(
        "cats_vs_dogs", x[tr], y[tr], x[te], y[te], 2, {"skipped_unreadable": skipped}
    )


DATASETS = {
    "digits": "scikit-learn load_digits, 1,797 8×8 images, BSD",
    "fashion_mnist": "Fashion-MNIST IDX files, 70,000 28×28 images, MIT",
    "elpv": "ELPV solar cells (pip elpv-dataset), 2,624 300×300 images, CC BY-NC-SA 4.0",
    "cifar10": "CIFAR-10 python pickles (local files only)",
    "cifar100": "CIFAR-100 python pickles (local files only)",
    "stl10": "STL-10 binary files (local files only)",
    "cats_vs_dogs": "Cats vs Dogs jpg folder (local files only)",
}


def load_benchmark(
    name: str, root: str | None = None, image_size: int | None = None, cache_dir: str | None = None
) -> LabelledImages:
    """Load data set ``name`` (a key of :data:`DATASETS`), resized to ``image_size`` if given."""
    if name == "digits":
        data = load_digits_images()
    elif name == "fashion_mnist":
        data = load_fashion_mnist(root)
    elif name == "elpv":
        return load_elpv(image_size=image_size or 32, cache_dir=cache_dir)
    elif name in ("cifar10", "cifar100", "stl10", "cats_vs_dogs"):
        if root is None:
            raise DatasetUnavailable(
                f"{name}: set the data set's `root` (its files cannot be downloaded here)"
            )
        if name == "cats_vs_dogs":
            return load_cats_vs_dogs(root, image_size=image_size or 32)
        data = {"cifar10": load_cifar10, "cifar100": load_cifar100, "stl10": load_stl10}[name](root)
    else:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {sorted(DATASETS)}")
    if image_size is not None:
        data.x_train = resize_images(data.x_train, image_size)
        data.x_test = resize_images(data.x_test, image_size)
    return data
