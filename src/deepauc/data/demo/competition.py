"""Demo competition train and test sets (the 2020 layout): rows and images."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from deepauc.data.demo.images import draw_looks, patient_style
from deepauc.data.demo.patients import competition_table, draw_images_per_patient, unique_ids
from deepauc.data.demo.sizes import DemoSizes
from deepauc.data.demo.writer import ImageWriter


@dataclasses.dataclass
class Competition:
    """The competition rows, the train images' bytes and the ids left for other sets."""

    train: pd.DataFrame
    test: pd.DataFrame
    train_bytes: dict[str, bytes]
    spare_names: np.ndarray  # unused ISIC names / patient ids, for the malignant set
    spare_patients: np.ndarray


def write_competition(
    rng: np.random.Generator, sizes: DemoSizes, writer: ImageWriter
) -> Competition:
    """Competition train and test rows (disjoint patients) and their images."""
    side = sizes.image_size
    n_names = sizes.n_train + sizes.n_test + sizes.n_malignant
    names = np.array(
        [f"ISIC_{i:07d}" for i in unique_ids(rng, n_names, 100_000, 10_000_000)], dtype=object
    )
    n_pat = sizes.n_patients + sizes.n_test_patients + sizes.n_malignant
    pids = np.array([f"IP_{i:07d}" for i in unique_ids(rng, n_pat, 0, 10_000_000)], dtype=object)
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
        looks = draw_looks(rng, df["target"].to_numpy())
        jobs = [(i, looks[i], styles[p]) for i, p in enumerate(df["patient_idx"])]
        for name, data in zip(df["image_name"], writer.render_many(stream, jobs)):
            writer.write(f"jpeg/{split}/{name}.jpg", data)
            if split == "train":
                bytes_of[name] = data
        frames[split] = df
    return Competition(
        frames["train"], frames["test"], bytes_of, names[start_img:], pids[start_pat:]
    )
