import hashlib

import cv2
import numpy as np
import pandas as pd
import pytest

from deepauc.cli import main
from deepauc.data.demo import DemoSizes, generate
from deepauc.data.external import build_training_table, format_report, strip_suffix
from deepauc.data.tables import TRAIN_COLUMNS, read_train_csv

CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]


def jpeg(path, seed):
    """A small random JPEG; different seeds give different bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    cv2.imwrite(str(path), img)
    return path


def onehot_rows(labels):
    return [[float(c == lab) for c in CLASSES] for lab in labels]


@pytest.fixture
def data(tmp_path):
    """Competition (3 images), ISIC 2019 (5), ISIC 2018 (2), malignant (2) with known overlaps."""
    root = tmp_path / "raw"
    train = pd.DataFrame(
        {
            "image_name": ["ISIC_1000001", "ISIC_1000002", "ISIC_1000003"],
            "patient_id": ["IP_0000001", "IP_0000001", "IP_0000002"],
            "sex": ["male", "male", "female"],
            "age_approx": [45.0, 45.0, np.nan],
            "anatom_site_general_challenge": ["torso", "torso", np.nan],
            "diagnosis": ["unknown", "melanoma", "nevus"],
            "benign_malignant": ["benign", "malignant", "benign"],
            "target": [0, 1, 0],
        }
    )
    root.mkdir()
    train.to_csv(root / "train.csv", index=False)
    for i, name in enumerate(train["image_name"]):
        jpeg(root / "jpeg" / "train" / f"{name}.jpg", i)

    d19 = tmp_path / "external" / "isic2019"
    images19 = [
        "ISIC_0000001",
        "ISIC_0000002",
        "ISIC_0024306_downsampled",
        "ISIC_0000004",
        "ISIC_0000005",
    ]
    labels19 = ["MEL", "NV", "BCC", "BKL", "NV"]
    gt = pd.DataFrame(onehot_rows(labels19), columns=CLASSES)
    gt.insert(0, "image", images19)
    d19.mkdir(parents=True)
    gt.to_csv(d19 / "ISIC_2019_Training_GroundTruth.csv", index=False)
    pd.DataFrame(
        {
            "image": images19,
            "age_approx": [55.0, np.nan, 70.0, 40.0, 30.0],
            "anatom_site_general": [
                "anterior torso",
                "posterior torso",
                "lateral torso",
                "head/neck",
                np.nan,
            ],
            "lesion_id": ["BCN_0000001", np.nan, "HAM_0000001", "BCN_0000001", np.nan],
            "sex": ["male", "female", np.nan, "male", "female"],
        }
    ).to_csv(d19 / "ISIC_2019_Training_Metadata.csv", index=False)
    inp = d19 / "ISIC_2019_Training_Input"
    for i, name in enumerate(images19[:4]):
        jpeg(inp / f"{name}.jpg", 100 + i)
    # ISIC_0000005 is a byte copy of the competition image ISIC_1000003
    (inp / "ISIC_0000005.jpg").write_bytes((root / "jpeg/train/ISIC_1000003.jpg").read_bytes())

    d18 = tmp_path / "external" / "isic2018"
    d18.mkdir(parents=True)
    pd.DataFrame(
        {
            "lesion_id": ["HAM_0000001", "HAM_0000002"],
            "image_id": ["ISIC_0024306", "ISIC_0024307"],
            "dx": ["bcc", "mel"],
            "dx_type": ["histo", "histo"],
            "age": [70.0, 60.0],
            "sex": ["unknown", "female"],
            "localization": ["back", "foot"],
        }
    ).to_csv(d18 / "HAM10000_metadata.csv", index=False)
    # the same image as the 2019 ISIC_0024306_downsampled (same seed: same bytes)
    jpeg(d18 / "HAM10000_images_part_1" / "ISIC_0024306.jpg", 102)
    jpeg(d18 / "HAM10000_images_part_2" / "ISIC_0024307.jpg", 200)

    dm = tmp_path / "external" / "malignant"
    mal = train.iloc[[1]].copy()  # same name as a competition image
    mal = pd.concat(
        [
            mal,
            pd.DataFrame(
                [
                    {
                        "image_name": "ISIC_2000001",
                        "patient_id": np.nan,
                        "sex": "male",
                        "age_approx": 65.0,
                        "anatom_site_general_challenge": "anterior torso",
                        "diagnosis": np.nan,
                        "benign_malignant": "malignant",
                        "target": 1,
                    }
                ]
            ),
        ]
    )
    jpeg(dm / "jpeg" / "ISIC_1000002.jpg", 300)
    jpeg(dm / "jpeg" / "ISIC_2000001.jpg", 301)
    mal.to_csv(dm / "malignant.csv", index=False)
    return {"train_csv": root / "train.csv", "d19": d19, "d18": d18, "dm": dm, "root": root}


def test_labels_sites_and_patient_ids_mapped(data):
    table, report = build_training_table(data["train_csv"], data["d19"])
    t = table.set_index("image_name")
    assert t.loc["ISIC_0000001", "diagnosis"] == "melanoma"
    assert t.loc["ISIC_0000001", "target"] == 1
    assert t.loc["ISIC_0000001", "benign_malignant"] == "malignant"
    assert t.loc["ISIC_0000002", "diagnosis"] == "nevus" and t.loc["ISIC_0000002", "target"] == 0
    assert t.loc["ISIC_0024306", "diagnosis"] == "basal cell carcinoma"
    assert t.loc["ISIC_0024306", "target"] == 0
    assert t.loc["ISIC_0000004", "diagnosis"] == "benign keratosis"
    # sites -> 2020 vocabulary
    assert t.loc["ISIC_0000001", "anatom_site_general_challenge"] == "torso"
    assert t.loc["ISIC_0000002", "anatom_site_general_challenge"] == "torso"
    assert t.loc["ISIC_0024306", "anatom_site_general_challenge"] == "torso"
    assert t.loc["ISIC_0000004", "anatom_site_general_challenge"] == "head/neck"
    # patient id = lesion id, else one per image
    assert (
        t.loc["ISIC_0000001", "patient_id"] == t.loc["ISIC_0000004", "patient_id"] == "BCN_0000001"
    )
    assert t.loc["ISIC_0000002", "patient_id"] == "ISIC2019_ISIC_0000002"
    # suffix stripped in the name, kept in the path; paths relative to the train.csv folder
    assert t.loc["ISIC_0024306", "image_path"] == (
        "../external/isic2019/ISIC_2019_Training_Input/ISIC_0024306_downsampled.jpg"
    )
    assert t.loc["ISIC_1000001", "image_path"] == "jpeg/train/ISIC_1000001.jpg"
    assert list(table.columns[:8]) == TRAIN_COLUMNS
    assert set(table["source"]) == {"competition", "isic2019"}
    for path in table["image_path"]:
        assert (data["root"] / path).is_file()


def test_2018_overlap_counted_once_and_content_duplicate_dropped(data):
    table, report = build_training_table(
        data["train_csv"], data["d19"], isic2018_dir=data["d18"], malignant_dir=data["dm"]
    )
    assert table["image_name"].is_unique
    # ISIC_0024306 is in 2019 (as _downsampled) and in 2018: kept once, from 2019
    row = table[table["image_name"] == "ISIC_0024306"]
    assert len(row) == 1 and row["source"].iloc[0] == "isic2019"
    new18 = table.set_index("image_name").loc["ISIC_0024307"]
    assert new18["source"] == "isic2018" and new18["target"] == 1
    assert new18["anatom_site_general_challenge"] == "lower extremity"
    assert new18["patient_id"] == "HAM_0000002"
    # the 2019 byte copy of a competition image is gone, the competition row stays
    assert "ISIC_0000005" not in set(table["image_name"])
    assert "ISIC_1000003" in set(table["image_name"])
    # malignant: name duplicate of a competition image dropped, new one kept with an id
    comp = table[table["image_name"] == "ISIC_1000002"]
    assert list(comp["source"]) == ["competition"]
    mal = table.set_index("image_name").loc["ISIC_2000001"]
    assert mal["source"] == "malignant" and mal["patient_id"] == "MALIGNANT_ISIC_2000001"
    assert mal["anatom_site_general_challenge"] == "torso" and mal["diagnosis"] == "melanoma"

    dropped = report["dropped"].set_index("image_name")
    assert dropped.loc["ISIC_0000005", "reason"] == "same image content"
    assert dropped.loc["ISIC_0000005", "kept_image_name"] == "ISIC_1000003"
    assert dropped.loc["ISIC_0024306", "reason"] == "same image name"
    assert dropped.loc["ISIC_0024306", "source"] == "isic2018"
    counts = report["counts"].set_index("source")
    assert counts.loc["isic2019", "images_in"] == 5 and counts.loc["isic2019", "images_out"] == 4
    assert counts.loc["isic2018", "dropped_same_name"] == 1
    assert counts.loc["total", "images_out"] == len(table)
    assert counts.loc["total", "malignant_ratio"] == pytest.approx(table["target"].mean())
    text = format_report(report)
    assert "| isic2018 |" in text and "same image content" in text


def test_without_content_dedup_keeps_copy(data):
    table, _ = build_training_table(data["train_csv"], data["d19"], content_dedup=False)
    assert "ISIC_0000005" in set(table["image_name"])


@pytest.mark.parametrize("labels, sum_", [(["MEL", "NV"], 2), ([], 0)])
def test_bad_onehot_row_names_file_and_line(data, labels, sum_):
    path = data["d19"] / "ISIC_2019_Training_GroundTruth.csv"
    gt = pd.read_csv(path)
    gt.loc[1, CLASSES] = 0.0
    for lab in labels:
        gt.loc[1, lab] = 1.0
    gt.to_csv(path, index=False)
    with pytest.raises(ValueError) as err:
        build_training_table(data["train_csv"], data["d19"])
    msg = str(err.value)
    assert "ISIC_2019_Training_GroundTruth.csv" in msg
    assert f"line 3 (ISIC_0000002): {sum_}" in msg


def test_unknown_2019_site_names_row(data):
    path = data["d19"] / "ISIC_2019_Training_Metadata.csv"
    meta = pd.read_csv(path)
    meta.loc[3, "anatom_site_general"] = "elbow"
    meta.to_csv(path, index=False)
    with pytest.raises(
        ValueError, match=r"Metadata.csv: unknown value.*line 5 \(ISIC_0000004\): 'elbow'"
    ):
        build_training_table(data["train_csv"], data["d19"])


def test_missing_external_image_is_listed(data):
    (data["d19"] / "ISIC_2019_Training_Input" / "ISIC_0000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1 image file.*ISIC_0000002"):
        build_training_table(data["train_csv"], data["d19"])


def test_strip_suffix():
    assert strip_suffix("ISIC_0000001_downsampled") == "ISIC_0000001"
    assert strip_suffix("ISIC_0000001") == "ISIC_0000001"


def test_cli_on_demo_data(tmp_path, capsys):
    demo = tmp_path / "demo"
    generate(
        demo,
        seed=5,
        sizes=DemoSizes(
            n_train=120,
            n_patients=30,
            n_test=12,
            n_test_patients=4,
            n_isic2019=60,
            n_isic2018=20,
            n_isic2017=10,
            n_malignant=6,
            image_size=32,
        ),
    )
    ext = demo / "external"
    out, report = tmp_path / "train_ext.csv", tmp_path / "ext.md"
    code = main(
        [
            "external",
            "--train-csv",
            str(demo / "train.csv"),
            "--isic2019-dir",
            str(ext / "isic2019"),
            "--isic2018-dir",
            str(ext / "isic2018"),
            "--isic2017-dir",
            str(ext / "isic2017"),
            "--malignant-dir",
            str(ext / "malignant"),
            "--out",
            str(out),
            "--report",
            str(report),
            "--workers",
            "2",
        ]
    )
    assert code == 0
    assert "External data merge" in capsys.readouterr().out
    table = read_train_csv(out)
    assert set(table["source"]) == {"competition", "isic2019", "isic2018", "isic2017", "malignant"}
    assert (table["source"] == "competition").sum() == 120
    digests = [hashlib.md5((demo / p).read_bytes()).hexdigest() for p in table["image_path"]]
    assert len(set(digests)) == len(digests), "byte-identical images remain"
    # 2018 images already in 2019 (suffix or not) are counted once, from 2019
    ham = pd.read_csv(ext / "isic2018" / "HAM10000_metadata.csv")["image_id"]
    gt = pd.read_csv(ext / "isic2019" / "ISIC_2019_Training_GroundTruth.csv")["image"]
    only_2018 = set(ham) - {strip_suffix(n) for n in gt}
    assert 0 < len(only_2018) < len(ham)
    assert set(table.loc[table["source"] == "isic2018", "image_name"]) == only_2018
    assert "dropped_same_content" in report.read_text()

    code = main(
        [
            "external",
            "--train-csv",
            str(out),
            "--isic2019-dir",
            str(ext / "isic2019"),
            "--out",
            str(tmp_path / "again.csv"),
        ]
    )
    assert code == 1
    assert "non-competition" in capsys.readouterr().err


def test_bad_2018_age_names_metadata_file_and_line(data):
    path = data["d18"] / "HAM10000_metadata.csv"
    meta = pd.read_csv(path)
    meta.loc[1, "age"] = -10
    meta.to_csv(path, index=False)
    with pytest.raises(
        ValueError, match=r"HAM10000_metadata.csv: age outside .*line 3 \(ISIC_0024307\): -10"
    ):
        build_training_table(data["train_csv"], data["d19"], isic2018_dir=data["d18"])


def test_isic2017_labels_and_unknown_metadata(data, tmp_path):
    d17 = tmp_path / "external" / "isic2017"
    (d17 / "ISIC-2017_Training_Data").mkdir(parents=True)
    pd.DataFrame(
        {
            "image_id": ["ISIC_0000001", "ISIC_0000010", "ISIC_0000011"],
            "melanoma": [1.0, 0.0, 0.0],
            "seborrheic_keratosis": [0.0, 1.0, 0.0],
        }
    ).to_csv(d17 / "ISIC-2017_Training_Part3_GroundTruth.csv", index=False)
    pd.DataFrame(
        {
            "image_id": ["ISIC_0000010", "ISIC_0000011"],
            "age_approximate": ["unknown", "35"],
            "sex": ["female", "unknown"],
        }
    ).to_csv(d17 / "ISIC-2017_Training_Data" / "ISIC-2017_Training_Data_metadata.csv", index=False)
    for i, name in enumerate(["ISIC_0000001", "ISIC_0000010", "ISIC_0000011"]):
        jpeg(d17 / "ISIC-2017_Training_Data" / f"{name}.jpg", 400 + i)
    table, report = build_training_table(data["train_csv"], data["d19"], isic2017_dir=d17)
    t = table[table["source"] == "isic2017"].set_index("image_name")
    assert sorted(t.index) == ["ISIC_0000010", "ISIC_0000011"]  # ISIC_0000001 is in 2019
    assert t.loc["ISIC_0000010", "diagnosis"] == "seborrheic keratosis"
    assert t.loc["ISIC_0000011", "diagnosis"] == "nevus" and t["target"].sum() == 0
    assert (
        pd.isna(t.loc["ISIC_0000010", "age_approx"]) and t.loc["ISIC_0000011", "age_approx"] == 35
    )
    assert pd.isna(t.loc["ISIC_0000011", "sex"]) and t.loc["ISIC_0000010", "sex"] == "female"
    assert t.loc["ISIC_0000010", "patient_id"] == "ISIC2017_ISIC_0000010"
    assert report["counts"].set_index("source").loc["isic2017", "dropped_same_name"] == 1
