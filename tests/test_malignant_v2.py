"""The malignant-v2 layout of the ``malignant`` source: whichever of its three tables are present,
read in the resized 2020 columns, concatenated, and merged with the competition rows so that a
copy of a competition image is dropped and reported."""

import shutil

import pandas as pd
import pytest

from deepauc.data.external import build_training_table, format_report
from deepauc.data.external.malignant_v2 import load_malignant_v2
from deepauc.data.external.registry import detect_external
from layout_fixtures import (
    MALIGNANT_V2_TABLES,
    write_malignant,
    write_malignant_v2,
    write_resized2020,
)


def test_every_table_is_read_in_order_with_missing_cells_mapped(tmp_path):
    folder = write_malignant_v2(tmp_path / "mv2")
    assert detect_external(folder, "malignant").name == "malignant_v2"
    rows = load_malignant_v2(folder, tmp_path).set_index("image_name")
    # the published rows, worked by hand: -1 and empty patients get an id, `_downsampled`
    # leaves the name (not the file), sites map to the 2020 vocabulary, "unknown" is missing
    expected = {
        "ISIC_0074268": ("IP_8723313", "female", 55.0, "upper extremity", "melanoma"),
        "ISIC_0149568": ("IP_0962375", "female", 55.0, "upper extremity", "melanoma"),
        "ISIC_0000013": ("MALIGNANT_ISIC_0000013", "female", 30.0, None, "melanoma"),
        "ISIC_0000031": ("MALIGNANT_ISIC_0000031", "male", None, None, "melanoma"),
        "ISIC_0000004": ("MALIGNANT_ISIC_0000004", "male", 80.0, "torso", "MEL"),
        "ISIC_0010491": ("MALIGNANT_ISIC_0010491", None, None, None, "MEL"),
    }
    assert list(rows.index) == list(expected)
    columns = ["patient_id", "sex", "age_approx", "anatom_site_general_challenge", "diagnosis"]
    for name, values in expected.items():
        got = [None if pd.isna(v) else v for v in rows.loc[name, columns]]
        assert got == list(values), name
    assert (rows["target"] == 1).all() and (rows["benign_malignant"] == "malignant").all()
    assert (rows["source"] == "malignant").all()
    assert rows.loc["ISIC_0000004", "image_path"] == "mv2/jpeg/more/ISIC_0000004_downsampled.jpg"
    assert rows.loc["ISIC_0000013", "image_path"] == "mv2/jpeg/ISIC_0000013.jpg"


@pytest.mark.parametrize(
    "tables", [("train_malig_2.csv",), ("train_malig_1.csv", "train_malig_3.csv")]
)
def test_whichever_tables_are_present_are_read(tmp_path, tables):
    folder = write_malignant_v2(tmp_path / "mv2", tables)
    assert detect_external(folder, "malignant").name == "malignant_v2"
    rows = load_malignant_v2(folder, tmp_path)
    names = [
        r.split(",")[0].removesuffix("_downsampled") for t in tables for r in MALIGNANT_V2_TABLES[t]
    ]
    assert list(rows["image_name"]) == names


def test_the_plain_malignant_layout_is_still_detected(tmp_path):
    assert detect_external(write_malignant(tmp_path / "m"), "malignant").name == "malignant"


def test_a_competition_row_repeated_in_a_table_is_dropped_and_reported(tmp_path):
    root = write_resized2020(tmp_path / "siim")
    folder = write_malignant_v2(tmp_path / "mv2")
    # a byte copy of a competition image under a new name, as a re-published set may hold
    shutil.copy(root / "train" / "ISIC_0015719.jpg", folder / "jpeg" / "ISIC_0149568.jpg")
    table, report = build_training_table(root / "train.csv", malignant_dir=folder)
    assert report["layouts"]["malignant"] == "malignant_v2"
    dropped = report["dropped"].set_index("image_name")
    assert dropped.loc["ISIC_0074268", "reason"] == "same image name"
    assert dropped.loc["ISIC_0074268", "kept_source"] == "competition"
    assert dropped.loc["ISIC_0149568", "reason"] == "same image content"
    assert dropped.loc["ISIC_0149568", "kept_image_name"] == "ISIC_0015719"
    # competition rows are dropped only where the resized set marks them (tfrecord -1)
    comp = dropped[dropped["source"] == "competition"]
    assert set(comp["reason"]) == {"marked duplicate (tfrecord -1)"}
    # the competition row stays, with its own patient and path
    kept = table.set_index("image_name")
    assert kept.loc["ISIC_0074268", "source"] == "competition"
    assert kept.loc["ISIC_0074268", "image_path"] == "train/ISIC_0074268.jpg"
    assert (table["image_name"].value_counts() == 1).all()
    mal = kept[kept["source"] == "malignant"]
    assert sorted(mal.index) == sorted(
        ["ISIC_0000013", "ISIC_0000031", "ISIC_0000004", "ISIC_0010491"]
    )
    counts = report["counts"].set_index("source")
    assert counts.loc["malignant", "images_in"] == 6
    assert counts.loc["malignant", "dropped_same_name"] == 1
    assert counts.loc["malignant", "dropped_same_content"] == 1
    assert counts.loc["malignant", "images_out"] == 4
    text = format_report(report)
    assert "malignant = malignant_v2" in text
    assert "| ISIC_0074268 | malignant |" in text and "same image name" in text


def test_a_row_marked_tfrecord_minus_one_is_dropped_as_the_resized_sets_mark(tmp_path):
    folder = write_malignant_v2(tmp_path / "mv2")
    repeated = MALIGNANT_V2_TABLES["train_malig_2.csv"][0].replace(",30,", ",-1,")
    with open(folder / "train_malig_3.csv", "a") as fh:
        fh.write(repeated + "\n")
    root = write_resized2020(tmp_path / "siim")
    table, report = build_training_table(root / "train.csv", malignant_dir=folder)
    assert (table["image_name"] == "ISIC_0000013").sum() == 1
    dropped = report["dropped"]
    again = dropped[dropped["image_name"] == "ISIC_0000013"]
    # the repeat carries tfrecord -1: the publisher's duplicate mark drops it first
    assert list(again["reason"]) == ["marked duplicate (tfrecord -1)"]


def test_a_name_in_two_tables_is_kept_once(tmp_path):
    folder = write_malignant_v2(tmp_path / "mv2")
    repeated = MALIGNANT_V2_TABLES["train_malig_2.csv"][0]
    with open(folder / "train_malig_3.csv", "a") as fh:
        fh.write(repeated + "\n")
    root = write_resized2020(tmp_path / "siim")
    table, report = build_training_table(root / "train.csv", malignant_dir=folder)
    assert (table["image_name"] == "ISIC_0000013").sum() == 1
    again = report["dropped"][report["dropped"]["image_name"] == "ISIC_0000013"]
    assert list(again["reason"]) == ["same image name"]
    assert list(again["kept_source"]) == ["malignant"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda r: r.replace(",58,", ",58.5,"),
            r"train_malig_2\.csv: column 'tfrecord' must hold whole numbers",
        ),
        (
            lambda r: r.replace("ISIC_0000031", "ISIC_0000013"),
            r"train_malig_2\.csv: duplicated image_name: ISIC_0000013",
        ),
        (lambda r: r.replace(",male,", ",robot,"), r"train_malig_2\.csv"),
    ],
)
def test_a_bad_table_stops_with_one_line_naming_it(tmp_path, edit, message):
    folder = write_malignant_v2(tmp_path / "mv2")
    path = folder / "train_malig_2.csv"
    path.write_text(edit(path.read_text()))
    with pytest.raises(ValueError, match=message) as err:
        load_malignant_v2(folder, tmp_path)
    assert "\n" not in str(err.value)


def test_a_missing_image_is_named(tmp_path):
    folder = write_malignant_v2(tmp_path / "mv2")
    (folder / "jpeg" / "more" / "ISIC_0010491.jpg").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"train_malig_3\.csv: 1 image file\(s\) not found: ISIC_0010491"
    ):
        load_malignant_v2(folder, tmp_path)
