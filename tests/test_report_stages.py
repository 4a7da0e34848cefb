"""deepauc report: the two stages on one timeline, read from each fold's log.csv of a stage-2 run
and of the stage-1 run its model.pt config names (model.init_from)."""

import numpy as np
import pandas as pd
import pytest
import torch

from deepauc import cli
from deepauc.io import save_torch
from deepauc.pipeline.experiment import load_experiment
from deepauc.pipeline.pred_files import write_pred_dir
from deepauc.pipeline.predict import predict_experiment
from deepauc.pipeline.provenance import fold_fingerprint
from deepauc.pipeline.report import write_report
from deepauc.pipeline.report_runs import stage_timelines
from deepauc.pipeline.train import train_fold
from helpers import write_experiment

PNG = b"\x89PNG\r\n\x1a\n"


def make_run(root, name, folds, epochs, init_from=None, auc=False):
    """A run folder as train leaves it: per fold a model.pt (config only) and a log.csv."""
    logs = {}
    for fold in folds:
        run_dir = root / "models" / name / f"fold{fold}"
        run_dir.mkdir(parents=True)
        config = {
            "name": name,
            "model": {"init_from": None if init_from is None else str(init_from)},
        }
        save_torch({"config": config, "fingerprint": name}, run_dir / "model.pt")
        epoch = np.arange(1, epochs + 1)
        log = pd.DataFrame(
            {
                "epoch": epoch,
                "lr": 1e-4 * (fold + 1) * epoch if not auc else 0.1 / epoch,
                "train_loss": 1.0 / epoch,
                "val_auc": 0.5 + 0.01 * epoch,
            }
        )
        if auc:
            log = log.assign(a=0.6 + 0.01 * epoch, b=0.2 - 0.01 * epoch, alpha=0.3 * epoch + fold)
        log.to_csv(run_dir / "log.csv", index=False)
        logs[fold] = log
    return root / "models" / name, logs


def pred_dir_of(root, run, folds, name):
    """A prediction dir whose provenance names ``run``'s fold models."""
    rng = np.random.default_rng(0)
    n = 60
    oof = pd.DataFrame(
        {
            "image_name": [f"ISIC_{i:07d}" for i in range(n)],
            "fold": np.arange(n) % len(folds),
            "source": "competition",
            "target": np.arange(n) % 4 == 0,
            "pred": rng.uniform(size=n),
        }
    ).astype({"target": int})
    models = {str(k): {"path": str(run / f"fold{k}" / "model.pt"), "sha256": "x"} for k in folds}
    record = {"folds": fold_fingerprint(oof), "models": models}
    return write_pred_dir(root / "preds" / name, oof, None, provenance=record)


def test_stage_two_follows_stage_one_on_one_epoch_axis(tmp_path, capsys):
    stage1, logs1 = make_run(tmp_path, "ce", [0, 1], epochs=3)
    stage2, logs2 = make_run(tmp_path, "aucm", [0, 1], epochs=2, init_from=stage1, auc=True)
    ce_dir = pred_dir_of(tmp_path, stage1, [0, 1], "ce")
    aucm_dir = pred_dir_of(tmp_path, stage2, [0, 1], "aucm")

    timelines = stage_timelines([ce_dir, aucm_dir])
    assert list(timelines) == [str(stage2)]  # the CE run names no stage 1: not a stage-2 run
    named, folds = timelines[str(stage2)]
    assert named == str(stage1) and sorted(folds) == [0, 1]
    for fold, line in folds.items():
        assert list(line["epoch"]) == [1, 2, 3, 4, 5]
        assert list(line["stage"]) == [1, 1, 1, 2, 2]
        assert line["lr"].tolist() == logs1[fold]["lr"].tolist() + logs2[fold]["lr"].tolist()
        for column in ("a", "b", "alpha"):
            assert line[column].iloc[:3].isna().all()
            assert line[column].iloc[3:].tolist() == pytest.approx(logs2[fold][column].tolist())

    out = tmp_path / "reports" / "cv.md"
    assert cli.main(["report", "--preds", str(ce_dir), str(aucm_dir), "--out", str(out)]) == 0
    png = out.with_name("cv_stages.png").read_bytes()
    assert png[:8] == PNG and len(png) > 1000
    text = out.read_text()
    assert "![stages](cv_stages.png)" in text and f"`{stage1}` → `{stage2}`" in text
    assert "cv_stages.png" in capsys.readouterr().out

    # without a stage-2 run the figure of an earlier report goes, with its link
    write_report([ce_dir], out)
    assert not out.with_name("cv_stages.png").exists() and "stages" not in out.read_text()


def test_a_fold_without_a_stage_one_log_starts_at_epoch_one(tmp_path):
    stage1, _ = make_run(tmp_path, "ce", [0, 1], epochs=3)
    stage2, _ = make_run(tmp_path, "aucm", [0, 1], epochs=2, init_from=stage1, auc=True)
    (stage1 / "fold1" / "log.csv").unlink()
    folds = stage_timelines([pred_dir_of(tmp_path, stage2, [0, 1], "aucm")])[str(stage2)][1]
    assert list(folds[0]["epoch"]) == [1, 2, 3, 4, 5]
    assert list(folds[1]["epoch"]) == [1, 2] and set(folds[1]["stage"]) == {2}


def test_real_two_stage_training_is_drawn(tiny_data):
    """train writes model.init_from into model.pt's config and a, b, α into log.csv."""
    tiny = tiny_data
    schedule = {"name": "constant", "epochs": 1}
    ce = load_experiment(write_experiment(tiny, "ce", folds=[0], schedule=schedule))
    train_fold(ce, 0, torch.device("cpu"))
    aucm = load_experiment(
        write_experiment(
            tiny,
            "aucm",
            folds=[0],
            schedule={"name": "constant", "epochs": 2},
            model={"init_from": str(ce.run_dir(0).parent)},
            loss={"name": "auc_m", "margin": 0.5},
            optim={"name": "pesg", "lr": 0.01, "epoch_decay": 0.002},
            tta={"dihedral": 1, "batch_size": 16},
        )
    )
    train_fold(aucm, 0, torch.device("cpu"))
    out = predict_experiment(aucm, torch.device("cpu"))
    line = stage_timelines([out])[str(aucm.run_dir(0).parent)][1][0]
    assert list(line["stage"]) == [1, 2, 2] and list(line["epoch"]) == [1, 2, 3]
    assert line["alpha"].iloc[1:].notna().all() and line["a"].iloc[:1].isna().all()
    log2 = pd.read_csv(aucm.run_dir(0) / "log.csv")
    assert line["b"].iloc[1:].tolist() == pytest.approx(log2["b"].tolist())
