"""The Makefile pipeline end to end on a reduced demo: every stage, a valid submission,
a CV report, and a rerun that finds nothing to do."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from deepauc.metrics import roc_auc
from deepauc.pipeline.pred_files import read_oof

REPO = Path(__file__).resolve().parents[1]
QUICK = [
    "N_FOLDS=3",
    "DEMO_ARGS=--n-train 450 --n-patients 110 --n-test 60 --n-test-patients 15 --malignant-ratio 0.06 "
    "--n-isic2019 120 --n-isic2018 20 --n-isic2017 10 --n-malignant 20 --image-size 64 --workers 1",
    "EXTRA_SETS=--set schedule.epochs=1 --set schedule.decay_epochs=[] --set schedule.name=constant "
    "--set train.max_steps_per_epoch=4 --set train.batch_size=16 --set data.image_size=32 "
    "--set tta.dihedral=2",
    "SIZES_demo=32",
]


def make(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        "make",
        "--no-print-directory",
        "-C",
        str(workdir),
        f"PY={sys.executable}",
        "EXP=demo",
        *QUICK,
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    shutil.copy(REPO / "Makefile", work / "Makefile")
    shutil.copytree(REPO / "configs", work / "configs")
    proc = make(work, "pipeline", "META=meta_mlp", "EXTRA_META_SETS=--set epochs=3")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work, proc


def test_pipeline_writes_a_valid_submission_and_report(pipeline_run):
    work, proc = pipeline_run
    sub = pd.read_csv(work / "submissions/demo.csv")
    sample = pd.read_csv(work / "data/demo/sample_submission.csv")
    assert list(sub["image_name"]) == list(sample["image_name"])
    assert sub["target"].between(0, 1).all()
    report = (work / "reports/cv_demo.md").read_text()
    for name in [
        "demo_ce_lite0_64",
        "demo_aucm_lite0_64+meta",
        "demo_meta_mlp",
        "demo_ensemble",
        "notta",
    ]:
        assert name in report
    assert (work / "reports/cv_demo_roc.png").stat().st_size > 0
    # the stage-2 model really started from the stage-1 run
    assert (work / "models/demo_aucm_lite0_64/fold0/model.pt").exists()


def test_pipeline_cv_auc_is_well_above_chance(pipeline_run):
    work, _ = pipeline_run
    oof = read_oof(work / "preds/demo_ensemble")
    comp = oof[oof["source"] == "competition"]
    assert roc_auc(comp["target"], comp["pred"]) > 0.6


def test_rerun_skips_every_finished_stage(pipeline_run):
    work, _ = pipeline_run
    # the variables of the build: with others (say no EXTRA_META_SETS) meta is out of date
    dry = make(
        work,
        "-n",
        "submissions/demo.csv",
        "reports/cv_demo.md",
        "META=meta_mlp",
        "EXTRA_META_SETS=--set epochs=3",
    )
    assert dry.returncode == 0
    assert "deepauc" not in dry.stdout, dry.stdout


@pytest.mark.parametrize("notebook", ["eda.ipynb", "results.ipynb"])
def test_notebooks_execute_headless_on_the_demo_outputs(pipeline_run, notebook, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    work, _ = pipeline_run
    monkeypatch.setenv("DEEPAUC_ROOT", str(work))
    nb = nbformat.read(REPO / "notebooks" / notebook, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert outputs  # the notebook printed or drew something


def test_new_folds_stop_make_instead_of_reusing_models(pipeline_run, tmp_path):
    """A new folds seed: make stops at the first stale model, naming what to delete."""
    import json

    from deepauc.pipeline.provenance import folds_of_table

    work, _ = pipeline_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    old = folds_of_table(copy / "folds/demo.csv")
    (copy / "folds/demo.csv").unlink()
    proc = make(copy, "pipeline", "META=meta_mlp", "EXTRA_META_SETS=--set epochs=3", "SEED=7")
    assert proc.returncode != 0
    assert (
        "was trained under another fold assignment (folds/demo.csv changed); delete models/demo_"
        in proc.stderr
    )
    assert folds_of_table(copy / "folds/demo.csv") != old
    # every CNN prediction dir on disk still comes from models of its own fold assignment
    for oof in copy.glob("preds/demo_*lite0_64/oof.csv"):
        assert json.loads((oof.parent / "provenance.json").read_text())["folds"] == old
