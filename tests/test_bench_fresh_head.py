"""bench/fresh_head.py takes the study's two-stage choice only from a finished grid."""

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def fresh_head(monkeypatch):
    spec = importlib.util.spec_from_file_location("_bench_fresh_head", BENCH / "fresh_head.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "_bench_fresh_head", module)
    spec.loader.exec_module(module)
    return module


def _runs(tmp_path, cells):
    rows = [
        {
            "dataset": "elpv",
            "requested_imratio": 0.05,
            "method": "two_stage_paper",
            "variant": "clean",
            "tweak": "",
            "seed": seed,
            "params": json.dumps({"lr": 0.3, "lr2_factor": f}, sort_keys=True),
            "val_auc": val,
        }
        for seed, f, val in cells
    ]
    path = tmp_path / "runs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_choice_is_the_best_mean_validation_auc_over_the_tuning_seeds(fresh_head, tmp_path):
    cells = [(0, 0.03, 0.9), (1, 0.03, 0.5), (0, 0.1, 0.7), (1, 0.1, 0.8)]
    runs = _runs(tmp_path, cells)
    chosen = fresh_head.chosen_params(runs, "elpv", 0.05, [0, 1], [0.03, 0.1])
    assert chosen == {"lr": 0.3, "lr2_factor": 0.1}  # means 0.70 against 0.75


def test_an_unfinished_grid_stops_naming_what_is_missing(fresh_head, tmp_path):
    runs = _runs(tmp_path, [(0, 0.03, 0.9), (1, 0.03, 0.5), (0, 0.1, 0.7)])
    with pytest.raises(SystemExit, match=r"not finished .*seed 1 factor 0\.1"):
        fresh_head.chosen_params(runs, "elpv", 0.05, [0, 1], [0.03, 0.1])
