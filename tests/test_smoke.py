"""`make smoke` on a data folder with every external set: all stages on a few images per
set, no --set needed, ending with a validated submission."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO_ARGS = (
    "DEMO_ARGS=--n-train 300 --n-patients 80 --n-test 40 --n-test-patients 10 "
    "--malignant-ratio 0.06 --n-isic2019 40 --n-isic2018 10 --n-isic2017 6 --n-malignant 6 "
    "--image-size 64 --workers 1"
)


@pytest.mark.slow
def test_make_smoke_runs_every_stage_to_a_valid_submission(tmp_path):
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    base = ["make", "--no-print-directory", "-C", str(tmp_path), f"PY={sys.executable}"]
    run = lambda *a: subprocess.run([*base, *a], capture_output=True, text=True, timeout=900)  # noqa: E731
    assert run("data/demo/train.csv", DEMO_ARGS).returncode == 0
    proc = run("smoke", "DATA=data/demo")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "submissions/smoke.csv: valid" in proc.stdout
    folds = pd.read_csv(tmp_path / "folds/smoke.csv")
    assert set(folds["source"]) >= {"competition", "isic2019"}
    assert folds.groupby("source").size().max() <= 16
    report = (tmp_path / "reports/cv_smoke.md").read_text()
    assert "smoke_aucm_lite0_32+meta" in report and "smoke_ensemble" in report
