"""Damaged inputs give a named error or a correct result, never another exception or a
stray write.

Seeded random byte flips, truncations, insertions and header mutations of competition-
layout CSVs (train.csv, test.csv, sample_submission.csv, the external tables) and of
JPEGs go through every reader. Each case must either return a table that passes the
reader's own checks (or a correctly shaped image), or raise an error the command line
reports as one line (ValueError, KeyError, OSError) whose message names the file; and
no file outside the output folder may appear or change.
"""

import functools
import random
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from deepauc.data.external.sources import load_competition, load_isic2019, load_malignant
from deepauc.data.image_cache import cache_path
from deepauc.data.image_decode import resize_image
from deepauc.data.image_header import image_size
from deepauc.data.resize import resize_table
from deepauc.data.tables import (
    AGE_RANGE,
    SEXES,
    SITES_2020,
    read_csv_table,
    read_sample_submission,
    read_test_csv,
    read_train_csv,
)

NAMED = (ValueError, KeyError, OSError)  # what deepauc.cli turns into one line
TRAIN = [
    "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target",
    "ISIC_2637011,IP_7279968,male,45.0,head/neck,unknown,benign,0",
    "ISIC_0015719,IP_3075186,female,45.0,upper extremity,unknown,benign,0",
    "ISIC_0052212,IP_2842074,female,50.0,lower extremity,nevus,benign,0",
    "ISIC_0068279,IP_6890425,female,45.0,head/neck,unknown,benign,0",
    "ISIC_0074268,IP_8723313,female,55.0,upper extremity,unknown,benign,0",
    "ISIC_0074311,IP_2950485,female,40.0,lower extremity,unknown,benign,0",
    "ISIC_0074542,IP_4698288,male,25.0,lower extremity,unknown,benign,0",
    "ISIC_0075663,IP_6017204,female,35.0,torso,unknown,benign,0",
    "ISIC_0075914,IP_7622888,male,30.0,torso,unknown,benign,0",
    "ISIC_0076262,IP_5075533,female,50.0,lower extremity,unknown,benign,0",
    "ISIC_0149568,IP_0962375,female,55.0,upper extremity,melanoma,malignant,1",
    "ISIC_0080817,IP_3470787,male,,,unknown,benign,0",
]
TEST = [
    "image_name,patient_id,sex,age_approx,anatom_site_general_challenge",
    "ISIC_0052060,IP_3579794,male,70.0,",
    "ISIC_0052349,IP_7782715,male,40.0,lower extremity",
    "ISIC_0058510,IP_7960270,female,55.0,torso",
    "ISIC_0073313,IP_6375035,female,50.0,torso",
    "ISIC_0073502,IP_0589375,female,45.0,lower extremity",
]
SUBMISSION = ["image_name,target"] + [row.split(",")[0] + ",0" for row in TEST[1:]]
CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
GROUND_TRUTH = [
    "image," + ",".join(CLASSES),
    "ISIC_0000000,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0",
    "ISIC_0000001,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0",
    "ISIC_0000002,0.0,0.0,0.0,0.0,1.0,0.0,0.0,0.0,0.0",
]
METADATA = [
    "image,age_approx,anatom_site_general,lesion_id,sex",
    "ISIC_0000000,55.0,anterior torso,BCN_0000001,male",
    "ISIC_0000001,,head/neck,,female",
    "ISIC_0000002,30.0,,HAM_0000001,",
]
MALIGNANT = [TRAIN[0], TRAIN[11], "ISIC_2000001,,male,65.0,torso,,malignant,1"]
GARBAGE = [
    b"\x00",
    b"\xff",
    b"\xe9",
    b'"',
    b",",
    b"\n",
    b"\r",
    b"\r\n",
    b";",
    b"\t",
    b"\xef\xbb\xbf",
]


def _mutate_text(data: bytes, rng: random.Random) -> bytes:
    """One random damage: a byte flip, a cut, an insertion, or a header mutation."""
    kind = rng.choice(["flip", "cut", "insert", "header", "header", "swap_lines"])
    pos = rng.randrange(len(data))
    if kind == "flip":
        return data[:pos] + bytes([rng.randrange(256)]) + data[pos + 1 :]
    if kind == "cut":
        return data[:pos]
    if kind == "insert":
        return data[:pos] + rng.choice(GARBAGE) * rng.randint(1, 3) + data[pos:]
    if kind == "swap_lines":
        lines = data.split(b"\n")
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
        return b"\n".join(lines)
    header, _, rest = data.partition(b"\n")
    names = header.split(b",")
    i = rng.randrange(len(names))
    action = rng.choice(["drop", "duplicate", "rename", "case", "space", "empty"])
    if action == "drop":
        del names[i]
    elif action == "duplicate":
        names.insert(rng.randrange(len(names) + 1), names[i])
    elif action == "rename":
        names[i] = names[i][:-1] + bytes([rng.randrange(97, 123)])
    elif action == "case":
        names[i] = names[i].upper()
    elif action == "space":
        names[i] = b" " + names[i] + b" "
    else:
        names[i] = b""
    return b",".join(names) + b"\n" + rest


def _snapshot(folder: Path, but: Path | None = None) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file under ``folder`` outside ``but``."""
    seen = {}
    for p in folder.rglob("*"):
        if p.is_file() and (but is None or but not in p.parents):
            st = p.stat()
            seen[str(p)] = (st.st_size, st.st_mtime_ns)
    return seen


def _expect_named(call, path: Path):
    """``call()``; a raised error must be a NAMED one whose message names ``path``."""
    try:
        return call()
    except NAMED as err:
        text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        assert path.name in text, f"{type(err).__name__} without the file name: {text}"
        return None


def _check_table(df: pd.DataFrame, columns: list[str]) -> None:
    """What every validated competition table guarantees."""
    assert set(columns) <= set(df.columns)
    names = df["image_name"]
    assert names.notna().all() and names.is_unique and (names.str.strip() != "").all()
    if "target" in df.columns and "benign_malignant" in df.columns:
        assert set(df["target"]) <= {0, 1}
    if "age_approx" in df.columns:
        age = df["age_approx"].dropna()
        assert ((age >= AGE_RANGE[0]) & (age <= AGE_RANGE[1])).all()
    if "sex" in df.columns:
        assert df["sex"].dropna().isin(SEXES).all()
    if "anatom_site_general_challenge" in df.columns:
        assert df["anatom_site_general_challenge"].dropna().isin(SITES_2020).all()


READER_ARGS = {read_csv_table: (["image_name"],)}
TABLE_READERS = {
    "train.csv": (TRAIN, [read_train_csv, read_csv_table]),
    "test.csv": (TEST, [read_test_csv]),
    "sample_submission.csv": (SUBMISSION, [read_sample_submission]),
}


@pytest.mark.parametrize("file_name", list(TABLE_READERS))
def test_table_readers_on_damaged_csvs(tmp_path, file_name):
    lines, readers = TABLE_READERS[file_name]
    clean = ("\n".join(lines) + "\n").encode()
    rng = random.Random(f"tables {file_name}")
    path = tmp_path / file_name
    outcomes = {"read": 0, "refused": 0}
    for case in range(120):
        data = clean
        for _ in range(rng.choice([1, 1, 2, 3])):
            data = _mutate_text(data, rng) or data
        path.write_bytes(data)
        before = _snapshot(tmp_path)
        for reader in readers:
            df = _expect_named(functools.partial(reader, path, *READER_ARGS.get(reader, ())), path)
            outcomes["read" if df is not None else "refused"] += 1
            if df is not None and reader is not read_csv_table:
                _check_table(df, lines[0].split(","))
        assert _snapshot(tmp_path) == before, f"case {case} wrote a file"
    print(file_name, outcomes)
    assert outcomes["read"] and outcomes["refused"], outcomes


def _tiny_jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    cv2.imwrite(str(path), img)


def _external_folders(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    """The competition, ISIC 2019 and malignant folders: name -> (folder, its fuzzed csv)."""
    root = tmp_path / "raw"
    for i, row in enumerate(TRAIN[1:]):
        _tiny_jpeg(root / "jpeg" / "train" / f"{row.split(',')[0]}.jpg", i)
    (root / "train.csv").write_text("\n".join(TRAIN) + "\n")
    d19 = tmp_path / "isic2019"
    for i in range(3):
        _tiny_jpeg(d19 / "ISIC_2019_Training_Input" / f"ISIC_000000{i}.jpg", 50 + i)
    (d19 / "ISIC_2019_Training_GroundTruth.csv").write_text("\n".join(GROUND_TRUTH) + "\n")
    (d19 / "ISIC_2019_Training_Metadata.csv").write_text("\n".join(METADATA) + "\n")
    dm = tmp_path / "malignant"
    for i, row in enumerate(MALIGNANT[1:]):
        _tiny_jpeg(dm / "jpeg" / f"{row.split(',')[0]}.jpg", 90 + i)
    (dm / "malignant.csv").write_text("\n".join(MALIGNANT) + "\n")
    return {
        "competition": (root, root / "train.csv"),
        "isic2019 ground truth": (d19, d19 / "ISIC_2019_Training_GroundTruth.csv"),
        "isic2019 metadata": (d19, d19 / "ISIC_2019_Training_Metadata.csv"),
        "malignant": (dm, dm / "malignant.csv"),
    }


def test_external_readers_on_damaged_csvs(tmp_path):
    folders = _external_folders(tmp_path)
    loaders = {
        "competition": lambda folder, csv: load_competition(csv),
        "isic2019 ground truth": lambda folder, csv: load_isic2019(folder, tmp_path),
        "isic2019 metadata": lambda folder, csv: load_isic2019(folder, tmp_path),
        "malignant": lambda folder, csv: load_malignant(folder, tmp_path),
    }
    rng = random.Random("external")
    for name, (folder, csv) in folders.items():
        clean = csv.read_bytes()
        outcomes = {"read": 0, "refused": 0}
        for case in range(40):
            csv.write_bytes(_mutate_text(clean, rng))
            before = _snapshot(tmp_path)
            df = _expect_named(functools.partial(loaders[name], folder, csv), csv)
            outcomes["read" if df is not None else "refused"] += 1
            if df is not None:
                _check_table(df, ["image_name", "patient_id", "target"])
            assert _snapshot(tmp_path) == before, f"{name} case {case} wrote a file"
        csv.write_bytes(clean)
        print(name, outcomes)
        assert outcomes["read"] and outcomes["refused"], (name, outcomes)


def _photo_jpeg(progressive: bool) -> bytes:
    rng = np.random.default_rng(int(progressive))
    y, x = np.mgrid[0:96, 0:128]
    img = np.stack([x * 2, y * 2, (x + y) % 256], -1) + rng.normal(0, 10, (96, 128, 3))
    params = [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
    ok, buf = cv2.imencode(".jpg", np.clip(img, 0, 255).astype(np.uint8), params)
    assert ok
    return buf.tobytes()


def _mutate_jpeg(data: bytes, rng: random.Random) -> bytes:
    """One random damage: in the headers (first 700 bytes), in the data, cut, or padded."""
    kind = rng.choice(["header", "header", "data", "cut", "append", "insert"])
    if kind in ("header", "data"):
        lo, hi = (2, min(700, len(data))) if kind == "header" else (700, len(data) - 2)
        pos = rng.randrange(lo, hi)
        return data[:pos] + bytes([rng.randrange(256)]) + data[pos + 1 :]
    pos = rng.randrange(len(data))
    if kind == "cut":
        return data[:pos]
    if kind == "append":
        return data + bytes(rng.randrange(256) for _ in range(rng.randint(1, 5000)))
    return data[:pos] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 32))) + data[pos:]


@pytest.mark.parametrize("progressive", [False, True])
def test_resize_on_damaged_jpegs(tmp_path, progressive):
    clean = _photo_jpeg(progressive)
    src = tmp_path / "src"
    src.mkdir()
    path = src / "ISIC_0000001.jpg"
    csv = tmp_path / "t.csv"
    csv.write_text("image_name\nISIC_0000001\n")
    cache = tmp_path / "cache"
    rng = random.Random(f"jpeg {progressive}")
    outcomes = {"cached": 0, "refused": 0}
    for case in range(80):
        path.write_bytes(_mutate_jpeg(clean, rng))
        outside = _snapshot(tmp_path, but=cache)
        _expect_named(lambda: image_size(path), path)
        image = _expect_named(lambda: resize_image(path, 16), path)
        assert image is None or (image.shape == (16, 16, 3) and image.dtype == np.uint8)
        done = _expect_named(
            functools.partial(resize_table, csv, src, [16], cache, overwrite=True), path
        )
        outcomes["cached" if done else "refused"] += 1
        assert (done is not None) == cache_path(cache, 16, "ISIC_0000001").is_file(), case
        cache_path(cache, 16, "ISIC_0000001").unlink(missing_ok=True)
        assert _snapshot(tmp_path, but=cache) == outside, f"case {case} wrote outside the cache"
        assert not [p for p in cache.rglob("*") if p.name.endswith(".tmp")]
    print("progressive" if progressive else "baseline", outcomes)
    assert outcomes["cached"] and outcomes["refused"], outcomes
