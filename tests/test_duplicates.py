"""Near-duplicate detection: the hash against generated copies and distinct demo lesions,
the hash cache, duplicate groups in one fold and external copies dropped by `folds`.

The full measurement on the default demo set:
    python tests/test_duplicates.py /tmp/demo 1000
(after `python -m deepauc demo-data --out /tmp/demo --seed 42`).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from deepauc.cli import main
from deepauc.data import duplicates as dup

KINDS = ["jpeg q60-95", "resize 0.5-2x", "crop <= 1%", "crop <= 2%", "crop <= 5%", "flip/rotate"]
SMALL_DEMO = (
    "--n-train 300 --n-patients 80 --n-test 60 --n-test-patients 15 --malignant-ratio 0.06 "
    "--n-isic2019 60 --n-isic2018 10 --n-isic2017 5 --n-malignant 10 --workers 1"
).split()


def make_copy(bgr: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A generated near-copy of ``bgr`` as the JPEG bytes a second source would ship."""
    quality = int(rng.integers(60, 96))
    h, w = bgr.shape[:2]
    if kind == "resize 0.5-2x":
        f = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        interp = cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
        bgr = cv2.resize(bgr, (round(w * f), round(h * f)), interpolation=interp)
    elif kind.startswith("crop"):
        frac = rng.uniform(0, float(kind.split("<=")[1].strip(" %")) / 100, 4)
        top, bottom, left, right = (frac * [h, h, w, w]).astype(int)
        bgr = bgr[top : h - bottom, left : w - right]
    elif kind == "flip/rotate":
        k = int(rng.integers(1, 8))
        bgr = bgr.transpose(1, 0, 2) if k >= 4 else bgr
        bgr = bgr[::-1] if k & 1 else bgr
        bgr = bgr[:, ::-1] if k & 2 else bgr
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(bgr), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data


def distinct_images(root: Path) -> list[Path]:
    """Every image under ``root`` once: byte-identical files (the demo's deliberate
    copies) are one image."""
    first: dict[str, Path] = {}
    for path in sorted(root.rglob("*.jpg")):
        first.setdefault(hashlib.blake2b(path.read_bytes()).hexdigest(), path)
    return list(first.values())


def measure(root: Path, n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Per copy kind, the hash distance of n generated copies to their original; and the
    smallest distance (any flip/rotation) of each pair of distinct images."""
    paths = distinct_images(root)
    hashes = dup.hash_images(paths, workers=2)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(paths), min(n, len(paths)), replace=False)
    rows = []
    for kind in KINDS:
        for i in picks:
            data = make_copy(cv2.imread(str(paths[i])), kind, rng)
            copy = dup.pack(dup.dct_signs(cv2.imdecode(data, cv2.IMREAD_GRAYSCALE))[None])
            best = min(
                int(dup.hamming(v, hashes[i : i + 1])[0]) for v in dup.dihedral_variants(copy)
            )
            rows.append({"kind": kind, "distance": best})
    nearest = np.full(len(hashes), 10**6)
    for variant in dup.dihedral_variants(hashes):
        d = dup._distance_table(variant, hashes, slice(None)).astype(np.int64)
        np.fill_diagonal(d, 10**6)
        nearest = np.minimum(nearest, d.min(axis=1))
    return pd.DataFrame(rows), nearest


def recall_table(copies: pd.DataFrame, threshold: int = dup.DEFAULT_THRESHOLD) -> pd.DataFrame:
    return copies.groupby("kind", sort=False)["distance"].agg(
        n="size", max="max", recall=lambda d: float((d <= threshold).mean())
    )


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    assert main(["demo-data", "--out", str(root), "--seed", "7", *SMALL_DEMO]) == 0
    return root


def test_recall_on_copies_and_no_false_pair_among_distinct_demo_lesions(small_demo):
    copies, nearest = measure(small_demo, n=60)
    table = recall_table(copies)
    assert table.loc["jpeg q60-95", "recall"] >= 0.99
    assert table.loc["resize 0.5-2x", "recall"] >= 0.99
    assert table.loc["flip/rotate", "recall"] >= 0.99
    assert table.loc["crop <= 1%", "recall"] >= 0.95
    # distinct lesions: no pair within the threshold, under any flip or rotation
    assert len(nearest) > 400
    assert nearest.min() > dup.DEFAULT_THRESHOLD


def test_pack_unpack_and_flip_variants_are_exact():
    rng = np.random.default_rng(0)
    grey = cv2.GaussianBlur(rng.integers(0, 256, (90, 70), dtype=np.uint8), (9, 9), 3)
    signs = dup.dct_signs(grey)
    words = dup.pack(signs[None])
    assert words.shape == (1, dup.WORDS) and (dup.unpack(words)[0] == signs).all()
    assert dup.from_hex(dup.to_hex(words)).tolist() == words.tolist()
    variants = dup.dihedral_variants(words)
    assert (variants[0] == words).all() and len(variants) == 8
    # a mirrored image's hash is one of the variants (the DCT of a mirrored row negates
    # its odd frequencies exactly)
    for image in (grey[:, ::-1], grey[::-1], grey.T, grey[::-1, ::-1]):
        h = dup.pack(dup.dct_signs(np.ascontiguousarray(image))[None])
        assert min(int(dup.hamming(v, h)[0]) for v in variants) <= 2


def test_close_pairs_same_and_cross():
    rng = np.random.default_rng(1)
    hashes = rng.integers(0, 2**63, (50, dup.WORDS), dtype=np.uint64)
    near = hashes[7].copy()
    near[0] ^= np.uint64(0b1011)  # 3 bits differ
    table = np.vstack([hashes, near[None]])
    assert dup.close_pairs(table, table, threshold=5, same=True).tolist() == [[7, 50]]
    assert dup.close_pairs(near[None], hashes, threshold=5).tolist() == [[0, 7]]
    assert dup.close_pairs(near[None], hashes, threshold=2).tolist() == []


def test_group_labels_union_patients_and_pairs():
    patients = pd.Series(["P3", "P1", "P2", "P2", "P4", "P5"])
    pairs = np.array([[0, 1], [1, 2]])  # P3~P1, P1~P2: one group; P4, P5 alone
    labels = dup.group_labels(patients, pairs)
    assert labels.tolist() == ["P1", "P1", "P1", "P1", "P4", "P5"]
    assert dup.group_labels(patients, np.empty((0, 2), int)).tolist() == patients.tolist()


def test_hash_cache_rehashes_only_changed_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    files = []
    for i in range(3):
        path = tmp_path / f"img{i}.jpg"
        cv2.imwrite(str(path), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
        files.append(path)
    cache = tmp_path / "hashes.csv"
    first = dup.hash_images(files, cache)
    calls = []
    real = dup.image_hash
    monkeypatch.setattr(dup, "image_hash", lambda p: calls.append(Path(p).name) or real(p))
    assert (dup.hash_images(files, cache) == first).all() and calls == []
    cv2.imwrite(str(files[1]), np.zeros((40, 40, 3), np.uint8))
    second = dup.hash_images(files, cache)
    assert calls == ["img1.jpg"]
    assert (second[[0, 2]] == first[[0, 2]]).all() and not (second[1] == first[1]).all()


# ------------------------------------------------------------------ `deepauc folds`


def write_table(root: Path, n_patients: int = 30, per_patient: int = 3) -> pd.DataFrame:
    """A competition table with distinct random-texture images under root/jpeg/train."""
    rng = np.random.default_rng(3)
    (root / "jpeg/train").mkdir(parents=True)
    rows = []
    for p in range(n_patients):
        for k in range(per_patient):
            name = f"ISIC_{p * per_patient + k:07d}"
            noise = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            img = cv2.resize(cv2.GaussianBlur(noise, (7, 7), 2), (96, 72))
            cv2.imwrite(str(root / f"jpeg/train/{name}.jpg"), img)
            rows.append((name, f"IP_{p:07d}", int(k == 0 and p % 3 == 0)))
    df = pd.DataFrame(rows, columns=["image_name", "patient_id", "target"])
    df["sex"], df["age_approx"], df["anatom_site_general_challenge"] = "male", 50.0, "torso"
    df["diagnosis"] = np.where(df["target"] == 1, "melanoma", "nevus")
    df["benign_malignant"] = np.where(df["target"] == 1, "malignant", "benign")
    return df


def run_folds(root: Path, table: pd.DataFrame, *extra: str) -> pd.DataFrame:
    table.to_csv(root / "table.csv", index=False)
    args = ["folds", "--train-csv", str(root / "table.csv"), "--out", str(root / "folds.csv")]
    assert (
        main([*args, "--n-folds", "5", "--seed", "0", "--report", str(root / "r.md"), *extra]) == 0
    )
    return pd.read_csv(root / "folds.csv").set_index("image_name")


def test_published_pair_across_patients_shares_a_fold(tmp_path):
    table = write_table(tmp_path)
    pairs = [(f"ISIC_{3 * p:07d}", f"ISIC_{3 * p + 31:07d}") for p in range(0, 10)]
    pd.DataFrame(pairs, columns=dup.PUBLISHED_COLUMNS).to_csv(tmp_path / "dups.csv", index=False)
    plain = run_folds(tmp_path, table)
    split = sum(plain.loc[a, "fold"] != plain.loc[b, "fold"] for a, b in pairs)
    assert split > 0  # without the list, such pairs land in different folds
    folds = run_folds(tmp_path, table, "--duplicates-csv", str(tmp_path / "dups.csv"))
    assert all(folds.loc[a, "fold"] == folds.loc[b, "fold"] for a, b in pairs)
    # patients stay whole as before
    assert (folds.groupby("patient_id")["fold"].nunique() == 1).all()
    assert (
        "groups of several patients joined by duplicates (one fold each): 10"
        in (tmp_path / "r.md").read_text()
    )


def test_reencoded_copy_joins_folds_and_external_copy_is_dropped(tmp_path, capsys):
    table = write_table(tmp_path)
    rng = np.random.default_rng(4)
    img = cv2.imread(str(tmp_path / "jpeg/train/ISIC_0000001.jpg"))
    # a re-encoded, resized copy under another patient, and one as an external image
    for name in ("ISIC_0000040", "ISIC_9000000"):
        data = make_copy(img, "resize 0.5-2x", rng)
        (tmp_path / f"jpeg/train/{name}.jpg").write_bytes(data.tobytes())
    ext = table.iloc[:2].copy()
    ext["image_name"] = ["ISIC_9000000", "ISIC_9000001"]
    cv2.imwrite(
        str(tmp_path / "jpeg/train/ISIC_9000001.jpg"), rng.integers(0, 256, (50, 50, 3), np.uint8)
    )
    ext["patient_id"], ext["source"] = ["X1", "X2"], "isic2019"
    table["source"] = "competition"
    table["tfrecord"] = 0
    table.loc[table["image_name"] == "ISIC_0000050", "tfrecord"] = -1
    ext["tfrecord"] = 0
    merged = pd.concat([table, ext], ignore_index=True)
    folds = run_folds(tmp_path, merged, "--image-root", str(tmp_path))
    assert folds.loc["ISIC_0000001", "fold"] == folds.loc["ISIC_0000040", "fold"]
    assert "ISIC_9000000" not in folds.index and "ISIC_9000001" in folds.index
    assert "ISIC_0000050" not in folds.index
    report = (tmp_path / "r.md").read_text()
    assert "external images that copy a competition image, dropped: 1" in report
    assert "| ISIC_9000000 | isic2019 | ISIC_0000001 |" in report
    assert "rows marked tfrecord == -1 (a duplicate), dropped: 1" in report

    (tmp_path / "jpeg/train/ISIC_0000003.jpg").unlink()
    out = str(tmp_path / "folds2.csv")
    args = ["--train-csv", str(tmp_path / "table.csv"), "--out", out, "--image-root", str(tmp_path)]
    assert main(["folds", *args]) == 1
    assert "1 image file(s) not found" in capsys.readouterr().err


if __name__ == "__main__":
    copies, nearest = measure(Path(sys.argv[1]), int(sys.argv[2]))
    print(recall_table(copies).to_string())
    print(f"distinct images: {len(nearest)}, smallest distance to another: {nearest.min()}")
    print(
        f"distinct pairs within {dup.DEFAULT_THRESHOLD}: {int((nearest <= dup.DEFAULT_THRESHOLD).sum())} images"
    )


def test_hash_cache_sees_a_same_size_replacement_with_its_time_restored(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    path = tmp_path / "img.bmp"

    def write(seed_img):  # BMP: the same side always gives the same byte size
        ok, data = cv2.imencode(".bmp", seed_img)
        path.write_bytes(data.tobytes())

    noise = cv2.GaussianBlur(rng.integers(0, 256, (64, 64), dtype=np.uint8), (0, 0), 4)
    write(noise)
    cache = tmp_path / "hashes.csv"
    first = dup.hash_images([path], cache)
    before = path.stat()
    write(np.ascontiguousarray(noise[::-1]))  # another picture, same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # as `touch -r` does
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    calls = []
    real = dup.image_hash
    monkeypatch.setattr(dup, "image_hash", lambda p: calls.append(p) or real(p))
    second = dup.hash_images([path], cache)
    assert calls == [str(path)] and not (second == first).all()
    os.utime(path)  # touched only: the bytes are read for their digest, not hashed again
    assert (dup.hash_images([path], cache) == second).all() and calls == [str(path)]
    row = pd.read_csv(cache).iloc[0]
    assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
