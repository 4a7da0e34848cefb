"""Every output records what made it; a stale model or OOF file is refused, never reused."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from deepauc import cli
from deepauc.pipeline.blend import blend_dirs
from deepauc.pipeline.experiment import load_experiment
from deepauc.pipeline.pred_files import read_oof, write_pred_dir
from deepauc.pipeline.predict import predict_experiment
from deepauc.pipeline.provenance import ProvenanceMismatch, fold_fingerprint, folds_of_table
from deepauc.pipeline.report import write_report
from deepauc.pipeline.train import train_fold
from helpers import write_experiment

CPU = torch.device("cpu")


def rotate_folds(csv) -> pd.DataFrame:
    """Move every validated row to the next fold: a new fold assignment of the same images."""
    table = pd.read_csv(csv)
    inside = table["fold"] >= 0
    table.loc[inside, "fold"] = (table.loc[inside, "fold"] + 1) % 3
    table.to_csv(csv, index=False)
    return table


def train_all(cfg):
    return [train_fold(cfg, fold, CPU) for fold in cfg.fold_ids()]


def scored_by_own_trainer(oof: pd.DataFrame, trained_under: pd.DataFrame) -> int:
    """Rows whose scoring model (that of the row's fold) trained under ``trained_under``,
    where the row was in another fold, i.e. among that model's training rows."""
    fold_then = oof["image_name"].map(trained_under.set_index("image_name")["fold"])
    return int((fold_then != oof["fold"]).sum())


def test_changed_folds_stop_train_and_predict_naming_the_table(tiny_data, capsys):
    yaml = write_experiment(tiny_data, "ce")
    cfg = load_experiment(yaml)
    before = pd.read_csv(tiny_data["train_csv"])
    train_all(cfg)
    rotate_folds(tiny_data["train_csv"])

    with pytest.raises(ProvenanceMismatch, match="another fold assignment") as err:
        train_fold(cfg, 0, CPU)
    message = str(err.value)
    assert str(tiny_data["train_csv"]) in message and f"delete {cfg.run_dir(0).parent}" in message
    assert cli.main(["train", "--config", str(yaml)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "another fold assignment" in lines[0]

    # no stale model scores a row it trained on: predict refuses them too
    with pytest.raises(ProvenanceMismatch, match="another fold assignment"):
        predict_experiment(cfg, CPU)
    assert not (tiny_data["root"] / "preds" / "ce" / "oof.csv").exists()
    # the models were kept, not silently deleted
    assert all((cfg.run_dir(k) / "model.pt").is_file() for k in range(3))
    # had the old models been used, every validated row would have been scored by a
    # model that trained on it
    now = pd.read_csv(tiny_data["train_csv"]).query("fold >= 0")
    assert scored_by_own_trainer(now, before) == len(now)


def test_retrained_after_folds_change_no_oof_row_scored_by_its_trainer(tiny_data):
    cfg = load_experiment(write_experiment(tiny_data, "ce"))
    train_all(cfg)
    table = rotate_folds(tiny_data["train_csv"])
    shutil.rmtree(cfg.run_dir(0).parent)  # what the error message says to do
    train_all(cfg)
    out = predict_experiment(cfg, CPU)
    oof = read_oof(out)
    assert scored_by_own_trainer(oof, table) == 0
    record = json.loads((out / "provenance.json").read_text())
    assert record["folds"] == folds_of_table(tiny_data["train_csv"]) == fold_fingerprint(table)
    assert sorted(record["models"]) == ["0", "1", "2"]
    assert record["models"]["1"]["path"].endswith("fold1/model.pt")


def test_rerun_with_same_inputs_skips_finished_folds(tiny_data):
    cfg = load_experiment(write_experiment(tiny_data, "ce", folds=[0]))
    path = train_fold(cfg, 0, CPU)
    stamp = path.stat().st_mtime_ns
    # row order and other columns do not change the fold assignment
    table = pd.read_csv(tiny_data["train_csv"]).iloc[::-1]
    table.assign(extra=1).to_csv(tiny_data["train_csv"], index=False)
    assert train_fold(cfg, 0, CPU) == path and path.stat().st_mtime_ns == stamp


def test_changed_config_names_what_to_delete(tiny_data):
    cfg = load_experiment(write_experiment(tiny_data, "ce", folds=[0]))
    train_fold(cfg, 0, CPU)
    changed = load_experiment(write_experiment(tiny_data, "ce", folds=[0], optim={"lr": 2e-3}))
    redo = f"delete {changed.run_dir(0).parent}"
    with pytest.raises(ValueError, match="different config") as err:
        train_fold(changed, 0, CPU)
    assert redo in str(err.value)
    with pytest.raises(ValueError, match="trained with a different config") as err:
        predict_experiment(changed, CPU)
    assert redo in str(err.value)


def test_stage2_refuses_other_stage1_weights(tiny_data):
    stage1 = write_experiment(tiny_data, "s1", folds=[0])
    s1 = load_experiment(stage1)
    train_fold(s1, 0, CPU)
    s2 = load_experiment(
        write_experiment(
            tiny_data,
            "s2",
            folds=[0],
            model={"init_from": str(s1.run_dir(0).parent)},
            loss={"name": "auc_m"},
            optim={"name": "pesg", "lr": 0.01},
        )
    )
    train_fold(s2, 0, CPU)
    shutil.rmtree(s1.run_dir(0).parent)
    train_fold(
        load_experiment(write_experiment(tiny_data, "s1", folds=[0], train={"seed": 5})), 0, CPU
    )
    with pytest.raises(ProvenanceMismatch, match="other stage-1 weights"):
        train_fold(s2, 0, CPU)


def test_stage1_under_other_folds_refused_for_stage2(tiny_data):
    s1 = load_experiment(write_experiment(tiny_data, "s1", folds=[0]))
    train_fold(s1, 0, CPU)
    rotate_folds(tiny_data["train_csv"])
    s2 = load_experiment(
        write_experiment(tiny_data, "s2", folds=[0], model={"init_from": str(s1.run_dir(0).parent)})
    )
    with pytest.raises(ProvenanceMismatch, match=f"delete {s1.run_dir(0).parent}"):
        train_fold(s2, 0, CPU)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 half a zip"])
def test_truncated_model_is_one_line_naming_the_path(tiny_data, capsys, content):
    yaml = write_experiment(tiny_data, "ce", folds=[0])
    cfg = load_experiment(yaml)
    cfg.run_dir(0).mkdir(parents=True)
    (cfg.run_dir(0) / "model.pt").write_bytes(content)
    assert cli.main(["train", "--config", str(yaml)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(cfg.run_dir(0) / "model.pt") in lines[0]
    assert "delete it" in lines[0]


# -- prediction directories -------------------------------------------------------------------
def pred_dir(root, name, folds_fp, seed=0, n=60):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4 == 0
    oof = pd.DataFrame(
        {
            "image_name": [f"ISIC_{i:07d}" for i in range(n)],
            "fold": np.arange(n) % 3,
            "source": "competition",
            "target": y.astype(int),
            "pred": 1 / (1 + np.exp(-(y + rng.normal(size=n)))),
        }
    )
    test = pd.DataFrame({"image_name": ["ISIC_9000000", "ISIC_9000001"], "pred": [0.2, 0.7]})
    record = None if folds_fp is None else {"folds": folds_fp}
    write_pred_dir(root / name, oof, test, provenance=record)
    return root / name


def test_blend_and_report_refuse_oof_files_of_other_fold_assignments(tmp_path):
    a, b = pred_dir(tmp_path, "cnn", "aaaa"), pred_dir(tmp_path, "meta", "bbbb", seed=1)
    with pytest.raises(ProvenanceMismatch, match="different fold assignments"):
        blend_dirs(a, b, tmp_path / "blend")
    with pytest.raises(ProvenanceMismatch, match="different fold assignments"):
        write_report([a, b], tmp_path / "cv.md")
    assert not (tmp_path / "blend" / "oof.csv").exists() and not (tmp_path / "cv.md").exists()


def test_blend_passes_the_fold_record_on(tmp_path):
    a, b = pred_dir(tmp_path, "cnn", "aaaa"), pred_dir(tmp_path, "meta", "aaaa", seed=1)
    blend_dirs(a, b, tmp_path / "blend")
    assert json.loads((tmp_path / "blend" / "provenance.json").read_text())["folds"] == "aaaa"
    unrecorded = pred_dir(tmp_path, "old", None, seed=2)
    blend_dirs(a, unrecorded, tmp_path / "blend2")  # hand-made dirs without a record still work


def test_ensemble_refuses_oof_files_of_other_fold_assignments(tmp_path, capsys):
    a, b = pred_dir(tmp_path, "A", "aaaa"), pred_dir(tmp_path, "B", "bbbb", seed=1)
    pd.DataFrame({"image_name": ["ISIC_9000000", "ISIC_9000001"], "target": 0}).to_csv(
        tmp_path / "sample.csv", index=False
    )
    cfg = tmp_path / "ens.yaml"
    cfg.write_text(
        f"name: ens\noof_out: {tmp_path / 'ens'}\n"
        f"members: [{a}, {b}]\nsample_submission: {tmp_path / 'sample.csv'}\n"
        f"out: {tmp_path / 'sub.csv'}\n"
    )
    assert cli.main(["ensemble", "--config", str(cfg)]) == 1
    assert "different fold assignments" in capsys.readouterr().err
    assert not (tmp_path / "sub.csv").exists()


def test_oof_edited_after_its_record_is_refused(tmp_path):
    a = pred_dir(tmp_path, "cnn", "aaaa")
    b = pred_dir(tmp_path, "meta", "aaaa", seed=1)
    oof = pd.read_csv(a / "oof.csv")
    oof.loc[0, "fold"] = 2
    oof.to_csv(a / "oof.csv", index=False)
    with pytest.raises(ProvenanceMismatch, match="does not hold the rows"):
        blend_dirs(a, b, tmp_path / "blend")


def test_rewrite_without_record_removes_the_stale_one(tmp_path):
    a = pred_dir(tmp_path, "cnn", "aaaa")
    pred_dir(tmp_path, "cnn", None)
    assert not (a / "provenance.json").exists()
