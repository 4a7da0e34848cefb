"""deepauc report: training curves of the models behind each prediction directory, and
--folds refusing OOF files recorded under another fold assignment."""

import pandas as pd
import torch

from deepauc import cli
from deepauc.pipeline.experiment import load_experiment
from deepauc.pipeline.pred_files import read_oof, write_pred_dir
from deepauc.pipeline.predict import predict_experiment
from deepauc.pipeline.provenance import folds_of_table
from deepauc.pipeline.report import training_runs
from deepauc.pipeline.train import train_fold
from helpers import write_experiment

CPU = torch.device("cpu")
PNG = b"\x89PNG\r\n\x1a\n"


def rotate_folds(csv) -> None:
    """Move every validated row to the next fold: a new assignment of the same images."""
    table = pd.read_csv(csv)
    inside = table["fold"] >= 0
    table.loc[inside, "fold"] = (table.loc[inside, "fold"] + 1) % 3
    table.to_csv(csv, index=False)


def meta_like_dir(root, cnn_dir, folds_fp):
    """A prediction dir with a fold record but no models behind it (as ``meta`` writes)."""
    oof = read_oof(cnn_dir).assign(pred=lambda df: 1 - df["pred"])
    write_pred_dir(root / "meta", oof, None, provenance={"folds": folds_fp})
    return root / "meta"


def train_and_predict(tiny, epochs, **sections):
    """Train every fold of experiment ``ce`` and predict: ``preds/ce`` and ``preds/ce-notta``."""
    schedule = {"name": "constant", "epochs": epochs}
    cfg = load_experiment(write_experiment(tiny, "ce", schedule=schedule, **sections))
    for fold in cfg.fold_ids():
        train_fold(cfg, fold, CPU)
    return cfg, predict_experiment(cfg, CPU)


def report_args(tiny, dirs, out, folds=True):
    args = ["report", "--preds", *map(str, dirs), "--out", str(out)]
    return args + (["--folds", str(tiny["train_csv"])] if folds else [])


def test_report_draws_training_curves_and_links_them(tiny_data, capsys):
    tiny = tiny_data
    cfg, out = train_and_predict(tiny, epochs=2)
    meta = meta_like_dir(tiny["root"] / "preds", out, folds_of_table(tiny["train_csv"]))
    report = tiny["root"] / "reports" / "cv_tiny.md"
    dirs = [out.parent / "ce-notta", out, meta]
    assert cli.main(report_args(tiny, dirs, report)) == 0
    png = report.with_name("cv_tiny_curves.png")
    data = png.read_bytes()
    assert data[:8] == PNG and len(data) > 1000
    text = report.read_text()
    assert "![training curves](cv_tiny_curves.png)" in text
    assert f"`{cfg.run_dir(0).parent}`" in text
    assert str(png) in capsys.readouterr().out

    # one run behind both ce and ce-notta; the meta dir has no models; two epochs per fold
    runs = training_runs(dirs)
    assert list(runs) == [str(cfg.run_dir(0).parent)]
    logs = runs[str(cfg.run_dir(0).parent)]
    assert sorted(logs) == [0, 1, 2]
    assert all(list(log["epoch"]) == [1, 2] for log in logs.values())

    # a fold without log.csv is skipped; with none left the figure and its link go away
    (cfg.run_dir(1) / "log.csv").unlink()
    assert sorted(training_runs([out])[str(cfg.run_dir(0).parent)]) == [0, 2]
    for fold in (0, 2):
        (cfg.run_dir(fold) / "log.csv").unlink()
    assert cli.main(report_args(tiny, dirs, report)) == 0
    assert not png.exists() and "training curves" not in report.read_text()


def test_report_refuses_oof_of_other_folds_naming_dir_and_command(tiny_data, capsys):
    tiny = tiny_data
    cfg, out = train_and_predict(tiny, epochs=1, folds=[0])
    report = tiny["root"] / "reports" / "cv.md"
    assert cli.main(report_args(tiny, [out], report)) == 0
    capsys.readouterr()
    report.unlink()

    rotate_folds(tiny["train_csv"])
    assert cli.main(report_args(tiny, [out], report)) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert f"{out} was predicted under another fold assignment" in lines[0]
    assert str(tiny["train_csv"]) in lines[0]
    assert f"delete {cfg.run_dir(0).parent}" in lines[0] and "`make`" in lines[0]
    assert not report.exists()

    # without --folds only the directories' agreement with each other is checked
    assert cli.main(report_args(tiny, [out], report, folds=False)) == 0


def test_folds_check_names_the_stage_of_each_directory(tiny_data, capsys):
    """Hand-made dirs without a record pass; a meta-like record names ``deepauc meta``."""
    table = pd.read_csv(tiny_data["train_csv"]).query("fold >= 0")
    oof = table[["image_name", "fold", "source", "target"]].assign(pred=0.5)
    root = tiny_data["root"] / "preds"
    write_pred_dir(root / "hand", oof, None)
    report = tiny_data["root"] / "cv.md"
    assert cli.main(report_args(tiny_data, [root / "hand"], report)) == 0

    write_pred_dir(root / "meta", oof, None, provenance={"folds": "0123456789abcdef"})
    capsys.readouterr()
    assert cli.main(report_args(tiny_data, [root / "hand", root / "meta"], report)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{root / 'meta'} was predicted under another fold assignment" in err
    assert "`deepauc meta`" in err
