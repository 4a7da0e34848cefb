"""The study's runs CSV: shared by two studies (each reuses the other's runs and keeps them),
and held by one study at a time."""

from pathlib import Path

import pandas as pd
import pytest

from deepauc.research.study.config import load_study_config
from deepauc.research.study.runner import run_study
from deepauc.research.study.runs import Runner
from test_study_round2 import write_config

NO_ABLATIONS = {
    "datasets": [],
    "two_stage": False,
    "bsn": False,
    "oversample": None,
    "libauc": False,
    "dual_grid": False,
}


def _study(tmp_path, name, losses, **over):
    written = write_config(
        tmp_path,
        name=name,
        losses=losses,
        seeds=[0, 1],
        runs=str(tmp_path / "shared_runs.csv"),
        ablations=NO_ABLATIONS,
        **over,
    )
    return load_study_config(Path(written).rename(tmp_path / f"{name}.yaml"))


def _trained(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("  [")]


def test_two_studies_share_one_runs_file(tmp_path):
    first = _study(tmp_path, "quick", ["ce", "auc_m"], resume=True)
    run_study(first, log=lambda _: None)
    n_first = len(pd.read_csv(tmp_path / "shared_runs.csv"))
    log: list[str] = []
    second = _study(tmp_path, "full", ["ce", "ce_weighted", "auc_m"], resume=True)
    run_study(second, log=log.append)
    runs = pd.read_csv(tmp_path / "shared_runs.csv")
    # the second study trained weighted CE only, and the file holds both studies' runs once each
    assert {line.split()[4] for line in _trained(log)} == {"ce_weighted"}
    assert len(runs) == n_first + len(_trained(log)) and runs["key"].is_unique
    assert (tmp_path / "reports" / "full.md").is_file()
    # without resume a study trains its own runs again and keeps the other's
    log.clear()
    run_study(_study(tmp_path, "quick", ["ce", "auc_m"], resume=False), log=log.append)
    assert len(_trained(log)) == n_first
    assert len(pd.read_csv(tmp_path / "shared_runs.csv")) == len(runs)


def test_a_runs_file_in_use_stops_a_second_study(tmp_path):
    cfg = _study(tmp_path, "quick", ["ce", "auc_m"])
    held = Runner(cfg, cfg.runs_csv, log=lambda _: None)
    with pytest.raises(OSError, match="shared_runs.csv is in use by another deepauc study"):
        Runner(cfg, cfg.runs_csv, log=lambda _: None)
    held.close()
    Runner(cfg, cfg.runs_csv, log=lambda _: None).close()
