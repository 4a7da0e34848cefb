"""Torch datasets over the resize cache, and the device-side normalisation."""

from __future__ import annotations

import functools
import zlib

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from deepauc.data.image_cache import load_cached

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A per-(run, epoch, row) augmentation seed: the same whatever the worker count."""
    return zlib.crc32(f"{seed}/{epoch}/{index}".encode()) & 0x7FFFFFFF


class CachedImages(Dataset):
    """Rows of a table read from the resize cache, optionally augmented.

    Items are ``(uint8 tensor C×H×W, float target)``. Augmentation randomness is seeded
    per row from ``(seed, epoch, index)``, so a run is reproducible and resumable at any
    epoch regardless of ``num_workers``; call :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self, table: pd.DataFrame, cache_dir: str, size: int, transform=None, seed: int = 0
    ) -> None:
        self.names = table["image_name"].astype(str).tolist()
        self.targets = (
            table["target"].to_numpy(np.float32)
            if "target" in table
            else np.zeros(len(table), np.float32)
        )
        self.cache_dir, self.size, self.transform, self.seed = cache_dir, size, transform, seed
        self.epoch = 0
        cv2.setNumThreads(0)  # one decode per worker; OpenCV's own pool would oversubscribe

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int):
        img = load_cached(self.cache_dir, self.size, self.names[i])
        if self.transform is not None:
            img = self.augmented(img, self.epoch, i)
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), self.targets[i]

    def augmented(self, img: np.ndarray, epoch: int, i: int) -> np.ndarray:
        """Row ``i``'s image as augmented in ``epoch`` (HWC uint8)."""
        self.transform.set_random_seed(item_seed(self.seed, epoch, i))
        return self.transform(image=img)["image"]


class ImageAndCopies(CachedImages):
    """Each row decoded once: its image and ``n_copies`` augmented copies of it.

    Items are ``(uint8 tensor (1 + n_copies)×C×H×W, float target)``; copy ``c`` is the
    augmentation :class:`CachedImages` gives at epoch ``first_epoch + c``, so the copies
    are those of ``n_copies`` passes over the table at a fraction of the decoding.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        cache_dir: str,
        size: int,
        transform=None,
        seed: int = 0,
        n_copies: int = 0,
        first_epoch: int = 0,
    ) -> None:
        if n_copies and transform is None:
            raise ValueError("augmented copies need a transform")
        super().__init__(table, cache_dir, size, transform, seed)
        self.n_copies, self.first_epoch = n_copies, first_epoch

    def __getitem__(self, i: int):
        img = load_cached(self.cache_dir, self.size, self.names[i])
        views = [img] + [self.augmented(img, self.first_epoch + c, i) for c in range(self.n_copies)]
        stacked = np.stack(views).transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(stacked)), self.targets[i]


@functools.cache
def normalisation_tensors(
    device: torch.device, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet (mean, std) as (1, 3, 1, 1) tensors on ``device``, built once per device.

    Building them per batch would cost two blocking host-to-device copies a step.
    """
    mean = torch.tensor(IMAGENET_MEAN, dtype=dtype, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=dtype, device=device).view(1, 3, 1, 1)
    return mean, std


def to_device_batch(
    x: torch.Tensor, device: torch.device, channels_last: bool = True
) -> torch.Tensor:
    """uint8 (B, C, H, W) -> normalised float32 on ``device`` (ImageNet mean/std)."""
    x = x.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    mean, std = normalisation_tensors(x.device)  # x.device names the index: cuda:0, not cuda
    return (x.float() - mean) / std
