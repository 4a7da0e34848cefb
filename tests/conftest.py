"""Shared fixtures: a tiny folds table with a resize cache, written without the pipeline."""

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from helpers import SIZE, lesion_image


@pytest.fixture
def tiny_data(tmp_path: Path) -> dict:
    """48 training images (3 folds, 12 positives, 2 external rows) and 8 test images, cached at 32 px."""
    rng = np.random.default_rng(0)
    cache = tmp_path / "cache"
    (cache / str(SIZE)).mkdir(parents=True)
    rows = []
    for i in range(48):
        name = f"ISIC_{i:07d}"
        target = int(i % 4 == 0)
        cv2.imwrite(str(cache / str(SIZE) / f"{name}.jpg"), lesion_image(rng, bool(target)))
        fold = -1 if i >= 46 else i % 3
        rows.append(
            dict(
                image_name=name,
                # two images per patient, both in one fold (train and meta refuse a split)
                patient_id=f"IP_{(i // 6) * 3 + i % 3:07d}",
                sex="male",
                age_approx=50.0,
                anatom_site_general_challenge="torso",
                target=target,
                fold=fold,
                source="isic2019" if fold == -1 else "competition",
            )
        )
    train = pd.DataFrame(rows)
    test_rows = []
    for i in range(8):
        name = f"ISIC_{100 + i:07d}"
        cv2.imwrite(str(cache / str(SIZE) / f"{name}.jpg"), lesion_image(rng, i % 2 == 0))
        test_rows.append(
            dict(
                image_name=name,
                patient_id="IP_9",
                sex="female",
                age_approx=40.0,
                anatom_site_general_challenge="torso",
            )
        )
    train.to_csv(tmp_path / "folds.csv", index=False)
    pd.DataFrame(test_rows).to_csv(tmp_path / "test.csv", index=False)
    return {
        "root": tmp_path,
        "train_csv": tmp_path / "folds.csv",
        "test_csv": tmp_path / "test.csv",
        "cache": cache,
    }
