import hashlib

import numpy as np
import pandas as pd
import pytest

from deepauc.cli import main
from deepauc.data.demo import (
    DemoSizes,
    Style,
    draw_images_per_patient,
    generate,
    malignant_flags,
    render_lesion,
)
from deepauc.data.tables import read_sample_submission, read_test_csv, read_train_csv

SMALL = DemoSizes(
    n_train=300,
    n_patients=60,
    n_test=60,
    n_test_patients=12,
    n_isic2019=80,
    n_isic2018=20,
    n_isic2017=10,
    n_malignant=8,
    image_size=40,
    malignant_ratio=0.02,
)
CSVS = [
    "train.csv",
    "test.csv",
    "sample_submission.csv",
    "demo_solution.csv",
    "external/isic2019/ISIC_2019_Training_GroundTruth.csv",
    "external/isic2019/ISIC_2019_Training_Metadata.csv",
    "external/isic2018/HAM10000_metadata.csv",
    "external/isic2017/ISIC-2017_Training_Part3_GroundTruth.csv",
    "external/malignant/malignant.csv",
]


def digest(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    summary = generate(out, seed=3, sizes=SMALL)
    return out, summary


def test_layout_and_tables_validate(demo):
    out, summary = demo
    train = read_train_csv(out / "train.csv")
    test = read_test_csv(out / "test.csv")
    sample = read_sample_submission(out / "sample_submission.csv")
    assert len(train) == 300 and train["patient_id"].nunique() == 60
    assert len(test) == 60 and test["patient_id"].nunique() == 12
    assert set(train["patient_id"]).isdisjoint(test["patient_id"])
    assert list(sample["image_name"]) == list(test["image_name"])
    assert (sample["target"] == 0.0).all()
    assert "0.0" in (out / "sample_submission.csv").read_text().splitlines()[1]
    for name in train["image_name"]:
        assert (out / "jpeg" / "train" / f"{name}.jpg").is_file()
    for name in test["image_name"]:
        assert (out / "jpeg" / "test" / f"{name}.jpg").is_file()
    assert train["image_name"].str.fullmatch(r"ISIC_\d{7}").all()
    assert train["patient_id"].str.fullmatch(r"IP_\d{7}").all()
    assert "synthetic" in (out / "README.txt").read_text().lower()
    assert summary["image files written"] == 300 + 60 + 80 + 20 + 10 + 8


def test_external_layout(demo):
    out, _ = demo
    gt = pd.read_csv(out / "external/isic2019/ISIC_2019_Training_GroundTruth.csv")
    meta = pd.read_csv(out / "external/isic2019/ISIC_2019_Training_Metadata.csv")
    assert list(gt.columns) == [
        "image",
        "MEL",
        "NV",
        "BCC",
        "AK",
        "BKL",
        "DF",
        "VASC",
        "SCC",
        "UNK",
    ]
    assert list(meta.columns) == ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"]
    assert (gt.iloc[:, 1:].sum(axis=1) == 1).all()
    assert list(gt["image"]) == list(meta["image"])
    assert gt["image"].str.endswith("_downsampled").any()
    assert meta["anatom_site_general"].isna().any()
    assert set(meta["anatom_site_general"].dropna()) <= {
        "anterior torso",
        "posterior torso",
        "lateral torso",
        "upper extremity",
        "lower extremity",
        "head/neck",
        "palms/soles",
        "oral/genital",
    }
    for image in gt["image"]:
        assert (out / "external/isic2019/ISIC_2019_Training_Input" / f"{image}.jpg").is_file()
    ham = pd.read_csv(out / "external/isic2018/HAM10000_metadata.csv")
    assert list(ham.columns) == [
        "lesion_id",
        "image_id",
        "dx",
        "dx_type",
        "age",
        "sex",
        "localization",
    ]
    in_2019 = ham["image_id"].isin(gt["image"].str.replace("_downsampled", ""))
    assert in_2019.mean() >= 0.8 and not in_2019.all()
    mal = read_train_csv(out / "external/malignant/malignant.csv")
    assert (mal["target"] == 1).all() and len(mal) == 8


def test_byte_identical_copies_across_sets(demo):
    out, _ = demo
    comp = {digest(p) for p in (out / "jpeg" / "train").glob("*.jpg")}
    isic = {digest(p) for p in (out / "external/isic2019/ISIC_2019_Training_Input").glob("*.jpg")}
    mal = {digest(p) for p in (out / "external/malignant/jpeg").glob("*.jpg")}
    assert comp & isic, "a 2019 image should be a copy of a competition image"
    assert comp & mal and isic & mal


def test_malignant_ratio_and_missing_metadata(demo):
    out, summary = demo
    train = read_train_csv(out / "train.csv")
    assert train["target"].sum() == round(0.02 * 300)
    assert summary["train malignant ratio"] == pytest.approx(0.02)
    per_patient = train.groupby("patient_id")["target"].sum()
    assert (per_patient[per_patient > 0] == 1).mean() >= 0.5
    for col in ["sex", "age_approx", "anatom_site_general_challenge"]:
        assert train[col].isna().any(), col
        assert train[col].isna().mean() < 0.1, col
    ages = train["age_approx"].dropna()
    assert (ages % 5 == 0).all() and ages.between(15, 90).all()


def test_deterministic_from_seed(tmp_path, demo):
    out, _ = demo
    again = tmp_path / "again"
    generate(again, seed=3, sizes=SMALL, workers=2)  # worker processes change nothing
    for rel in CSVS:
        assert (out / rel).read_bytes() == (again / rel).read_bytes(), rel
    for folder in [
        "jpeg/train",
        "jpeg/test",
        "external/isic2019/ISIC_2019_Training_Input",
        "external/isic2018/images",
        "external/malignant/jpeg",
    ]:
        files = sorted((out / folder).glob("*.jpg"))
        assert [p.name for p in files] == [p.name for p in sorted((again / folder).glob("*.jpg"))]
        for path in files:
            assert path.read_bytes() == (again / folder / path.name).read_bytes(), path
    other = tmp_path / "other"
    generate(other, seed=4, sizes=SMALL)
    assert (other / "train.csv").read_bytes() != (out / "train.csv").read_bytes()


def test_patient_counts_heavy_tailed():
    rng = np.random.default_rng(0)
    counts = draw_images_per_patient(rng, 2000, 400, 60)
    assert counts.sum() == 2000 and counts.min() >= 1 and counts.max() <= 60
    assert counts.max() >= 25  # long right tail
    assert np.median(counts) < counts.mean()
    assert (counts == 1).mean() > 0.1


def test_malignant_flags_mostly_one_per_patient():
    rng = np.random.default_rng(1)
    counts = draw_images_per_patient(rng, 5000, 1000, 60)
    targets = malignant_flags(rng, counts, 0.02)
    assert targets.sum() == 100
    per_patient = np.add.reduceat(targets, np.concatenate([[0], np.cumsum(counts)[:-1]]))
    assert (per_patient == 1).sum() > (per_patient >= 2).sum() * 3


def test_render_signal_is_present_but_noisy():
    # Lesion area (dark pixels) should be larger on average for malignant-looking
    # lesions, but the two distributions must overlap.
    style = Style((225.0, 180.0, 150.0), 64, 64, 0.0)

    def dark_area(look, i):
        img = render_lesion(np.random.default_rng([7, int(look), i]), look, style)
        return (img.mean(axis=2) < 150).mean()

    benign = np.array([dark_area(False, i) for i in range(60)])
    malignant = np.array([dark_area(True, i) for i in range(60)])
    auc = (malignant[:, None] > benign[None, :]).mean()
    assert 0.65 < auc < 0.99


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    args = [
        "demo-data",
        "--out",
        str(tmp_path),
        "--seed",
        "1",
        "--n-train",
        "40",
        "--n-patients",
        "10",
        "--n-test",
        "10",
        "--n-test-patients",
        "3",
        "--n-isic2019",
        "20",
        "--n-isic2018",
        "5",
        "--n-isic2017",
        "4",
        "--n-malignant",
        "4",
        "--image-size",
        "32",
    ]
    assert main(args) == 0
    assert "train images" in capsys.readouterr().out
    assert main(args) == 1
    assert "already exists" in capsys.readouterr().err
    assert main([*args[:4], "2", *args[5:], "--overwrite"]) == 0
    names = set(pd.read_csv(tmp_path / "train.csv")["image_name"])
    assert {p.stem for p in (tmp_path / "jpeg" / "train").glob("*.jpg")} == names


def test_impossible_sizes_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="--n-patients"):
        generate(tmp_path, sizes=DemoSizes(n_train=5, n_patients=10))
    with pytest.raises(ValueError, match="--n-train"):
        generate(tmp_path, sizes=DemoSizes(n_train=1000, n_patients=10))
    assert not any(tmp_path.iterdir())
