"""The competition-only route: no external folder, one model, one epoch; the pipeline
still runs every stage (the smoke run) to a valid submission whose ensemble holds the
models built."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from deepauc.config import ConfigError
from deepauc.pipeline.experiment import load_experiment

REPO = Path(__file__).resolve().parents[1]
QUICK = [
    "DEMO_ARGS=--n-train 300 --n-patients 80 --n-test 40 --n-test-patients 10 --malignant-ratio 0.06 "
    "--n-isic2019 20 --n-isic2018 5 --n-isic2017 5 --n-malignant 5 --image-size 64 --workers 1",
]


def make(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = ["make", "--no-print-directory", "-C", str(workdir), f"PY={sys.executable}", "EXP=demo"]
    return subprocess.run([*cmd, *QUICK, *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("competition_only")
    shutil.copy(REPO / "Makefile", work / "Makefile")
    shutil.copytree(REPO / "configs", work / "configs")
    proc = make(work, "data/demo/train.csv")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    shutil.rmtree(work / "data/demo/external")
    return work


def test_stages_up_to_folds_run_without_an_external_folder(work):
    proc = make(work, "folds/demo.csv", "N_FOLDS=2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "--isic2019-dir" not in proc.stdout
    folds = pd.read_csv(work / "folds/demo.csv")
    train = pd.read_csv(work / "data/demo/train.csv")
    assert set(folds["source"]) == {"competition"} and len(folds) == len(train)
    assert (folds["image_path"] == "jpeg/train/" + folds["image_name"] + ".jpg").all()
    assert set(folds["fold"]) == {0, 1}
    assert (work / "data/cache/demo/image_hashes.csv").is_file()


def test_one_model_smoke_run_ends_in_a_valid_submission(work):
    # `make smoke` with one model of MODELS: the ensemble holds just that model
    proc = make(work, "smoke", "DATA=data/demo", "MODELS=ce_lite0_32")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "members=[preds/smoke_ce_lite0_32+meta]" in proc.stdout
    assert "submissions/smoke.csv: valid" in proc.stdout
    sub = pd.read_csv(work / "submissions/smoke.csv")
    sample = pd.read_csv(work / "data/interim/smoke/sample_submission.csv")
    assert list(sub["image_name"]) == list(sample["image_name"]) and 0 < len(sub) <= 12
    assert set(pd.read_csv(work / "folds/smoke.csv")["source"]) == {"competition"}
    assert not (work / "models/smoke_aucm_lite0_32").exists()


def test_members_given_on_the_command_line_win(work):
    dry = make(work, "-n", "submissions/demo.csv", "N_FOLDS=2", "MODELS=ce_lite0_64")
    assert dry.returncode == 0, dry.stderr
    assert "members=[preds/demo_ce_lite0_64+meta]" in dry.stdout
    dry = make(work, "-n", "submissions/demo.csv", "N_FOLDS=2", "MEMBERS=preds/demo_ce_lite0_64")
    assert dry.returncode == 0, dry.stderr
    assert "members=[preds/demo_ce_lite0_64]" in dry.stdout


def test_one_epoch_drops_the_decays_past_the_end_with_a_note(capsys):
    path = REPO / "configs/demo/aucm_lite0_64.yaml"
    assert load_experiment(path).schedule.decay_epochs == [2]
    cfg = load_experiment(path, ["schedule.epochs=1"])
    assert cfg.schedule.epochs == 1 and cfg.schedule.decay_epochs == []
    assert "decay_epochs [2]" in capsys.readouterr().err
    kept = load_experiment(path, ["schedule.epochs=3", "schedule.decay_epochs=[1,3,5]"])
    assert kept.schedule.decay_epochs == [1]
    with pytest.raises(ConfigError, match="decay_epochs"):
        load_experiment(path, ["schedule.decay_epochs=[0]"])
