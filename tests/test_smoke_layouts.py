"""`make smoke` on every published layout: the Kaggle 2020 root with the official ISIC 2019,
ISIC 2018 Task 3, ISIC 2017 and extra-malignant folders, and the resized 2020 root (no
sample submission of its own) with the resized ISIC 2019 set and HAM10000; each run ends
with a validated submission and names the layouts read in the external report."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from layout_fixtures import (
    write_ham10000,
    write_isic2017,
    write_isic2018_task3,
    write_isic2019,
    write_kaggle2020,
    write_malignant,
    write_resized2019,
    write_resized2020,
    write_sample_submission,
)

REPO = Path(__file__).resolve().parents[1]
# generated competition rows beside the fixed ones: 4 more malignant patients, so both
# smoke folds get a positive
N_EXTRA = 12


def kaggle_root_with_official_externals(data: Path) -> list[str]:
    root = write_kaggle2020(data / "siim-isic-melanoma-classification", n_extra=N_EXTRA)
    return [
        f"DATA={root}",
        f"ISIC2019={write_isic2019(data / 'isic2019')}",
        f"ISIC2018={write_isic2018_task3(data / 'isic2018')}",
        f"ISIC2017={write_isic2017(data / 'isic2017')}",
        f"MALIGNANT={write_malignant(data / 'malignant')}",
    ]


def resized_root_with_resized_externals(data: Path) -> list[str]:
    root = write_resized2020(data / "jpeg-melanoma-256x256", N_EXTRA, sample_submission=False)
    return [
        f"DATA={root}",
        f"SAMPLE={write_sample_submission(data / 'competition' / 'sample_submission.csv')}",
        f"ISIC2019={write_resized2019(data / 'jpeg-isic2019-256x256')}",
        f"ISIC2018={write_ham10000(data / 'ham10000')}",
    ]


# each run: its data writer and the layout expected for each source
RUNS = {
    "kaggle2020+official": (
        kaggle_root_with_official_externals,
        {
            "competition": "kaggle2020",
            "isic2019": "isic2019",
            "isic2018": "isic2018_task3",
            "isic2017": "isic2017",
            "malignant": "malignant",
        },
    ),
    "resized2020+resized2019+ham10000": (
        resized_root_with_resized_externals,
        {"competition": "resized2020", "isic2019": "resized2019", "isic2018": "ham10000"},
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("run", list(RUNS))
def test_make_smoke_on_each_layout_ends_in_a_valid_submission(tmp_path, run):
    write_data, layouts = RUNS[run]
    variables = write_data(tmp_path / "data")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(REPO / "Makefile", work / "Makefile")
    shutil.copytree(REPO / "configs", work / "configs")
    cmd = ["make", "--no-print-directory", "-C", str(work), f"PY={sys.executable}", "smoke"]
    proc = subprocess.run([*cmd, *variables], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "submissions/smoke.csv: valid" in proc.stdout
    line = "Layouts: " + ", ".join(f"{src} = {name}" for src, name in layouts.items())
    assert line in (work / "reports/external_smoke.md").read_text()
    folds = pd.read_csv(work / "folds/smoke.csv")
    assert set(folds["source"]) == set(layouts)
    assert set(folds.loc[folds["fold"] >= 0, "fold"]) == {0, 1}
    sub = pd.read_csv(work / "submissions/smoke.csv")
    assert sorted(sub["image_name"]) == ["ISIC_0052060", "ISIC_0052349", "ISIC_0058510"]
