import numpy as np
import pandas as pd
import pytest

from deepauc.cli import main
from deepauc.data.folds import (
    UnbalancedFoldsError,
    assign_folds,
    check_balance,
    fold_stats,
    patient_table,
)

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is optional
    given = None


def make_table(seed=0, n_patients=300, ratio=0.03, n_external=0):
    """Competition-like rows: lognormal images per patient, ~ratio malignant images."""
    rng = np.random.default_rng(seed)
    counts = np.clip(np.round(rng.lognormal(1.2, 1.1, n_patients)), 1, 80).astype(int)
    pid = np.repeat([f"IP_{i:07d}" for i in range(n_patients)], counts)
    target = (rng.uniform(size=len(pid)) < ratio).astype(int)
    df = pd.DataFrame(
        {
            "image_name": [f"ISIC_{i:07d}" for i in range(len(pid))],
            "patient_id": pid,
            "target": target,
            "source": "competition",
        }
    )
    if n_external:
        ext = pd.DataFrame(
            {
                "image_name": [f"ISIC_9{i:06d}" for i in range(n_external)],
                "patient_id": [f"ISIC2019_{i // 2}" for i in range(n_external)],
                "target": (rng.uniform(size=n_external) < 0.2).astype(int),
                "source": "isic2019",
            }
        )
        df = pd.concat([df, ext], ignore_index=True)
    return df


def test_patients_whole_and_every_fold_positive():
    df = assign_folds(make_table(), n_folds=5, seed=0)
    assert set(df["fold"]) == set(range(5))
    assert (df.groupby("patient_id")["fold"].nunique() == 1).all()
    assert (df.groupby("fold")["target"].sum() > 0).all()


def test_ratio_size_and_patient_balance():
    df = assign_folds(make_table(seed=1, n_patients=600), n_folds=5, seed=0)
    stats = fold_stats(df)
    per_fold, total = stats.iloc[:-1], stats.iloc[-1]
    assert total["fold"] == "all" and total["images"] == len(df)
    # per-image and per-patient malignant ratio near the global one
    assert (per_fold["malignant_ratio"] - total["malignant_ratio"]).abs().max() < 0.2 * total[
        "malignant_ratio"
    ]
    assert (
        per_fold["malignant_patient_ratio"] - total["malignant_patient_ratio"]
    ).abs().max() < 0.02
    # images and patients per fold balanced
    assert per_fold["images"].max() - per_fold["images"].min() <= 0.03 * per_fold["images"].mean()
    assert per_fold["patients"].max() - per_fold["patients"].min() <= 3
    assert per_fold["malignant_patients"].max() - per_fold["malignant_patients"].min() <= 1
    # images-per-patient distribution: each fold's mean near the global mean
    assert (
        per_fold["mean_images_per_patient"] / total["mean_images_per_patient"] - 1
    ).abs().max() < 0.1


def test_deterministic_and_seed_dependent():
    table = make_table(seed=2)
    a = assign_folds(table, 5, seed=7)
    b = assign_folds(table.sample(frac=1.0, random_state=0).sort_index(), 5, seed=7)
    pd.testing.assert_series_equal(a["fold"], b["fold"])
    c = assign_folds(table, 5, seed=8)
    assert not a["fold"].equals(c["fold"])


def test_external_rows_kept_out_by_default_and_assigned_with_switch():
    table = make_table(seed=3, n_external=40)
    ext = (table["source"] != "competition").to_numpy()
    default = assign_folds(table, 5, seed=0)
    assert (default.loc[ext, "fold"] == -1).all()
    assert (default.loc[~ext, "fold"] >= 0).all()
    included = assign_folds(table, 5, seed=0, include_external=True)
    assert (included["fold"] >= 0).all()
    assert (included.groupby("patient_id")["fold"].nunique() == 1).all()
    counts = included[ext].groupby("fold").size()
    assert len(counts) == 5 and counts.max() - counts.min() <= 4


def test_external_row_of_a_competition_patient_follows_that_patient():
    table = make_table(seed=4, n_external=4)
    table.loc[len(table) - 1, "patient_id"] = table.loc[0, "patient_id"]
    out = assign_folds(table, 5, seed=0)
    assert out["fold"].iloc[-1] == out["fold"].iloc[0] >= 0
    assert (out["fold"].iloc[-4:-1] == -1).all()


def test_too_few_positive_patients_names_fold_and_suggests_fewer():
    table = make_table(seed=5, n_patients=50, ratio=0.0)
    table.loc[table["patient_id"] == "IP_0000003", "target"] = 1
    table.loc[table["patient_id"] == "IP_0000007", "target"] = 1
    with pytest.raises(
        ValueError, match=r"fold\(s\) \[\d, \d, \d\] would get no malignant.*--n-folds 2"
    ):
        assign_folds(table, 5, seed=0)
    assert set(assign_folds(table, 2, seed=0)["fold"]) == {0, 1}


def test_source_column_added_when_absent():
    table = make_table(seed=8).drop(columns="source")
    out = assign_folds(table, 3, seed=0)
    assert (out["source"] == "competition").all() and (out["fold"] >= 0).all()
    assert list(out.columns) == [*table.columns, "source", "fold"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least 2"):
        assign_folds(make_table(), 1, seed=0)
    with pytest.raises(ValueError, match="patient"):
        assign_folds(make_table(n_patients=3), 5, seed=0)


def test_size_buckets_are_quartiles():
    pat = patient_table(make_table(seed=6))
    assert set(pat["bucket"]) <= {0, 1, 2, 3}
    assert pat.groupby("bucket")["images"].max().is_monotonic_increasing


def test_cli(tmp_path, capsys):
    table = make_table(seed=7, n_patients=120, n_external=10)
    table["sex"], table["age_approx"] = "male", 50.0
    table["anatom_site_general_challenge"], table["diagnosis"] = "torso", "unknown"
    table["benign_malignant"] = np.where(table["target"] == 1, "malignant", "benign")
    src = tmp_path / "train_ext.csv"
    table.to_csv(src, index=False)
    out, report = tmp_path / "folds.csv", tmp_path / "folds.md"
    assert (
        main(
            [
                "folds",
                "--train-csv",
                str(src),
                "--out",
                str(out),
                "--n-folds",
                "4",
                "--seed",
                "3",
                "--report",
                str(report),
            ]
        )
        == 0
    )
    assert "| all |" in capsys.readouterr().out
    written = pd.read_csv(out)
    assert len(written) == len(table) and list(written.columns) == [*table.columns, "fold"]
    assert set(written["fold"]) == {-1, 0, 1, 2, 3}
    assert "malignant_ratio" in report.read_text()
    assert main(["folds", "--train-csv", str(src), "--out", str(out), "--n-folds", "1"]) == 1
    assert "at least 2" in capsys.readouterr().err


if given is not None:

    @settings(max_examples=40, deadline=None)
    @given(
        counts=st.lists(st.integers(1, 30), min_size=6, max_size=60),
        pos_every=st.integers(1, 4),
        n_folds=st.integers(2, 5),
        seed=st.integers(0, 2**31 - 1),
    )
    def test_property_patients_whole_and_strata_even(counts, pos_every, n_folds, seed):
        pid = np.repeat(np.arange(len(counts)), counts)
        target = np.zeros(len(pid), dtype=int)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        target[starts[::pos_every]] = 1  # first image of every pos_every-th patient
        df = pd.DataFrame({"patient_id": [f"P{p}" for p in pid], "target": target})
        n_pos_patients = len(starts[::pos_every])
        if n_pos_patients < n_folds or len(counts) < n_folds:
            with pytest.raises(ValueError):
                assign_folds(df, n_folds, seed)
            return
        out = assign_folds(df, n_folds, seed)
        assert out["fold"].between(0, n_folds - 1).all()
        assert (out.groupby("patient_id")["fold"].nunique() == 1).all()
        pos = out[out["target"] == 1].groupby("fold")["patient_id"].nunique()
        assert len(pos) == n_folds and pos.max() - pos.min() <= 1
        per_fold_patients = out.groupby("fold")["patient_id"].nunique()
        assert per_fold_patients.max() - per_fold_patients.min() <= 2 * 4  # +-1 per stratum


def write_cli_table(path, df):
    df = df.assign(sex="male", age_approx=50, anatom_site_general_challenge="torso")
    df["diagnosis"] = np.where(df["target"] == 1, "melanoma", "nevus")
    df["benign_malignant"] = np.where(df["target"] == 1, "malignant", "benign")
    df.to_csv(path, index=False)


def test_a_patient_too_large_for_a_fold_is_an_error_naming_it(tmp_path, capsys):
    df = make_table(seed=2, n_patients=60)
    df = df.assign(patient_id=df["patient_id"].where(df.index >= 200, "IP_HUGE"))
    write_cli_table(tmp_path / "t.csv", df)
    out = tmp_path / "f.csv"
    args = ["folds", "--train-csv", str(tmp_path / "t.csv"), "--out", str(out), "--n-folds", "5"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unbalanced folds" in err
    assert "IP_HUGE (200 images)" in err and "images per fold [" in err
    assert not out.exists()
    # the same table without the giant patient passes
    write_cli_table(tmp_path / "t.csv", make_table(seed=2, n_patients=60))
    assert main(args) == 0 and out.exists()


def test_malignant_images_badly_unbalanced_is_an_error():
    rows = [(f"P{p}", int(p == 0 or p == 1)) for p in range(40) for _ in range(3)]
    df = pd.DataFrame(rows, columns=["patient_id", "target"])
    df.loc[(df["patient_id"] == "P0"), "target"] = 1  # 3 malignant images
    df.loc[(df["patient_id"] == "P1").to_numpy().nonzero()[0][1:], "target"] = 0  # 1
    big = pd.DataFrame({"patient_id": "P0", "target": [1] * 12})  # P0: 15 malignant images
    df = pd.concat([df, big], ignore_index=True)
    out = assign_folds(df, 2, seed=0)
    assert sorted(out.groupby("fold")["target"].sum()) == [1, 15]
    with pytest.raises(UnbalancedFoldsError, match=r"malignant per fold \[") as err:
        check_balance(out, 2)
    assert "P0 (15 images)" in str(err.value)
    check_balance(assign_folds(make_table(seed=1, n_patients=600), 5, seed=0), 5)  # balanced


# ---- the tfrecord scheme: the public notebooks' folds from the resized sets' TFRecord groups
def _with_tfrecords(seed=0, n_external=0):
    table = make_table(seed=seed, n_patients=300, ratio=0.05, n_external=n_external)
    # the publisher's groups hold whole patients
    patient_group = {p: i % 15 for i, p in enumerate(table["patient_id"].unique())}
    table["tfrecord"] = table["patient_id"].map(patient_group)
    table.loc[table["source"] != "competition", "tfrecord"] = 3  # 2019's own numbering
    return table


def test_tfrecord_scheme_deals_groups_as_kfold_does():
    from sklearn.model_selection import KFold

    from deepauc.data.folds import tfrecord_folds

    out = tfrecord_folds(_with_tfrecords(n_external=20), n_folds=5, seed=42)
    expected = {}
    for k, (_, valid) in enumerate(KFold(5, shuffle=True, random_state=42).split(np.arange(15))):
        expected.update({int(g): k for g in valid})
    comp = out[out["source"] == "competition"]
    assert (comp["fold"] == comp["tfrecord"].map(expected)).all()
    assert (out.loc[out["source"] != "competition", "fold"] == -1).all()
    assert comp.groupby("fold")["tfrecord"].nunique().tolist() == [3] * 5  # 15 into 5
    assert out.groupby("patient_id")["fold"].nunique().max() == 1


@pytest.mark.parametrize(
    "cell, message",
    [("", "tfrecord must be a whole number >= 0"), ("2.5", "whole number"), ("x", "not numeric")],
)
def test_tfrecord_scheme_bad_cells_name_the_line(tmp_path, capsys, cell, message):
    table = _with_tfrecords()
    table["sex"], table["age_approx"] = "male", 50.0
    table["anatom_site_general_challenge"], table["diagnosis"] = "torso", "unknown"
    table["benign_malignant"] = np.where(table["target"] == 1, "malignant", "benign")
    table["tfrecord"] = table["tfrecord"].astype(str)
    table.loc[4, "tfrecord"] = cell
    src = tmp_path / "train.csv"
    table.to_csv(src, index=False)
    args = [
        "folds",
        "--train-csv",
        str(src),
        "--out",
        str(tmp_path / "f.csv"),
        "--scheme",
        "tfrecord",
    ]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "line 6" in err[0] and str(src) in err[0]
    assert not (tmp_path / "f.csv").exists()


def test_tfrecord_scheme_needs_the_column_and_refuses_include_external(tmp_path, capsys):
    from deepauc.data.folds import tfrecord_folds

    with pytest.raises(ValueError, match="needs a 'tfrecord' column"):
        tfrecord_folds(make_table(), 5, 42)
    with pytest.raises(ValueError, match="only 3 tfrecord group"):
        tfrecord_folds(_with_tfrecords().assign(tfrecord=lambda d: d["tfrecord"] % 3), 5, 42)


def test_tfrecord_scheme_from_the_resized_layout_through_the_cli(tmp_path, capsys):
    """Deotte's jpeg-melanoma-NxN train.csv (its tfrecord -1 duplicate included) through
    `deepauc external` and `deepauc folds --scheme tfrecord`."""
    from layout_fixtures import write_resized2020

    root = write_resized2020(tmp_path / "jpeg-melanoma-64x64", n_extra=60)
    merged, folds = tmp_path / "merged.csv", tmp_path / "folds.csv"
    assert main(["external", "--train-csv", str(root / "train.csv"), "--out", str(merged)]) == 0
    report = tmp_path / "folds.md"
    args = ["folds", "--train-csv", str(merged), "--out", str(folds), "--n-folds", "3"]
    assert main([*args, "--seed", "42", "--scheme", "tfrecord", "--report", str(report)]) == 0
    out = pd.read_csv(folds, dtype={"image_name": str})
    assert -1 not in set(out["tfrecord"])  # the publisher's duplicate is dropped
    groups = np.sort(out["tfrecord"].unique())
    from sklearn.model_selection import KFold

    for k, (_, valid) in enumerate(KFold(3, shuffle=True, random_state=42).split(groups)):
        assert set(out.loc[out["fold"] == k, "tfrecord"]) == set(groups[valid])
    text = report.read_text()
    assert "## Scheme: tfrecord" in text and "patients with validated images in two folds" in text
