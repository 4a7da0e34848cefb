"""Candidate pairs confirmed by thumbnail correlation, the bound on chained groups and the
checked `--dup-threshold`."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from deepauc.cli import main
from deepauc.data import duplicates as dup
from deepauc.data import folds


def texture(seed: int, side: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (side, side), dtype=np.uint8), (0, 0), 2)


def jpeg(grey: np.ndarray, quality: int = 70) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(grey), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)


def test_flipped_reencoded_copy_correlates_under_its_matched_flip_only():
    original = texture(0)
    for variant in range(1, 8):
        copy = jpeg(dup.dihedral_image(original, variant))
        h = dup.pack(np.stack([dup.dct_signs(original), dup.dct_signs(copy)]))
        found = dup.close_pairs_with_variant(h[1:], h[:1], dup.DEFAULT_THRESHOLD)
        assert len(found) == 1
        thumbs = np.stack([dup.thumbnail(original), dup.thumbnail(copy)])
        matched = dup.similarity(thumbs[1:], thumbs[:1], found[:, 2])
        assert matched[0] >= dup.DEFAULT_MIN_SIMILARITY
        # the copy under no flip (or the wrong one) is not the original
        assert dup.similarity(thumbs[1:], thumbs[:1], np.array([0]))[0] < 0.5
    other = dup.thumbnail(texture(1))
    assert abs(float(np.sum(other * dup.thumbnail(original)))) < 0.3


def test_thumbnail_is_zero_mean_unit_norm_and_flat_image_is_zero():
    t = dup.thumbnail(texture(2))
    assert abs(float(t.mean())) < 1e-5 and abs(float(np.linalg.norm(t)) - 1) < 1e-5
    assert not dup.thumbnail(np.full((40, 40), 90, np.uint8)).any()


def test_confirmed_pairs_drop_a_hash_match_whose_pixels_differ(tmp_path):
    a, b = texture(3), texture(4)
    paths = []
    for name, img in (("a", a), ("a_copy", jpeg(a[::-1])), ("b", b)):
        paths.append(str(tmp_path / f"{name}.png"))
        cv2.imwrite(paths[-1], img)
    # candidates as a loose hash search would give them: a true copy and a look-alike
    candidates = np.array([[1, 0, 2], [2, 0, 0]])
    kept, r = dup.confirmed_pairs(paths, candidates, dup.DEFAULT_MIN_SIMILARITY, workers=1)
    assert kept.tolist() == [[1, 0]]
    assert r[0] >= dup.DEFAULT_MIN_SIMILARITY > r[1]


def chained_table(n_patients: int) -> pd.DataFrame:
    rows = [(f"ISIC_{i:07d}", f"IP_{i:03d}", int(i % 3 == 0)) for i in range(n_patients)]
    return pd.DataFrame(rows, columns=["image_name", "patient_id", "target"])


def test_a_chain_past_the_bound_is_a_named_error_listing_the_largest_group(tmp_path):
    table = chained_table(40)
    chain = [(f"ISIC_{i:07d}", f"ISIC_{i + 1:07d}") for i in range(11)]  # 12 patients
    pairs = tmp_path / "dups.csv"
    pd.DataFrame(chain, columns=dup.PUBLISHED_COLUMNS).to_csv(pairs, index=False)
    assert dup.group_bound(40) == 8 and dup.group_bound(2000) == 20
    with pytest.raises(dup.DuplicateChainError) as err:
        folds.resolve_duplicates(table, duplicates_csv=pairs)
    text = str(err.value)
    assert "\n" not in text
    assert "12 patients / 12 images" in text and "ISIC_0000000" in text
    assert "past 8 patients" in text and "--dup-threshold (now 24)" in text
    # a chain within the bound, or a raised bound, is joined as before
    _, groups, _ = folds.resolve_duplicates(table, duplicates_csv=pairs, max_group=12)
    assert groups.nunique() == 40 - 11
    short = tmp_path / "short.csv"
    pd.DataFrame(chain[:7], columns=dup.PUBLISHED_COLUMNS).to_csv(short, index=False)
    _, groups, _ = folds.resolve_duplicates(table, duplicates_csv=short)
    assert groups.value_counts().max() == 8


def test_chain_error_is_one_line_from_the_cli(tmp_path, capsys):
    table = chained_table(40)
    table["sex"], table["age_approx"], table["anatom_site_general_challenge"] = "male", 50, "torso"
    table["diagnosis"] = np.where(table["target"] == 1, "melanoma", "nevus")
    table["benign_malignant"] = np.where(table["target"] == 1, "malignant", "benign")
    table.to_csv(tmp_path / "t.csv", index=False)
    chain = [(f"ISIC_{i:07d}", f"ISIC_{i + 1:07d}") for i in range(20)]
    pd.DataFrame(chain, columns=dup.PUBLISHED_COLUMNS).to_csv(tmp_path / "d.csv", index=False)
    args = ["folds", "--train-csv", str(tmp_path / "t.csv"), "--out", str(tmp_path / "f.csv")]
    assert main([*args, "--duplicates-csv", str(tmp_path / "d.csv")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "21 patients" in err
    assert not (tmp_path / "f.csv").exists()


@pytest.mark.parametrize(
    "value, words",
    [("65", "0..64"), ("-1", "0..64"), ("2.5", "not an integer"), ("x", "not an integer")],
)
def test_dup_threshold_is_checked(tmp_path, capsys, value, words):
    args = ["folds", "--train-csv", "t.csv", "--out", str(tmp_path / "f.csv")]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--dup-threshold", value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--dup-threshold" in err and words in err


def test_threshold_and_similarity_checks_in_the_api():
    assert folds.check_threshold(0) == 0 and folds.check_threshold(64) == 64
    for bad in (True, 24.0, "24", 65):
        with pytest.raises(ValueError, match="--dup-threshold"):
            folds.check_threshold(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="--dup-min-similarity"):
        folds.check_similarity(1.5)
