"""Every published data layout is detected and read into the training table; a DICOM-only
or unknown folder stops with a message saying what to do or what was looked for."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from deepauc.cli import main
from deepauc.data.external import build_training_table, format_report
from deepauc.data.tables import read_test_csv
from layout_fixtures import (
    write_dicom_only,
    write_ham10000,
    write_isic2017,
    write_isic2018_task3,
    write_isic2019,
    write_kaggle2020,
    write_malignant,
    write_resized2019,
    write_resized2020,
)

REPO = Path(__file__).resolve().parents[1]


def by_source(table: pd.DataFrame, source: str) -> pd.DataFrame:
    return table[table["source"] == source].set_index("image_name")


def test_layouts_detected(tmp_path):
    from deepauc.data.external.registry import detect_external
    from deepauc.data.layouts import detect_competition

    kaggle = write_kaggle2020(tmp_path / "kaggle")
    assert detect_competition(kaggle / "train.csv").name == "kaggle2020"
    assert detect_competition(kaggle / "train.csv").test_images == kaggle / "jpeg" / "test"
    resized = write_resized2020(tmp_path / "resized")
    assert detect_competition(resized / "train.csv").name == "resized2020"
    assert detect_competition(resized / "train.csv").test_images == resized / "test"
    cases = [
        ("isic2019", write_isic2019, "isic2019"),
        ("isic2019", write_resized2019, "resized2019"),
        ("isic2018", write_isic2018_task3, "isic2018_task3"),
        ("isic2018", write_ham10000, "ham10000"),
        ("isic2017", write_isic2017, "isic2017"),
        ("malignant", write_malignant, "malignant"),
    ]
    for kind, writer, name in cases:
        assert detect_external(writer(tmp_path / name), kind).name == name


def test_kaggle2020_read_with_dicom_beside(tmp_path):
    root = write_kaggle2020(tmp_path / "siim")
    table, report = build_training_table(root / "train.csv")
    assert len(table) == 6 and set(table["source"]) == {"competition"}
    assert table["image_path"].tolist()[0] == "jpeg/train/ISIC_2637011.jpg"
    assert table.set_index("image_name").loc["ISIC_0068279", ["sex", "age_approx"]].isna().all()
    assert list(read_test_csv(root / "test.csv")["image_name"])[0] == "ISIC_0052060"


def test_dicom_only_refused(tmp_path):
    root = write_dicom_only(tmp_path / "siim")
    with pytest.raises(ValueError, match=r"DICOM.*jpeg/.*resized") as err:
        build_training_table(root / "train.csv")
    assert str(root) in str(err.value) and "\n" not in str(err.value)


def test_resized2020_read_duplicates_dropped_ints_kept(tmp_path):
    root = write_resized2020(tmp_path / "jpeg-melanoma-256x256")
    ext = write_resized2019(tmp_path / "jpeg-isic2019-256x256")
    table, report = build_training_table(root / "train.csv", isic2019_dir=ext)
    comp = by_source(table, "competition")
    assert "ISIC_0068279" not in comp.index and len(comp) == 5  # tfrecord -1
    assert comp.loc["ISIC_2637011", "image_path"] == "train/ISIC_2637011.jpg"
    assert all((root / p).is_file() for p in table["image_path"])
    for column in ("tfrecord", "width", "height"):
        assert pd.api.types.is_integer_dtype(table[column])
    assert comp.loc["ISIC_0052212", ["tfrecord", "width", "height"]].tolist() == [6, 1872, 1053]
    counts = report["counts"].set_index("source")
    assert counts.loc["competition", "dropped_marked_duplicate"] == 1
    assert counts.loc["isic2019", "dropped_marked_duplicate"] == 1
    assert report["layouts"] == {"competition": "resized2020", "isic2019": "resized2019"}
    text = format_report(report)
    assert "ISIC_0068279" in text and "tfrecord -1" in text


def test_resized2019_rows(tmp_path):
    kaggle = write_kaggle2020(tmp_path / "siim")
    ext = write_resized2019(tmp_path / "jpeg-isic2019-512x512")
    table, _ = build_training_table(kaggle / "train.csv", isic2019_dir=ext)
    rows = by_source(table, "isic2019")
    assert sorted(rows.index) == ["ISIC_0000000", "ISIC_0000002", "ISIC_0000004", "ISIC_0010491"]
    assert rows.loc["ISIC_0000000", "patient_id"] == "ISIC2019_ISIC_0000000"  # -1: missing
    assert rows.loc["ISIC_0000004", "image_path"].endswith("train/ISIC_0000004_downsampled.jpg")
    assert rows.loc["ISIC_0000000", "anatom_site_general_challenge"] == "torso"
    assert rows.loc["ISIC_0010491", ["sex", "age_approx"]].isna().all()
    assert rows["target"].tolist() == [0, 1, 1, 0]
    assert (rows["benign_malignant"] == rows["target"].map({0: "benign", 1: "malignant"})).all()


def test_isic2018_challenge_layout_read(tmp_path):
    kaggle = write_kaggle2020(tmp_path / "siim")
    d18 = write_isic2018_task3(tmp_path / "isic2018")
    table, report = build_training_table(kaggle / "train.csv", isic2018_dir=d18)
    rows = by_source(table, "isic2018")
    assert len(rows) == 6 and report["layouts"]["isic2018"] == "isic2018_task3"
    assert rows.loc["ISIC_0024310", "diagnosis"] == "melanoma"
    assert rows.loc["ISIC_0024329", "diagnosis"] == "actinic keratosis"
    assert rows["target"].sum() == 2
    # images of one lesion share a patient id, so they stay in one fold
    assert rows.loc["ISIC_0024310", "patient_id"] == rows.loc["ISIC_0024311", "patient_id"]
    assert rows[["sex", "age_approx", "anatom_site_general_challenge"]].isna().all().all()
    assert rows.loc["ISIC_0024306", "image_path"].endswith(
        "ISIC2018_Task3_Training_Input/ISIC_0024306.jpg"
    )


def test_isic2018_challenge_without_groupings(tmp_path):
    kaggle = write_kaggle2020(tmp_path / "siim")
    d18 = write_isic2018_task3(tmp_path / "isic2018", groupings=False)
    table, _ = build_training_table(kaggle / "train.csv", isic2018_dir=d18)
    assert by_source(table, "isic2018").loc["ISIC_0024310", "patient_id"] == "ISIC2018_ISIC_0024310"


def test_official_sets_read(tmp_path):
    kaggle = write_kaggle2020(tmp_path / "siim")
    table, report = build_training_table(
        kaggle / "train.csv",
        isic2019_dir=write_isic2019(tmp_path / "isic2019"),
        isic2018_dir=write_ham10000(tmp_path / "ham"),
        isic2017_dir=write_isic2017(tmp_path / "isic2017"),
        malignant_dir=write_malignant(tmp_path / "malignant"),
    )
    counts = report["counts"].set_index("source")["images_out"]
    assert counts.to_dict() == {
        "competition": 6,
        "isic2019": 4,
        "isic2018": 3,
        "isic2017": 2,  # ISIC_0000000 is in ISIC 2019 too: counted once, from 2019
        "malignant": 2,
        "total": 17,
    }
    i19 = by_source(table, "isic2019")
    assert (
        "ISIC_0000004" in i19.index
        and i19.loc["ISIC_0053454", "diagnosis"] == "squamous cell carcinoma"
    )
    ham = by_source(table, "isic2018")
    assert pd.isna(ham.loc["ISIC_0026769", "sex"]) and pd.isna(
        ham.loc["ISIC_0031633", "anatom_site_general_challenge"]
    )
    i17 = by_source(table, "isic2017")
    assert not any("superpixels" in p for p in table["image_path"])
    assert (
        "ISIC_0000003" in i17.index
        and i17.loc["ISIC_0000003", "diagnosis"] == "seborrheic keratosis"
    )
    assert (
        by_source(table, "malignant").loc["ISIC_0075914", "patient_id"] == "MALIGNANT_ISIC_0075914"
    )


@pytest.mark.parametrize(
    "option", ["isic2019_dir", "isic2018_dir", "isic2017_dir", "malignant_dir"]
)
def test_unknown_external_layout_lists_files_looked_for(tmp_path, option):
    kaggle = write_kaggle2020(tmp_path / "siim")
    folder = tmp_path / "mystery"
    (folder / "images").mkdir(parents=True)
    (folder / "labels.txt").write_text("x\n")
    (folder / "a.csv").write_text("a\n1\n")
    (folder / "b.csv").write_text("b\n1\n")
    with pytest.raises(ValueError, match="not a known") as err:
        build_training_table(kaggle / "train.csv", **{option: folder})
    message = str(err.value)
    assert message.startswith(str(folder)) and "\n" not in message and "looked for" in message
    expected = {
        "isic2019_dir": ["ISIC_2019_Training_GroundTruth.csv", "tfrecord,width,height"],
        "isic2018_dir": ["ISIC2018_Task3_Training_GroundTruth.csv", "HAM10000_metadata.csv"],
        "isic2017_dir": ["image_id,melanoma,seborrheic_keratosis"],
        "malignant_dir": ["malignant.csv"],
    }[option]
    assert all(name in message for name in expected)


def test_unknown_competition_layout_lists_files_looked_for(tmp_path):
    root = write_kaggle2020(tmp_path / "siim", with_dicom=False)
    shutil.move(root / "jpeg", root / "images")
    with pytest.raises(ValueError, match=r"not a known competition data layout") as err:
        build_training_table(root / "train.csv", content_dedup=False)
    assert "jpeg/train/" in str(err.value) and "tfrecord,width,height" in str(err.value)


def test_cli_external_on_resized_and_challenge_layouts(tmp_path, capsys):
    root = write_resized2020(tmp_path / "jpeg-melanoma-384x384")
    out = tmp_path / "train_ext.csv"
    args = ["external", "--train-csv", str(root / "train.csv"), "--out", str(out)]
    args += ["--isic2019-dir", str(write_resized2019(tmp_path / "jpeg-isic2019-384x384"))]
    args += ["--isic2018-dir", str(write_isic2018_task3(tmp_path / "isic2018"))]
    assert main(args) == 0
    text = out.read_text().splitlines()
    assert text[0].endswith(",source,image_path") and ",tfrecord,width,height," in text[0]
    assert (
        "ISIC_0052212,IP_2842074,female,50.0,lower extremity,nevus,benign,0,6,1872,1053,"
        in out.read_text()
    )
    assert not any(".0,competition" in line.split(",tfrecord")[0] for line in text)
    assert "Layouts: competition = resized2020" in capsys.readouterr().out


def _make(work: Path, data: Path, external: Path, *targets: str):
    cmd = ["make", "--no-print-directory", "-C", str(work), f"PY={sys.executable}", "EXP=siim"]
    cmd += [f"DATA={data}", f"EXTERNAL={external}", *targets]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("layout", ["kaggle2020", "resized2020"])
def test_makefile_external_and_resize_follow_the_layout(tmp_path, layout):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(REPO / "Makefile", work / "Makefile")
    writer = write_kaggle2020 if layout == "kaggle2020" else write_resized2020
    data = writer(tmp_path / "data")
    external = tmp_path / "external"
    write_resized2019(external / "isic2019")
    write_isic2018_task3(external / "isic2018")
    targets = ["data/cache/siim/16/index_siim_train.csv", "data/cache/siim/16/index_test.csv"]
    proc = _make(work, data, external, *targets)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    test_root = data / ("jpeg/test" if layout == "kaggle2020" else "test")
    assert f"--image-root {test_root} " in proc.stdout
    for target in targets:
        assert (work / target).is_file()
    table = pd.read_csv(work / "data/interim/siim_train.csv")
    assert set(table["source"]) == {"competition", "isic2019", "isic2018"}
