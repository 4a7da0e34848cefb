"""Shared fixtures: a tiny folds table with a resize cache, written without the pipeline."""

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

SIZE = 32


def _image(rng: np.random.Generator, positive: bool) -> np.ndarray:
    img = np.full((SIZE, SIZE, 3), (200, 160, 140), np.uint8) + rng.integers(
        0, 20, (SIZE, SIZE, 3), dtype=np.uint8
    )
    radius = int(rng.integers(9, 13) if positive else rng.integers(4, 8))
    colour = (40, 40, 120) if positive else (60, 90, 140)  # BGR
    cv2.circle(img, (SIZE // 2, SIZE // 2), radius, colour, -1)
    return img


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
        cv2.imwrite(str(cache / str(SIZE) / f"{name}.jpg"), _image(rng, bool(target)))
        fold = -1 if i >= 46 else i % 3
        rows.append(
            dict(
                image_name=name,
                patient_id=f"IP_{i // 2:07d}",
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
        cv2.imwrite(str(cache / str(SIZE) / f"{name}.jpg"), _image(rng, i % 2 == 0))
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


def write_experiment(tiny: dict, name: str, **sections) -> Path:
    """An experiment YAML over ``tiny_data`` with small, fast settings; ``sections`` override."""
    cfg = {
        "name": name,
        "n_folds": 3,
        "data": {
            "train_csv": str(tiny["train_csv"]),
            "test_csv": str(tiny["test_csv"]),
            "cache_dir": str(tiny["cache"]),
            "image_size": SIZE,
        },
        "model": {"backbone": "mobilenetv3_small_050", "pretrained": False, "drop_rate": 0.0},
        "loss": {"name": "ce"},
        "optim": {"name": "adam", "lr": 1e-3},
        "schedule": {"name": "constant", "epochs": 1},
        "train": {"batch_size": 8, "max_steps_per_epoch": 3, "seed": 0},
        "tta": {"dihedral": 8, "batch_size": 16},
        "models_dir": str(tiny["root"] / "models"),
        "preds_dir": str(tiny["root"] / "preds"),
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    path = tiny["root"] / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
