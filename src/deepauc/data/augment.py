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
    # the 1st-place SIIM-ISIC set, each off at 0 (probabilities); their shift-scale-rotate,
    # HSV and cutout are ``affine``, ``hue_saturation`` and ``coarse_dropout`` above
    blur: float = 0.0  # one of motion, median and Gaussian blur, kernel up to 5
    noise: float = 0.0  # Gaussian noise, sd 2-8% of the range
    distortion: float = 0.0  # one of optical, grid and elastic distortion
    clahe: float = 0.0  # contrast-limited adaptive histogram equalisation
    hair: float = 0.0  # 1..hair_count dark hairs drawn across the image
    hair_count: int = 6

    def validate(self) -> None:
        for name in [
            "hflip",
            "vflip",
            "affine",
            "coarse_dropout",
            "brightness_contrast",
            "hue_saturation",
            *EXTRA_AUGMENTATIONS,
        ]:
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"augment.{name} is a probability, got {getattr(self, name)}")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(
                f"augment.scale must be [low, high] with 0 < low <= high, got {self.scale}"
            )
        if not 0 < self.dropout_size < 1 or self.dropout_holes < 1:
            raise ValueError("augment.dropout_size must lie in (0, 1) and dropout_holes be >= 1")
        if self.hair_count < 1:
            raise ValueError(f"augment.hair_count must be >= 1, got {self.hair_count}")


# the augmentations added after the first recipes, each off at 0 (and then left out of a
# run's fingerprint, so runs that do not use them keep theirs)
EXTRA_AUGMENTATIONS = ["blur", "noise", "distortion", "clahe", "hair"]


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
    ops += _extra_ops(cfg)
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


def _extra_ops(cfg: AugmentConfig) -> list:
    """The optional blur, noise, distortion, CLAHE and hair steps that are switched on."""
    import albumentations as A

    from deepauc.data.hair import DrawHair

    ops: list = []
    if cfg.blur:
        blurs = [A.MotionBlur(blur_limit=5), A.MedianBlur(blur_limit=5), A.GaussianBlur((3, 5))]
        ops.append(A.OneOf(blurs, p=cfg.blur))
    if cfg.noise:
        ops.append(A.GaussNoise(std_range=(0.02, 0.08), p=cfg.noise))
    if cfg.distortion:
        warps = [
            A.OpticalDistortion(distort_limit=0.5, border_mode=4),
            A.GridDistortion(num_steps=5, distort_limit=0.3, border_mode=4),
            A.ElasticTransform(alpha=3, border_mode=4),
        ]
        ops.append(A.OneOf(warps, p=cfg.distortion))
    if cfg.clahe:
        ops.append(A.CLAHE(clip_limit=4.0, p=cfg.clahe))
    if cfg.hair:
        ops.append(DrawHair(max_hairs=cfg.hair_count, p=cfg.hair))
    return ops


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
