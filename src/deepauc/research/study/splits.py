"""A study run's data: the imbalanced split, its easy / noisy training variants, standardised tensors."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from deepauc.research.datasets import (
    ImbalancedSplit,
    LabelledImages,
    load_benchmark,
    make_imbalanced,
)
from deepauc.research.study.config import AblationSpec, DatasetSpec

__all__ = ["add_easy_examples", "flip_labels", "make_split", "standardize"]


def standardize(split: ImbalancedSplit) -> dict[str, torch.Tensor]:
    """Float tensors, standardised by the training split's per-channel mean and std."""
    xtr = torch.from_numpy(split.x_train).float().div_(255)
    mean = xtr.mean(dim=(0, 2, 3), keepdim=True)
    std = xtr.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3)
    return {
        "x_train": (xtr - mean) / std,
        "y_train": torch.from_numpy(split.y_train).float(),
        "x_val": _scaled(split.x_val, mean, std),
        "y_val": torch.from_numpy(split.y_val).float(),
        "x_test": _scaled(split.x_test, mean, std),
        "y_test": torch.from_numpy(split.y_test).float(),
    }


def _scaled(x: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (torch.from_numpy(x).float().div_(255) - mean) / std


def add_easy_examples(split: ImbalancedSplit, frac: float, seed: int) -> ImbalancedSplit:
    """Append ``round(frac · n_train)`` easy training rows (class ratio kept).

    Easy = a pixel-space logistic regression fitted on the training rows scores the row
    on its own side of its class's median (positives above the positive median,
    negatives below the negative median); rows are drawn from those pools with
    replacement, so the additions are duplicates of easy training images.
    """
    from sklearn.linear_model import LogisticRegression

    x = split.x_train.reshape(len(split.x_train), -1).astype(np.float32) / 255
    y = split.y_train
    lr = LogisticRegression(C=1.0, max_iter=300)
    lr.fit(x, y)
    s = lr.decision_function(x)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    easy_pos = pos[s[pos] >= np.median(s[pos])]
    easy_neg = neg[s[neg] <= np.median(s[neg])]
    n_add = int(round(frac * len(y)))
    n_pos = max(1, int(round(n_add * len(pos) / len(y))))
    rng = np.random.default_rng([seed, 31])
    add = np.concatenate([rng.choice(easy_pos, n_pos), rng.choice(easy_neg, n_add - n_pos)])
    order = rng.permutation(len(y) + len(add))
    out = dataclasses.replace(split)
    out.x_train = np.concatenate([split.x_train, split.x_train[add]])[order]
    out.y_train = np.concatenate([y, y[add]])[order]
    return out


def flip_labels(split: ImbalancedSplit, frac: float, seed: int) -> ImbalancedSplit:
    """Flip ``round(frac · n_pos)`` positive training labels to 0 and as many negative ones to 1."""
    y = split.y_train.copy()
    rng = np.random.default_rng([seed, 37])
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    k = int(round(frac * len(pos)))
    y[rng.choice(pos, k, replace=False)] = 0
    y[rng.choice(neg, k, replace=False)] = 1
    out = dataclasses.replace(split)
    out.y_train = y
    return out


_DATA_CACHE: dict[tuple, LabelledImages] = {}


def _load(spec: DatasetSpec, cache_dir: str | None) -> LabelledImages:
    key = (spec.name, spec.root, spec.image_size)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # one data set at a time per process keeps memory flat
        _DATA_CACHE[key] = load_benchmark(
            spec.name, root=spec.root, image_size=spec.image_size, cache_dir=cache_dir
        )
    return _DATA_CACHE[key]


def make_split(
    spec: DatasetSpec,
    imratio: float,
    seed: int,
    cache_dir: str | None,
    variant: str = "clean",
    abl: AblationSpec | None = None,
) -> ImbalancedSplit:
    """The seed's imbalanced split of the data set, with the ``easy`` / ``noisy`` variant applied."""
    split = make_imbalanced(_load(spec, cache_dir), imratio, seed, min_positives=spec.min_positives)
    if variant == "easy":
        split = add_easy_examples(split, (abl or AblationSpec()).easy_frac, seed)
    elif variant == "noisy":
        split = flip_labels(split, (abl or AblationSpec()).noise_frac, seed)
    elif variant != "clean":
        raise ValueError(f"unknown data variant {variant!r}")
    return split
