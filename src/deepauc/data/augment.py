"""Training augmentation (albumentations, on uint8 images in the loader workers) and the
test-time dihedral views (torch, on the device).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import albumentations as A


@dataclass
class AugmentConfig:
    """Probabilities and ranges of the training augmentations (paper: flip, rotate,
    scale, shear, coarse dropout; colour jitter is an extension)."""

    hflip: float = 0.5
    vflip: float = 0.5
    affine: float = 0.7
    rotate: float = 180.0  # degrees, ±; dermoscopy has no canonical orientation
    scale: tuple[float, float] | list[float] = (0.85, 1.15)
    shear: float = 10.0  # degrees, ±
    coarse_dropout: float = 0.3
    dropout_holes: int = 4
    dropout_size: float = 0.12  # hole side as a fraction of the image side
    brightness_contrast: float = 0.3
    hue_saturation: float = 0.0

    def validate(self) -> None:
        for name in [
            "hflip",
            "vflip",
            "affine",
            "coarse_dropout",
            "brightness_contrast",
            "hue_saturation",
        ]:
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"augment.{name} is a probability, got {getattr(self, name)}")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(
                f"augment.scale must be [low, high] with 0 < low <= high, got {self.scale}"
            )
        if not 0 < self.dropout_size < 1 or self.dropout_holes < 1:
            raise ValueError("augment.dropout_size must lie in (0, 1) and dropout_holes be >= 1")


def build_train_transform(cfg: AugmentConfig) -> A.Compose:
    """The albumentations pipeline for training images (uint8 RGB in, uint8 RGB out).

    albumentations is imported here, not at module level, so that the modules that only
    need the config or the dihedral views (predict without random views, the device
    check) import where it is not installed.
    """
    import albumentations as A

    ops = [
        A.HorizontalFlip(p=cfg.hflip),
        A.VerticalFlip(p=cfg.vflip),
        A.Affine(
            scale=tuple(cfg.scale),
            rotate=(-cfg.rotate, cfg.rotate),
            shear=(-cfg.shear, cfg.shear),
            border_mode=4,  # cv2.BORDER_REFLECT_101: no black corners for the network to key on
            p=cfg.affine,
        ),
    ]
    if cfg.brightness_contrast:
        ops.append(A.RandomBrightnessContrast(0.15, 0.15, p=cfg.brightness_contrast))
    if cfg.hue_saturation:
        ops.append(A.HueSaturationValue(8, 12, 8, p=cfg.hue_saturation))
    if cfg.coarse_dropout:
        size = (cfg.dropout_size / 2, cfg.dropout_size)
        ops.append(
            A.CoarseDropout(
                num_holes_range=(1, cfg.dropout_holes),
                hole_height_range=size,
                hole_width_range=size,
                p=cfg.coarse_dropout,
            )
        )
    return A.Compose(ops)


def dihedral_views(x: torch.Tensor, n_views: int = 8) -> torch.Tensor:
    """Stack the first ``n_views`` of the 8 symmetries of the square along the batch.

    ``x`` is (B, C, H, W); the result is (n_views·B, C, H, W) ordered view-major:
    identity, rot90, rot180, rot270, then the same four after a horizontal flip.
    """
    if not 1 <= n_views <= 8:
        raise ValueError(f"n_views must be in 1..8, got {n_views}")
    views = []
    for k in range(n_views):
        v = x.flip(-1) if k >= 4 else x
        views.append(torch.rot90(v, k % 4, dims=(-2, -1)) if k % 4 else v)
    return torch.cat(views, 0)
