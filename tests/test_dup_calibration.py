"""The near-duplicate search on real photographs (ELPV solar cells, scikit-image samples):
few pairs of distinct images called copies, no chain past the bound, real copies found.

The full table: python bench/duplicate_calibration.py (docs/duplicates.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from deepauc.data import duplicates as dup
from deepauc.research import dup_calibration as cal

N_CELLS = 400  # the first 400 ELPV cells: about a second to load and hash
MAX_FALSE_PAIR_RATE = 5e-4


@pytest.fixture(scope="module")
def cells() -> list[np.ndarray]:
    return cal.elpv_images(N_CELLS)


def test_distinct_cells_rarely_called_copies_and_never_chained(cells):
    assert len(cells) == N_CELLS and cells[0].shape == (300, 300)
    row = cal.false_pairs("elpv", cells, [cal.NEW])[0]
    assert row["pairs compared"] == N_CELLS * (N_CELLS - 1) // 2
    assert row["false-pair rate"] <= MAX_FALSE_PAIR_RATE
    assert row["largest group"] <= dup.MIN_GROUP_BOUND


def test_real_reencoded_and_resized_copies_are_found(cells):
    photos = cal.skimage_photos()
    assert len(photos) >= 10
    for name, images in (("elpv", cells), ("skimage-photos", photos)):
        rows = cal.recall(name, images, [cal.NEW], n=20, seed=1)
        by_kind = {r["copy"]: r["recall"] for r in rows}
        assert by_kind["jpeg q60-95"] == 1.0, (name, by_kind)
        assert by_kind["resize 0.5-2x"] >= 0.95, (name, by_kind)
        assert by_kind["flip/rotate"] >= 0.95, (name, by_kind)


def test_a_copy_confirmed_through_the_file_path(tmp_path, cells):
    """The pipeline's own route: files, hashes, candidate pairs, thumbnail confirmation."""
    import cv2

    paths = []
    for i in range(40):
        paths.append(str(tmp_path / f"cell{i}.png"))
        cv2.imwrite(paths[-1], cells[i])
    copy = cv2.resize(cells[7], (200, 200), interpolation=cv2.INTER_AREA)[:, ::-1]
    paths.append(str(tmp_path / "copy.jpg"))
    cv2.imwrite(paths[-1], copy, [cv2.IMWRITE_JPEG_QUALITY, 70])
    hashes = dup.hash_images(paths, workers=1)
    is_comp = np.ones(len(paths), dtype=bool)
    candidates = dup.table_pairs(hashes, is_comp, variants=True)
    kept, _ = dup.confirmed_pairs(paths, candidates, workers=1)
    assert [7, 40] in kept.tolist()
