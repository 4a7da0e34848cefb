"""deepauc report --compare: the paired numbers are DeLong's and the patient bootstrap's on the
shared competition OOF rows (aligned by image_name, external rows left out), and the refusals."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from deepauc import cli
from deepauc.pipeline.pred_files import read_oof, write_pred_dir
from deepauc.pipeline.report import write_report
from deepauc.pipeline.report_compare import (
    BOOT_SEED,
    N_BOOT,
    comparison_table,
    display_comparisons,
    patients_of,
)
from deepauc.stats import bootstrap_groups, delong


def folds_table(n=180, n_ext=30, seed=0):
    """Competition images of 3 per patient, external images of their own, in 3 folds."""
    rng = np.random.default_rng(seed)
    m = n + n_ext
    patient = np.arange(m) // 3
    return pd.DataFrame(
        {
            "image_name": [f"ISIC_{i:07d}" for i in range(m)],
            "patient_id": [f"IP_{p:05d}" for p in patient],
            "target": (rng.uniform(size=m) < 0.25).astype(int),
            "fold": patient % 3,
            "source": ["competition"] * n + ["isic2019"] * n_ext,
        }
    )


def pred_dir(path, table, signal, seed, order=None):
    """A prediction dir over ``table``'s rows (in ``order``) with predictions of some signal."""
    rng = np.random.default_rng(seed)
    y = table["target"].to_numpy()
    oof = table[["image_name", "fold", "source", "target"]].assign(
        pred=1 / (1 + np.exp(-(signal * y + rng.normal(size=len(y)))))
    )
    write_pred_dir(path, oof if order is None else oof.iloc[order], None)
    return oof


def setup(tmp_path):
    table = folds_table()
    folds_csv = tmp_path / "folds.csv"
    table.to_csv(folds_csv, index=False)
    a = pred_dir(tmp_path / "ce", table, 1.0, seed=1)
    order = np.random.default_rng(9).permutation(len(table))  # B's rows in another order
    b = pred_dir(tmp_path / "aucm", table, 1.6, seed=2, order=order)
    return table, folds_csv, a, b


def test_compare_gives_delong_and_patient_bootstrap_on_competition_rows(tmp_path, capsys):
    table, folds_csv, a, b = setup(tmp_path)
    out = tmp_path / "cv.md"
    args = ["report", "--preds", str(tmp_path / "ce"), str(tmp_path / "aucm"), "--out", str(out)]
    args += ["--folds", str(folds_csv), "--compare", str(tmp_path / "ce"), str(tmp_path / "aucm")]
    assert cli.main(args) == 0

    comp = table["source"] == "competition"
    y, sa, sb = table.loc[comp, "target"], a.loc[comp, "pred"], b.loc[comp, "pred"]
    patients = table.loc[comp, "patient_id"]
    dl = delong(y, sa, sb)
    boot = bootstrap_groups(y, sa, sb, patients, n_boot=N_BOOT, seed=BOOT_SEED)
    assert boot.method == "bootstrap over 60 groups"  # 180 images, 3 per patient
    text = out.read_text()
    auc_a, auc_b = roc_auc_score(y, sa), roc_auc_score(y, sb)
    for result in (dl, boot):
        row = (
            f"| ce | aucm | {result.method} | 180 | {auc_a:.4f} | {auc_b:.4f} | "
            f"{result.difference:+.4f} | [{result.low:+.4f}, {result.high:+.4f}] | "
        )
        assert row in text, (row, text)
    assert boot.difference == pytest.approx(auc_b - auc_a, abs=1e-12)
    assert "## Paired comparisons" in text and f"{N_BOOT} resamples" in text
    capsys.readouterr()


def test_compare_table_numbers(tmp_path):
    table, folds_csv, a, b = setup(tmp_path)
    dirs = [tmp_path / "ce", tmp_path / "aucm"]
    # B - A the other way round: the pair is ordered as given
    frames = [read_oof(d) for d in dirs]
    result = comparison_table(
        [[str(dirs[1]), str(dirs[0])]], dirs, ["ce", "aucm"], frames, folds_csv
    )
    comp = table["source"] == "competition"
    dl = delong(table.loc[comp, "target"], b.loc[comp, "pred"], a.loc[comp, "pred"])
    first = result.iloc[0]
    assert (first["A"], first["B"], first["method"]) == ("aucm", "ce", "DeLong")
    assert (first["B − A"], first["low"], first["high"], first["p"]) == pytest.approx(
        (dl.difference, dl.low, dl.high, dl.p_value), abs=1e-12
    )


def run_compare(tmp_path, dirs, pair, folds_csv):
    args = ["report", "--preds", *map(str, dirs), "--out", str(tmp_path / "cv.md")]
    args += ["--compare", *map(str, pair)]
    return cli.main(args + (["--folds", str(folds_csv)] if folds_csv else []))


def refusal(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_compare_refusals_are_one_line(tmp_path, capsys):
    table, folds_csv, _, _ = setup(tmp_path)
    dirs = [tmp_path / "ce", tmp_path / "aucm"]
    assert run_compare(tmp_path, dirs, dirs, None) == 1
    assert "--compare needs --folds" in refusal(capsys)

    assert run_compare(tmp_path, dirs, [dirs[0], tmp_path / "other"], folds_csv) == 1
    assert f"--compare {tmp_path / 'other'} is not among --preds" in refusal(capsys)

    assert run_compare(tmp_path, dirs, [dirs[0], dirs[0]], folds_csv) == 1
    assert "names one directory twice" in refusal(capsys)

    # a directory holding fewer competition rows: not the same image_name set
    fewer = table[table["image_name"] != "ISIC_0000005"]
    pred_dir(tmp_path / "short", fewer, 1.0, seed=3)
    assert (
        run_compare(
            tmp_path, [dirs[0], tmp_path / "short"], [dirs[0], tmp_path / "short"], folds_csv
        )
        == 1
    )
    err = refusal(capsys)
    assert "different image_name sets" in err and "ISIC_0000005" in err

    # a folds table without patient ids, or without some compared images
    table.drop(columns="patient_id").to_csv(tmp_path / "bare.csv", index=False)
    assert run_compare(tmp_path, dirs, dirs, tmp_path / "bare.csv") == 1
    assert "patient_id" in refusal(capsys)
    assert not (tmp_path / "cv.md").exists()


def test_patients_missing_an_id_are_their_own_group(tmp_path):
    table, folds_csv, a, b = setup(tmp_path)
    table.loc[:5, "patient_id"] = ""  # two patients' ids lost: six images, six groups
    table.to_csv(folds_csv, index=False)
    comp = table[table["source"] == "competition"]
    patients = patients_of(comp["image_name"], folds_csv)
    assert len(set(patients)) == 60 - 2 + 6
    summary = write_report(
        [tmp_path / "ce", tmp_path / "aucm"],
        tmp_path / "cv.md",
        folds_csv=folds_csv,
        compare=[[str(tmp_path / "ce"), str(tmp_path / "aucm")]],
    )
    assert "bootstrap over 64 groups" in (tmp_path / "cv.md").read_text()
    assert list(summary["model"]) == ["ce", "aucm"]


def test_p_values_are_shown_to_their_resolution():
    table = pd.DataFrame(
        {
            "A": ["a"] * 4,
            "B": ["b"] * 4,
            "method": ["DeLong", "DeLong", "bootstrap over 9 groups", "bootstrap over 9 groups"],
            "rows": [10] * 4,
            "AUC A": [0.7] * 4,
            "AUC B": [0.8] * 4,
            "B − A": [0.1, -0.05, 0.1, 0.1],
            "low": [0.05, -0.1, 0.04, 0.04],
            "high": [0.15, 0.0, 0.16, 0.16],
            "p": [3e-6, 0.04321, 0.0, 0.002],
        }
    )
    shown = display_comparisons(table)
    assert list(shown["p"]) == ["<0.0001", "0.0432", f"<{2 / N_BOOT:g}", "0.0020"]
    assert list(shown["B − A"])[:2] == ["+0.1000", "-0.0500"]
    assert shown["95% CI"].iloc[1] == "[-0.1000, +0.0000]"
