"""Each stage reads the folds table only through ``tables.read_folds_table`` and ``test.csv``
only through ``tables.read_test_csv``: every pandas read of either file happens inside them."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from deepauc import cli
from deepauc.data import tables
from deepauc.pipeline import (
    metadata_model,
    predict,
    provenance,
    report,
    report_compare,
    report_groups,
    train,
)
from deepauc.pipeline.experiment import load_experiment
from helpers import write_experiment

READERS = ("read_folds_table", "read_test_csv")
# the modules that read either table (train's reads go through provenance and, after the split
# of pipeline/train.py, its own read_folds_table)
MODULES = (predict, metadata_model, report, report_compare, report_groups, provenance, train)


class Stop(Exception):
    """Ends a stage once it has read its tables."""


class Reads:
    """Every ``pandas.read_csv`` call: the file and the reader it was made inside (or None)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.inside: list[str] = []
        self.entered: list[tuple[str, Path]] = []  # each reader call and its file
        self.calls: list[tuple[Path | None, str | None]] = []
        real_read_csv = pd.read_csv

        def read_csv(source, *args, **kwargs):
            path = Path(source).resolve() if isinstance(source, (str, os.PathLike)) else None
            self.calls.append((path, self.inside[-1] if self.inside else None))
            return real_read_csv(source, *args, **kwargs)

        monkeypatch.setattr(pd, "read_csv", read_csv)
        for module in MODULES:
            for name in READERS:
                if hasattr(module, name):
                    monkeypatch.setattr(module, name, self._traced(name, getattr(tables, name)))

    def _traced(self, name: str, reader):
        def traced(path, *args, **kwargs):
            self.entered.append((name, Path(path).resolve()))
            self.inside.append(name)
            try:
                return reader(path, *args, **kwargs)
            finally:
                self.inside.pop()

        return traced

    def of(self, path) -> list[str | None]:
        """The reader of each read of ``path``, in order."""
        return [reader for p, reader in self.calls if p == Path(path).resolve()]


def assert_only_through_readers(reads: Reads, tiny: dict, test_read: bool = True) -> None:
    folds = reads.of(tiny["train_csv"])
    assert folds and set(folds) == {"read_folds_table"}, folds
    test = reads.of(tiny["test_csv"])
    assert set(test) == ({"read_test_csv"} if test_read else set()), test


def test_predict_reads_both_tables_through_the_readers(tiny_data, monkeypatch):
    cfg = load_experiment(write_experiment(tiny_data, "ce"))
    reads = Reads(monkeypatch)

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(predict, "check_cached", stop)  # called once both tables are read
    with pytest.raises(Stop):
        predict.predict_experiment(cfg, torch.device("cpu"))
    assert_only_through_readers(reads, tiny_data)


def test_the_training_record_reads_the_folds_table_through_the_reader(tiny_data, monkeypatch):
    cfg = load_experiment(write_experiment(tiny_data, "ce"))
    expected = provenance.fold_fingerprint(pd.read_csv(tiny_data["train_csv"]))
    reads = Reads(monkeypatch)
    assert provenance.training_record(cfg, 0)["folds"] == expected
    assert_only_through_readers(reads, tiny_data, test_read=False)


def test_meta_and_report_read_both_tables_through_the_readers(tiny_data, monkeypatch, capsys):
    table = pd.read_csv(tiny_data["train_csv"])
    table["benign_malignant"] = np.where(table["target"] == 1, "malignant", "benign")
    table["diagnosis"] = "unknown"
    table.to_csv(tiny_data["train_csv"], index=False)
    out = tiny_data["root"] / "preds" / "meta"
    cfg = {
        "name": "meta",
        "train_csv": str(tiny_data["train_csv"]),
        "test_csv": str(tiny_data["test_csv"]),
        "hidden": [4],
        "epochs": 1,
        "batch_size": 16,
        "out_dir": str(out),
    }
    path = tiny_data["root"] / "meta.yaml"
    path.write_text(yaml.safe_dump(cfg))

    reads = Reads(monkeypatch)
    assert cli.main(["meta", "--config", str(path)]) == 0
    assert_only_through_readers(reads, tiny_data)

    reads = Reads(monkeypatch)
    report.write_report([out], tiny_data["root"] / "cv.md", folds_csv=tiny_data["train_csv"])
    # the report reads the folds table once: the fold assignment, the labels and the columns
    # of the subgroup tables all come from that one frame
    folds = ("read_folds_table", Path(tiny_data["train_csv"]).resolve())
    assert reads.entered == [folds]
    assert_only_through_readers(reads, tiny_data, test_read=False)


def test_train_reads_the_folds_table_through_the_reader(tiny_data, monkeypatch):
    cfg = load_experiment(write_experiment(tiny_data, "ce"))
    reads = Reads(monkeypatch)
    train_df, valid_df = train._load_fold_rows(cfg, 0)
    assert len(valid_df) == 16
    assert_only_through_readers(reads, tiny_data, test_read=False)
