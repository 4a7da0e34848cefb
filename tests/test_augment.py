"""The optional training augmentations on a real photograph (scikit-image's sample): each one
changes the image when on, none is in the pipeline when off, and the config refuses bad values."""

import cv2
import numpy as np
import pytest

from deepauc.config import ConfigError
from deepauc.data.augment import EXTRA_AUGMENTATIONS, AugmentConfig, build_train_transform

ALL_OFF = dict(hflip=0.0, vflip=0.0, affine=0.0, coarse_dropout=0.0, brightness_contrast=0.0)


@pytest.fixture(scope="module")
def photo():
    from skimage import data

    return cv2.resize(data.astronaut(), (96, 96), interpolation=cv2.INTER_AREA)


def _names(cfg):
    return [type(op).__name__ for op in build_train_transform(cfg).transforms]


def test_extras_are_left_out_when_off():
    assert _names(AugmentConfig()) == [
        "HorizontalFlip",
        "VerticalFlip",
        "Affine",
        "RandomBrightnessContrast",
        "CoarseDropout",
    ]
    on = _names(AugmentConfig(**{k: 0.5 for k in EXTRA_AUGMENTATIONS}))
    assert on == [
        "HorizontalFlip",
        "VerticalFlip",
        "Affine",
        "OneOf",
        "GaussNoise",
        "OneOf",
        "CLAHE",
        "DrawHair",
        "RandomBrightnessContrast",
        "CoarseDropout",
    ]


@pytest.mark.parametrize("name", EXTRA_AUGMENTATIONS)
def test_each_extra_changes_a_photo_and_keeps_its_form(photo, name):
    transform = build_train_transform(AugmentConfig(**ALL_OFF, **{name: 1.0}))
    transform.set_random_seed(3)
    out = transform(image=photo)["image"]
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - photo).mean() > 0.5
    transform.set_random_seed(3)
    assert np.array_equal(transform(image=photo)["image"], out)  # seeded: reproducible


def test_hairs_are_thin_dark_curves(photo):
    from deepauc.data.hair import DrawHair

    hair = DrawHair(max_hairs=3, p=1.0)
    hair.set_random_seed(0)
    out = hair(image=photo)["image"]
    changed = np.abs(out.astype(int) - photo).sum(axis=2) > 0
    assert 0.005 < changed.mean() < 0.15  # lines, not patches
    assert out[changed].mean() < photo[changed].mean()  # darker where drawn
    with pytest.raises(ValueError, match="max_hairs must be >= 1"):
        DrawHair(max_hairs=0)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"blur": 1.5}, "augment.blur is a probability"),
        ({"hair": -0.1}, "augment.hair is a probability"),
        ({"hair_count": 0}, "augment.hair_count must be >= 1"),
    ],
)
def test_bad_values_name_the_key(override, message):
    from deepauc.config import from_dict

    with pytest.raises(ConfigError, match=message):
        from_dict(AugmentConfig, override, "augment")


def test_extras_enter_the_fingerprint_only_when_on():
    from deepauc.pipeline.experiment import load_experiment

    path = "configs/demo/ce_lite0_64.yaml"
    base = load_experiment(path).fingerprint()
    assert load_experiment(path, ["augment.blur=0.0"]).fingerprint() == base
    assert load_experiment(path, ["augment.blur=0.3"]).fingerprint() != base
    assert load_experiment(path, ["augment.hair=0.3", "augment.hair_count=4"]).fingerprint() != (
        load_experiment(path, ["augment.hair=0.3"]).fingerprint()
    )
