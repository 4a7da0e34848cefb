import pandas as pd
import pytest

from deepauc.data.tables import (
    SITES_2020,
    read_folds_table,
    read_sample_submission,
    read_test_csv,
    read_train_csv,
)
from deepauc.markdown import markdown_table

HEADER = "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target"
GOOD_ROWS = [
    "ISIC_0000001,IP_0000001,male,45.0,torso,unknown,benign,0",
    "ISIC_0000002,IP_0000001,male,,head/neck,melanoma,malignant,1",
    "ISIC_0000003,IP_0000002,,50.0,,nevus,benign,0",
]


def write(tmp_path, lines, name="train.csv"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_valid_train_types_missing_values_and_extra_columns(tmp_path):
    lines = [HEADER + ",source,fold"] + [row + ",competition,0" for row in GOOD_ROWS]
    df = read_train_csv(write(tmp_path, lines))
    assert list(df["target"]) == [0, 1, 0]
    assert df["target"].dtype.kind == "i"
    assert df["age_approx"].dtype.kind == "f"
    assert pd.isna(df.loc[1, "age_approx"])
    assert pd.isna(df.loc[2, "sex"]) and pd.isna(df.loc[2, "anatom_site_general_challenge"])
    assert list(df["source"]) == ["competition"] * 3
    assert list(df["fold"]) == [0, 0, 0]


def test_misspelt_column_names_near_match(tmp_path):
    header = HEADER.replace("anatom_site_general_challenge", "anatom_site_general_challange")
    path = write(tmp_path, [header, *GOOD_ROWS])
    with pytest.raises(ValueError) as err:
        read_train_csv(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "'anatom_site_general_challenge'" in msg
    assert "anatom_site_general_challange" in msg and "misspelt" in msg


def test_missing_column_without_near_match(tmp_path):
    header = HEADER.replace(",target", "")
    rows = [r.rsplit(",", 1)[0] for r in GOOD_ROWS]
    with pytest.raises(ValueError, match="missing column.*'target'"):
        read_train_csv(write(tmp_path, [header, *rows]))


def test_header_only_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no data rows"):
        read_train_csv(write(tmp_path, [HEADER]))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_train_csv(tmp_path / "nope.csv")


def test_duplicate_names_listed_with_lines(tmp_path):
    rows = [*GOOD_ROWS, GOOD_ROWS[0]]
    with pytest.raises(ValueError, match=r"duplicated image_name: ISIC_0000001 \(lines 2, 5\)"):
        read_train_csv(write(tmp_path, [HEADER, *rows]))


@pytest.mark.parametrize(
    "row, pattern",
    [
        (
            "ISIC_0000009,IP_1,male,45,torso,unknown,benign,2",
            r"target.*0 or 1.*line 5 \(ISIC_0000009\)",
        ),
        ("ISIC_0000009,IP_1,male,45,torso,unknown,benign,yes", r"not numeric.*line 5.*'yes'"),
        (
            "ISIC_0000009,,male,45,torso,unknown,benign,0",
            r"empty patient_id at line 5 \(ISIC_0000009\)",
        ),
        ("ISIC_0000009,IP_1,male,130,torso,unknown,benign,0", r"age_approx outside.*line 5.*130"),
        ("ISIC_0000009,IP_1,male,-5,torso,unknown,benign,0", r"age_approx outside.*line 5"),
        (
            "ISIC_0000009,IP_1,M,45,torso,unknown,benign,0",
            r"column 'sex' at line 5 \(ISIC_0000009\): 'M'",
        ),
        (
            "ISIC_0000009,IP_1,male,45,chest,unknown,benign,0",
            r"anatom_site_general_challenge.*line 5.*'chest'",
        ),
        (
            "ISIC_0000009,IP_1,male,45,torso,melanoma,malignant,0",
            r"benign_malignant disagrees.*line 5",
        ),
    ],
)
def test_bad_values_name_line_and_value(tmp_path, row, pattern):
    path = write(tmp_path, [HEADER, *GOOD_ROWS, row])
    with pytest.raises(ValueError, match=pattern) as err:
        read_train_csv(path)
    assert str(path) in str(err.value)


def test_test_csv(tmp_path):
    header = "image_name,patient_id,sex,age_approx,anatom_site_general_challenge"
    df = read_test_csv(
        write(
            tmp_path,
            [header, "ISIC_0000010,IP_5,female,30,oral/genital", "ISIC_0000011,IP_5,female,,"],
            "test.csv",
        )
    )
    assert len(df) == 2 and "target" not in df.columns
    with pytest.raises(ValueError, match="line 3.*'feet'"):
        read_test_csv(
            write(
                tmp_path,
                [header, "ISIC_0000010,IP_5,female,30,torso", "ISIC_0000011,IP_5,female,30,feet"],
                "test.csv",
            )
        )


def test_test_csv_without_metadata_checks_keeps_the_table_checks(tmp_path):
    header = "image_name,patient_id,sex,age_approx,anatom_site_general_challenge"
    loose = write(tmp_path, [header, "ISIC_0000010,,feet,200,torso", "0000011,IP_5,,,"], "t.csv")
    df = read_test_csv(loose, check_metadata=False)  # the metadata model checks these itself
    assert list(df["image_name"]) == ["ISIC_0000010", "0000011"]
    assert list(df["sex"].fillna("")) == ["feet", ""] and df["age_approx"].iloc[0] == 200
    with pytest.raises(ValueError, match=r"t\.csv: empty patient_id at line 2 \(ISIC_0000010\)"):
        read_test_csv(loose)
    dup = write(tmp_path, [header, "ISIC_1,IP_5,male,30,torso", "ISIC_1,IP_5,male,30,torso"])
    with pytest.raises(ValueError, match=r"duplicated image_name: ISIC_1 \(lines 2, 3\)"):
        read_test_csv(dup, check_metadata=False)
    with pytest.raises(ValueError, match="missing column.*'sex'"):
        read_test_csv(write(tmp_path, ["image_name,patient_id", "ISIC_1,IP_1"]), False)


FOLDS = ["image_name,patient_id,target,fold", "0001,IP_1,0,0", "0002,IP_2,1,1", "0003,IP_3,0,-1"]


def test_folds_table_ids_as_text_and_required_columns(tmp_path):
    df = read_folds_table(write(tmp_path, FOLDS, "folds.csv"))
    assert list(df["image_name"]) == ["0001", "0002", "0003"]  # the zeros are kept
    assert list(df["patient_id"]) == ["IP_1", "IP_2", "IP_3"]
    with pytest.raises(
        ValueError, match=r"missing column\(s\) 'source'; expected \['image_name', 'source'\]"
    ):
        read_folds_table(tmp_path / "folds.csv", ["image_name", "source"])
    with pytest.raises(FileNotFoundError, match="nope.csv: no such file"):
        read_folds_table(tmp_path / "nope.csv")


def test_folds_table_with_n_folds_checks_targets_folds_and_patients(tmp_path):
    path = write(tmp_path, FOLDS, "folds.csv")
    df = read_folds_table(path, ["image_name", "target", "fold"], n_folds=2)
    assert list(df["fold"]) == [0, 1, -1] and list(df["target"]) == [0, 1, 0]
    assert df["fold"].dtype.kind == "i" and df["target"].dtype.kind == "i"
    with pytest.raises(ValueError, match=r"do not match n_folds=3"):
        read_folds_table(path, ["image_name", "target", "fold"], n_folds=3)
    bad_target = write(tmp_path, [*FOLDS, "0004,IP_4,2,0"], "folds.csv")
    with pytest.raises(ValueError, match=r"must be 0 or 1, bad at line 5 \(0004\): 2"):
        read_folds_table(bad_target, ["image_name", "target", "fold"], n_folds=2)
    split = write(tmp_path, [*FOLDS, "0004,IP_1,0,1"], "folds.csv")
    with pytest.raises(
        ValueError, match=r"patient\(s\) split across folds.*IP_1 \(folds \[0, 1\]\)"
    ):
        read_folds_table(split, ["image_name", "target", "fold"], n_folds=2)


def test_sample_submission(tmp_path):
    df = read_sample_submission(
        write(tmp_path, ["image_name,target", "ISIC_1,0", "ISIC_2,0"], "s.csv")
    )
    assert list(df["image_name"]) == ["ISIC_1", "ISIC_2"]
    with pytest.raises(ValueError, match="duplicated"):
        read_sample_submission(
            write(tmp_path, ["image_name,target", "ISIC_1,0", "ISIC_1,0"], "s.csv")
        )


def test_sites_vocabulary():
    assert len(SITES_2020) == 6 and "torso" in SITES_2020


def test_markdown_table():
    text = markdown_table(pd.DataFrame({"a": [1, 2], "b": [0.5, float("nan")]}))
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.5000 |", "| 2 |  |"]
