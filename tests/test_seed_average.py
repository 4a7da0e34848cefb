"""`deepauc average`: one model's prediction directories of several seeds become their mean,
row by row whatever each file's order; directories that disagree are refused in one line.
And the Makefile's SEEDS switch: one run dir per seed, averaged into one member."""

import numpy as np
import pandas as pd

from deepauc.cli import main
from deepauc.pipeline.pred_files import read_oof, read_test, read_test_folds, write_pred_dir
from helpers import make_dry_run, make_workdir

NAMES = [f"ISIC_{i:07d}" for i in range(8)]


def _seed_dir(root, name, seed, order=None, folds=(0, 1)):
    rng = np.random.default_rng(seed)
    oof = pd.DataFrame(
        {
            "image_name": NAMES,
            "fold": [i % 2 for i in range(8)],
            "source": "competition",
            "target": [1, 0, 0, 1, 0, 0, 1, 0],
            "pred": rng.uniform(size=8),
        }
    )
    test = pd.DataFrame({"image_name": ["t1", "t2", "t3"], "pred": rng.uniform(size=3)})
    test_folds = test[["image_name"]].copy()
    for k in folds:
        test_folds[f"fold{k}"] = rng.uniform(size=3)
    if order is not None:
        oof, test, test_folds = oof.iloc[order], test.iloc[order[:3] % 3], test_folds
    write_pred_dir(root / name, oof.reset_index(drop=True), test.reset_index(drop=True), test_folds)
    return root / name


def test_the_mean_of_every_file_row_by_row(tmp_path):
    a = _seed_dir(tmp_path, "m_s0", 0)
    b = _seed_dir(tmp_path, "m_s1", 1, order=np.array([7, 6, 5, 4, 3, 2, 1, 0]))
    assert main(["average", "--out", str(tmp_path / "m"), "--preds", str(a), str(b)]) == 0
    out = read_oof(tmp_path / "m").set_index("image_name")
    for x in (a, b):
        mine = read_oof(x).set_index("image_name")
        assert (out.loc[mine.index, "target"] == mine["target"]).all()
    expected = (
        read_oof(a).set_index("image_name")["pred"] + read_oof(b).set_index("image_name")["pred"]
    ) / 2
    assert np.allclose(out["pred"], expected.loc[out.index])
    test = read_test(tmp_path / "m").set_index("image_name")["pred"]
    ta, tb = (read_test(x).set_index("image_name")["pred"] for x in (a, b))
    assert np.allclose(test, ((ta + tb) / 2).loc[test.index])
    folds = read_test_folds(tmp_path / "m").set_index("image_name")
    fa, fb = (read_test_folds(x).set_index("image_name") for x in (a, b))
    assert np.allclose(folds["fold1"], ((fa["fold1"] + fb["fold1"]) / 2).loc[folds.index])


def test_other_fold_columns_leave_out_the_per_fold_test(tmp_path):
    a = _seed_dir(tmp_path, "m_s0", 0)
    b = _seed_dir(tmp_path, "m_s1", 1, folds=(0,))
    assert main(["average", "--out", str(tmp_path / "m"), "--preds", str(a), str(b)]) == 0
    assert read_test_folds(tmp_path / "m") is None


def test_disagreeing_directories_are_one_line(tmp_path, capsys):
    a = _seed_dir(tmp_path, "m_s0", 0)
    b = _seed_dir(tmp_path, "m_s1", 1)
    oof = read_oof(b)
    oof.loc[2, "target"] = 1
    write_pred_dir(b, oof, read_test(b))
    assert main(["average", "--out", str(tmp_path / "m"), "--preds", str(a), str(b)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disagree on column 'target'" in err[0]
    assert not (tmp_path / "m").exists()
    assert main(["average", "--out", str(tmp_path / "m"), "--preds", str(a)]) == 1
    assert "average needs two or more" in capsys.readouterr().err
    assert main(["average", "--out", str(a), "--preds", str(a), str(b)]) == 1
    assert "is also one of --preds" in capsys.readouterr().err


def test_seeds_give_a_run_dir_per_seed_and_one_averaged_member(tmp_path):
    make_workdir(tmp_path, configs="demo")
    target = "preds/demo_aucm_lite0_64/oof.csv"
    lines = make_dry_run(tmp_path, "SEEDS=3 4", target).splitlines()
    trains = [ln for ln in lines if " train " in ln and "aucm" in ln]
    for seed in (3, 4):
        mine = [ln for ln in trains if f"--set name=demo_aucm_lite0_64_s{seed} " in ln]
        assert len(mine) == 3  # one per fold
        assert all(f"--set train.seed={seed} " in ln for ln in mine)
        assert all(f"--set model.init_from=models/demo_ce_lite0_64_s{seed}" in ln for ln in mine)
    averages = [ln for ln in lines if " average " in ln]
    assert averages[-1].endswith(
        "--out preds/demo_aucm_lite0_64 --preds preds/demo_aucm_lite0_64_s3 preds/demo_aucm_lite0_64_s4"
    )
    plain = make_dry_run(tmp_path, target, check=False)
    assert " average " not in plain and "_s0" not in plain
