import numpy as np
import pandas as pd
import pytest

from deepauc.cli import main
from deepauc.pipeline.submission import validate_submission, write_submission

NAMES = [f"ISIC_{i:07d}" for i in range(12)]


@pytest.fixture
def sample():
    return pd.DataFrame({"image_name": NAMES, "target": 0.0})


def good():
    return pd.DataFrame({"image_name": NAMES, "target": np.linspace(0, 1, len(NAMES))})


def test_shuffled_valid_submission_is_reordered(sample):
    sub = good().sample(frac=1.0, random_state=1)
    assert list(sub["image_name"]) != NAMES
    out = validate_submission(sub, sample)
    assert list(out["image_name"]) == NAMES
    assert np.allclose(out["target"], np.linspace(0, 1, len(NAMES)))
    assert list(out.columns) == ["image_name", "target"]


def test_column_order_free_but_names_exact(sample):
    assert len(validate_submission(good()[["target", "image_name"]], sample)) == len(NAMES)
    with pytest.raises(ValueError, match="columns must be exactly"):
        validate_submission(good().rename(columns={"target": "prob"}), sample)
    with pytest.raises(ValueError, match="columns must be exactly"):
        validate_submission(good().assign(extra=1), sample)


def test_missing_ids_named_with_count(sample):
    with pytest.raises(
        ValueError,
        match=r"7 of 12 image_name\(s\) of the sample are missing: "
        r"ISIC_0000005, .* and 2 more",
    ):
        validate_submission(good().iloc[:5], sample)


def test_extra_ids(sample):
    sub = pd.concat([good(), pd.DataFrame({"image_name": ["ISIC_9999999"], "target": [0.5]})])
    with pytest.raises(ValueError, match="1 image_name.*not in the sample: ISIC_9999999"):
        validate_submission(sub, sample)


def test_duplicated_ids(sample):
    sub = pd.concat([good(), good().iloc[[3]]])
    with pytest.raises(ValueError, match="duplicated image_name.*ISIC_0000003"):
        validate_submission(sub, sample)


def test_nan_target(sample):
    sub = good()
    sub.loc[4, "target"] = np.nan
    with pytest.raises(ValueError, match=r"NaN/empty target at line 6 \(ISIC_0000004\)"):
        validate_submission(sub, sample)


@pytest.mark.parametrize("value", [1.5, -0.1, np.inf])
def test_out_of_range(sample, value):
    sub = good()
    sub.loc[2, "target"] = value
    with pytest.raises(ValueError, match=r"outside \[0, 1\] at line 4 \(ISIC_0000002\)"):
        validate_submission(sub, sample)


def test_non_numeric(sample):
    sub = good().astype({"target": object})
    sub.loc[1, "target"] = "high"
    with pytest.raises(ValueError, match=r"non-numeric target at line 3 \(ISIC_0000001\): 'high'"):
        validate_submission(sub, sample)


def test_write_submission_validates_and_writes(sample, tmp_path):
    path = tmp_path / "sub.csv"
    write_submission(good().iloc[::-1], sample, path)
    written = pd.read_csv(path)
    assert list(written["image_name"]) == NAMES
    with pytest.raises(ValueError):
        write_submission(good().iloc[:3], sample, tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


def test_cli_exit_codes(sample, tmp_path, capsys):
    sample_path = tmp_path / "sample_submission.csv"
    sample.to_csv(sample_path, index=False)
    ok = tmp_path / "ok.csv"
    good().sample(frac=1.0, random_state=0).to_csv(ok, index=False)
    assert main(["validate-submission", "--sample", str(sample_path), str(ok)]) == 0
    assert "valid" in capsys.readouterr().out

    bad = tmp_path / "bad.csv"
    text = ok.read_text().splitlines()
    text[3] = text[3].split(",")[0] + ",abc"
    bad.write_text("\n".join(text) + "\n")
    assert main(["validate-submission", "--sample", str(sample_path), str(bad)]) == 1
    err = capsys.readouterr().err
    assert "deepauc validate-submission: error:" in err and "non-numeric" in err and "line 4" in err

    empty_cell = tmp_path / "empty.csv"
    text[3] = text[3].split(",")[0] + ","
    empty_cell.write_text("\n".join(text) + "\n")
    assert main(["validate-submission", "--sample", str(sample_path), str(empty_cell)]) == 1
    assert "NaN/empty" in capsys.readouterr().err

    assert (
        main(["validate-submission", "--sample", str(sample_path), str(tmp_path / "no.csv")]) == 1
    )
    assert "no such file" in capsys.readouterr().err
