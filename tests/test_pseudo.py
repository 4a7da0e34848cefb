"""Pseudo-labelling (deepauc pseudo, data.pseudo_csv): labels chosen by rank from each fold
model's own test predictions, a table refused when stale, under other folds or of the run's own
output, and pseudo rows that train but never validate."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import rankdata

from deepauc import cli
from deepauc.io import load_torch
from deepauc.pipeline.experiment import load_experiment
from deepauc.pipeline.pred_files import read_oof, write_pred_dir
from deepauc.pipeline.predict import predict_experiment
from deepauc.pipeline.provenance import ProvenanceMismatch, folds_of_table
from deepauc.pipeline.pseudo import select_by_rank, write_pseudo
from deepauc.pipeline.pseudo_rows import read_pseudo_table, record_path
from deepauc.pipeline.train import train_fold
from helpers import write_experiment

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]
NAN = np.nan


# ------------------------------------------------------------------ selection by rank
def test_rank_selection_hand_worked_with_ties():
    scores = [0.9, 0.8, 0.8, 0.5, 0.1, 0.1, 0.1, 0.3, 0.7, 0.6]
    # n = 10: top 2 -> the 0.8 pair straddles the cut (3 rows score >= 0.8), so only 0.9;
    # bottom 3 -> the three tied 0.1s exactly fill it
    got = select_by_rank(scores, 0.2, 0.3)
    np.testing.assert_array_equal(got, [1, NAN, NAN, NAN, 0, 0, 0, NAN, NAN, NAN])
    # top 3 takes the pair; bottom 2 would split the 0.1s, so none is labelled
    got = select_by_rank(scores, 0.3, 0.2)
    np.testing.assert_array_equal(got, [1, 1, 1, NAN, NAN, NAN, NAN, NAN, NAN, NAN])
    # F·n in floating point: 0.29 · 100 is 28.999..., meaning 29 rows
    assert np.nansum(select_by_rank(np.arange(100.0), 0.29, 0.0)) == 29
    assert np.isnan(select_by_rank(scores, 0.0, 0.0)).all()


def test_rank_selection_matches_scipy_ranks_on_tied_scores():
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(1, 60))
        s = rng.integers(0, 8, n).astype(float)  # many ties
        pos, neg = rng.uniform(0, 0.5, 2)
        got = select_by_rank(s, pos, neg)
        k_pos, k_neg = int(np.floor(pos * n + 1e-9)), int(np.floor(neg * n + 1e-9))
        # a row is in the top k when even its worst tied rank (method max) is within k
        want = np.full(n, NAN)
        want[rankdata(s, method="max") <= k_neg] = 0
        want[rankdata(-s, method="max") <= k_pos] = 1
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("pos, neg", [(0.6, 0.5), (-0.1, 0.5), (0.1, 1.5)])
def test_bad_fractions_are_one_line(tmp_path, capsys, pos, neg):
    argv = ["pseudo", "--preds", str(tmp_path), "--out", str(tmp_path / "p.csv")]
    assert cli.main([*argv, "--pos-top", str(pos), "--neg-bottom", str(neg)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("--pos-top" in err[0] or "--neg-bottom" in err[0])


# ------------------------------------------------------------------ the source predictions
def fake_preds(root, name: str, folds: str, test_names, seed: int = 0, runs=None) -> object:
    """A predict-style directory: 3 fold columns of random test scores and a record naming
    the models of run ``runs`` (default: ``name``)."""
    rng = np.random.default_rng(seed)
    d = root / "preds" / name
    oof = pd.DataFrame(
        {
            "image_name": [f"ISIC_{i:07d}" for i in range(9)],
            "fold": [i % 3 for i in range(9)],
            "source": "competition",
            "target": [int(i < 3) for i in range(9)],
            "pred": rng.uniform(size=9),
        }
    )
    per_fold = pd.DataFrame({"image_name": list(test_names)})
    for k in range(3):
        per_fold[f"fold{k}"] = rng.uniform(size=len(per_fold))
    test = pd.DataFrame(
        {"image_name": per_fold["image_name"], "pred": per_fold.iloc[:, 1:].mean(axis=1)}
    )
    run = runs or name
    models = {str(k): {"path": f"models/{run}/fold{k}/model.pt", "sha256": "x"} for k in range(3)}
    write_pred_dir(d, oof, test, per_fold, {"folds": folds, "config": "c", "models": models})
    return d


def test_each_fold_column_comes_from_its_own_model_only(tmp_path):
    names = [f"T{i:03d}" for i in range(40)]
    d = fake_preds(tmp_path, "src", "f", names)
    first = write_pseudo(d, tmp_path / "a.csv", 0.1, 0.5)
    a = read_pseudo_table(tmp_path / "a.csv")
    assert first["labelled"]["fold0"] == {"1": 4, "0": 20}
    assert first["source"]["models"]["2"]["path"] == "models/src/fold2/model.pt"
    assert first["runs"] == ["src"] and first["folds"] == "f"
    # the other folds' predictions and the fold mean shuffled: fold 0's column is unchanged
    per_fold = pd.read_csv(d / "test_folds.csv")
    rng = np.random.default_rng(1)
    for col in ("fold1", "fold2"):
        per_fold[col] = rng.permutation(per_fold[col].to_numpy())
    test = pd.read_csv(d / "test.csv").assign(pred=rng.uniform(size=40))
    record = json.loads((d / "provenance.json").read_text())
    write_pred_dir(d, read_oof(d), test, per_fold, record)
    write_pseudo(d, tmp_path / "b.csv", 0.1, 0.5)
    b = read_pseudo_table(tmp_path / "b.csv")
    pd.testing.assert_series_equal(a["fold0"], b["fold0"])
    assert not a["fold1"].equals(b["fold1"]) and not a["fold2"].equals(b["fold2"])
    # and fold 0's labels are the rank choice on fold 0's scores
    want = select_by_rank(per_fold["fold0"], 0.1, 0.5)
    np.testing.assert_array_equal(b["fold0"].to_numpy(), want)


@pytest.mark.parametrize("change", ["blend", "ensemble", "no record", "no per-fold"])
def test_sources_mixing_folds_are_refused_in_one_line(tmp_path, capsys, change):
    d = fake_preds(tmp_path, "src", "f", ["T1", "T2"])
    record = json.loads((d / "provenance.json").read_text())
    per_fold = pd.read_csv(d / "test_folds.csv")
    if change in ("blend", "ensemble"):
        write_pred_dir(d, read_oof(d), pd.read_csv(d / "test.csv"), per_fold, {**record, change: 1})
    elif change == "no record":
        (d / "provenance.json").unlink()
    else:
        write_pred_dir(d, read_oof(d), pd.read_csv(d / "test.csv"), None, record)
    out = tmp_path / "p.csv"
    assert cli.main(["pseudo", "--preds", str(d), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(d) in err[0], err
    assert not out.exists()


# ------------------------------------------------------------------ training with pseudo rows
@pytest.fixture
def pseudo_setup(tiny_data):
    """A source run's predictions on the 8 tiny test images, under the tiny folds, and their
    table: fold k labels 2 test images 1 and 4 images 0."""
    test_names = pd.read_csv(tiny_data["test_csv"])["image_name"]
    folds = folds_of_table(tiny_data["train_csv"])
    d = fake_preds(tiny_data["root"], "src", folds, test_names)
    table = tiny_data["root"] / "pseudo.csv"
    write_pseudo(d, table, 0.25, 0.5)
    return tiny_data, d, table


def pseudo_experiment(tiny, table, name="ce"):
    return write_experiment(tiny, name, folds=[0], data={"pseudo_csv": str(table)})


def logged_rows(cfg) -> str:
    return next(
        ln for ln in (cfg.run_dir(0) / "train.log").read_text().splitlines() if "train rows" in ln
    )


def test_pseudo_rows_train_but_never_validate(pseudo_setup):
    tiny, _, table = pseudo_setup
    plain = load_experiment(write_experiment(tiny, "plain", folds=[0]))
    cfg = load_experiment(pseudo_experiment(tiny, table))
    assert cfg.fingerprint() != plain.fingerprint()
    train_fold(plain, 0, CPU)
    path = train_fold(cfg, 0, CPU)
    record = load_torch(path)["provenance"]
    assert record["pseudo"]["rows"] == 6 and record["pseudo"]["positives"] == 2
    assert "pseudo" not in load_torch(plain.run_dir(0) / "model.pt")["provenance"]
    # 32 training rows (folds 1 and 2: 15 each, 2 external) + 6 pseudo; fold 0 validates 16
    assert "32 train rows" in logged_rows(plain) and "38 train rows" in logged_rows(cfg)
    assert "16 validation rows" in logged_rows(plain) and "16 validation rows" in logged_rows(cfg)
    oof_plain = read_oof(predict_experiment(plain, CPU))
    oof = read_oof(predict_experiment(cfg, CPU))
    assert list(oof["image_name"]) == list(oof_plain["image_name"])
    test_names = set(pd.read_csv(tiny["test_csv"])["image_name"])
    assert not set(oof["image_name"]) & test_names


def test_changed_table_refuses_the_model_until_retrained(pseudo_setup):
    tiny, d, table = pseudo_setup
    cfg = load_experiment(pseudo_experiment(tiny, table))
    path = train_fold(cfg, 0, CPU)
    stamp = path.stat().st_mtime_ns
    assert train_fold(cfg, 0, CPU) == path and path.stat().st_mtime_ns == stamp  # same table
    write_pseudo(d, table, 0.125, 0.5)  # fold 0: 1 positive instead of 2
    with pytest.raises(ProvenanceMismatch, match="other pseudo-labelled test rows") as err:
        train_fold(cfg, 0, CPU)
    assert f"delete {cfg.run_dir(0).parent}" in str(err.value)
    assert path.stat().st_mtime_ns == stamp
    shutil.rmtree(cfg.run_dir(0).parent)  # what the message says to do
    assert load_torch(train_fold(cfg, 0, CPU))["provenance"]["pseudo"]["rows"] == 5


def test_other_folds_labels_do_not_retrain_fold0(pseudo_setup):
    tiny, d, table = pseudo_setup
    cfg = load_experiment(pseudo_experiment(tiny, table))
    stamp = train_fold(cfg, 0, CPU).stat().st_mtime_ns
    per_fold = pd.read_csv(d / "test_folds.csv")
    per_fold["fold2"] = per_fold["fold2"].to_numpy()[::-1]
    write_pred_dir(
        d,
        read_oof(d),
        pd.read_csv(d / "test.csv"),
        per_fold,
        json.loads((d / "provenance.json").read_text()),
    )
    write_pseudo(d, table, 0.25, 0.5)
    assert train_fold(cfg, 0, CPU).stat().st_mtime_ns == stamp


def train_error(yaml, capsys) -> str:
    assert cli.main(["train", "--config", str(yaml)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_stale_or_edited_table_is_refused_in_one_line(pseudo_setup, capsys):
    tiny, d, table = pseudo_setup
    yaml = pseudo_experiment(tiny, table)
    # the source re-predicted after the table was made
    per_fold = pd.read_csv(d / "test_folds.csv")
    per_fold["fold0"] = per_fold["fold0"] * 0.5
    record = json.loads((d / "provenance.json").read_text())
    write_pred_dir(d, read_oof(d), pd.read_csv(d / "test.csv"), per_fold, record)
    msg = train_error(yaml, capsys)
    assert str(table) in msg and "test_folds.csv, which changed or is gone" in msg
    # remade, then edited by hand
    write_pseudo(d, table, 0.25, 0.5)
    table.write_text(table.read_text().replace(",1,", ",0,", 1))
    assert "edited after" in train_error(yaml, capsys)
    # remade, its record lost
    write_pseudo(d, table, 0.25, 0.5)
    record_path(table).unlink()
    assert "no record" in train_error(yaml, capsys)
    assert not (tiny["root"] / "models" / "ce").exists()


def test_other_folds_or_own_run_are_refused_in_one_line(pseudo_setup, capsys):
    tiny, _, table = pseudo_setup
    other = fake_preds(
        tiny["root"], "other", "0123456789abcdef", pd.read_csv(tiny["test_csv"])["image_name"]
    )
    write_pseudo(other, table, 0.25, 0.5)
    msg = train_error(pseudo_experiment(tiny, table), capsys)
    assert "another fold assignment" in msg and str(tiny["train_csv"]) in msg
    folds = folds_of_table(tiny["train_csv"])
    own = fake_preds(tiny["root"], "ce", folds, pd.read_csv(tiny["test_csv"])["image_name"])
    write_pseudo(own, table, 0.25, 0.5)
    msg = train_error(pseudo_experiment(tiny, table, "ce"), capsys)
    assert "the predictions of run ce itself" in msg
    # an averaged directory named otherwise whose input is the run's own predictions
    seeds = fake_preds(tiny["root"], "avg", folds, pd.read_csv(tiny["test_csv"])["image_name"])
    record = {"folds": folds, "inputs": [str(own)]}
    write_pred_dir(
        seeds,
        read_oof(seeds),
        pd.read_csv(seeds / "test.csv"),
        pd.read_csv(seeds / "test_folds.csv"),
        record,
    )
    write_pseudo(seeds, table, 0.25, 0.5)
    assert "run ce itself" in train_error(pseudo_experiment(tiny, table, "ce"), capsys)


def test_table_rows_must_be_test_images(pseudo_setup, capsys):
    tiny, d, table = pseudo_setup
    per_fold = pd.read_csv(d / "test_folds.csv")
    per_fold.loc[3, "image_name"] = "ISIC_0000001"  # a training image, line 5 of the table
    write_pred_dir(
        d,
        read_oof(d),
        per_fold[["image_name"]].assign(pred=0.5),
        per_fold,
        json.loads((d / "provenance.json").read_text()),
    )
    write_pseudo(d, table, 0.5, 0.5)
    msg = train_error(pseudo_experiment(tiny, table), capsys)
    assert "not images of" in msg and "line 5 (ISIC_0000001)" in msg, msg


def test_pseudo_csv_needs_a_test_table(tiny_data):
    with pytest.raises(ValueError, match="data.pseudo_csv needs"):
        load_experiment(
            write_experiment(tiny_data, "ce", data={"pseudo_csv": "p.csv", "test_csv": ""})
        )


# ------------------------------------------------------------------ the Makefile route
def dry_demo(tmp_path, name: str, *args: str) -> str:
    work = tmp_path / name
    work.mkdir()
    shutil.copy(REPO / "Makefile", work / "Makefile")
    shutil.copytree(REPO / "configs" / "demo", work / "configs" / "demo")
    cmd = ["make", "-n", "--no-print-directory", "-C", str(work), f"PY={sys.executable}"]
    proc = subprocess.run([*cmd, "demo", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_makefile_without_pseudo_from_runs_what_it_ran_before(tmp_path):
    plain = dry_demo(tmp_path, "plain")
    # every pseudo hook forced empty: the Makefile as it was without the route
    without = dry_demo(tmp_path, "without", "pseudo_set=", "pseudo_dep=")
    assert plain == without and "pseudo" not in plain
    # and each hook is glued to the text before it, so an empty one adds no blank either
    rules = (REPO / "Makefile").read_text()
    hooks = re.findall(
        r"(.)\$\((?:call pseudo_(?:dep|set),\$\(1\)\)|if \$\(PSEUDO_FROM\), --var)", rules
    )
    assert len(hooks) == 7 and not any(c.isspace() for c in hooks), hooks
    assert " train --config configs/demo/aucm_lite0_64.yaml" in plain


def test_makefile_pseudo_from_feeds_the_other_models_only(tmp_path):
    text = dry_demo(tmp_path, "on", "PSEUDO_FROM=ce_lite0_64", "PSEUDO_ARGS=--pos-top 0.01")
    lines = text.splitlines()
    table = "data/interim/demo_pseudo_ce_lite0_64.csv"
    made = [i for i, ln in enumerate(lines) if " pseudo --preds " in ln]
    assert len(made) == 1
    assert lines[made[0]].endswith(
        f"pseudo --preds preds/demo_ce_lite0_64 --out {table} --pos-top 0.01"
    )
    runs = [ln for ln in lines if " train --config " in ln or " predict --config " in ln]
    aucm = [ln for ln in runs if "aucm_lite0_64" in ln]
    ce = [ln for ln in runs if "ce_lite0_64.yaml" in ln and "aucm" not in ln]
    assert len(aucm) == 4 and all(ln.endswith(f"--set data.pseudo_csv={table}") for ln in aucm)
    assert len(ce) == 4 and not any("pseudo" in ln for ln in ce)
    first_aucm = lines.index(aucm[0])
    assert made[0] < first_aucm  # the table is made before the runs that read it
    # the stage 2 as the source: neither it nor its stage 1 trains on its own predictions
    text = dry_demo(tmp_path, "stage2", "PSEUDO_FROM=aucm_lite0_64")
    assert "data.pseudo_csv" not in text


def test_fingerprint_says_only_whether_pseudo_rows_are_on(tiny_data):
    path = write_experiment(tiny_data, "ce")
    plain = load_experiment(path).fingerprint()
    assert load_experiment(path, ["data.pseudo_csv=null"]).fingerprint() == plain
    a = load_experiment(path, ["data.pseudo_csv=a.csv"]).fingerprint()
    assert a != plain and a == load_experiment(path, ["data.pseudo_csv=./b/a.csv"]).fingerprint()


def test_table_cells_other_than_1_0_or_empty_are_named(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("image_name,fold0,fold1\nT1,1,\nT2,0.5,0\nT3,,yes\n")
    with pytest.raises(ValueError, match=r"column 'fold0' must be 1, 0 or empty at line 3"):
        read_pseudo_table(path)
    path.write_text("image_name,fold0,fold1\nT1,1,\nT2,0,0\nT3,,yes\n")
    with pytest.raises(ValueError, match=r"column 'fold1' must be 1, 0 or empty at line 4"):
        read_pseudo_table(path)
    path.write_text("image_name,fold0,fold1\nT1,1,\nT2,0,0\n")
    table = read_pseudo_table(path)
    np.testing.assert_array_equal(table["fold1"], [NAN, 0.0])
