"""``deepauc ensemble``: the (weighted) mean or rank mean of prediction directories into a
validated submission CSV and the ensemble's own OOF and test predictions."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from deepauc.config import add_config_arguments, check_dir_name, load_config
from deepauc.data.tables import read_sample_submission
from deepauc.markdown import markdown_table
from deepauc.pipeline.pred_files import (
    align_oof,
    align_to,
    model_names,
    read_oof,
    read_oofs_same_folds,
    read_test,
    score_oof,
    to_scale,
    write_pred_dir,
)


@dataclasses.dataclass
class EnsembleConfig:
    """The ``deepauc ensemble`` config (YAML keys; docs/pipeline.md)."""

    name: str
    sample_submission: str
    out: str
    members: list[str] = dataclasses.field(default_factory=list)  # empty: given by --set
    method: Literal["mean", "rank"] = "mean"
    weights: list[float] | None = None
    oof_out: str | None = None

    def validate(self) -> None:
        check_dir_name(self.name)
        dup = sorted({m for m in self.members if self.members.count(m) > 1})
        if dup:
            raise ValueError(f"members: listed more than once: {dup}")
        if self.weights is not None:
            if self.members and len(self.weights) != len(self.members):
                raise ValueError(
                    f"weights: {len(self.weights)} weight(s) for {len(self.members)} member(s)"
                )
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError(f"weights must be >= 0 with a positive sum (got {self.weights})")

    @property
    def oof_dir(self) -> Path:
        """``oof_out`` if set, else ``preds/<name>``."""
        return Path(self.oof_out) if self.oof_out else Path("preds") / self.name


def normalised_weights(weights: list[float] | None, n: int) -> np.ndarray:
    """``weights`` scaled to sum 1, or equal weights when None."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, dtype=np.float64)
    return w / w.sum()


def average(columns: list, weights: np.ndarray, method: str) -> np.ndarray:
    """Weighted mean of prediction vectors on the ``method`` scale (``mean`` or ``rank``)."""
    scale = {"mean": "prob", "rank": "rank"}.get(method)
    if scale is None:
        raise ValueError(f"ensemble: unknown method {method!r}; expected 'mean' or 'rank'")
    stacked = np.stack([to_scale(c, scale) for c in columns])
    return weights @ stacked


def ensemble_test(
    members: list[str], sample: pd.DataFrame, weights: np.ndarray, method: str, sample_name: str
) -> pd.DataFrame:
    """The averaged test predictions as a submission frame (image_name, target) in sample order."""
    preds = []
    for m in members:
        test = align_to(sample, read_test(m), sample_name, f"{Path(m) / 'test.csv'}")
        preds.append(test["pred"].to_numpy())
    return pd.DataFrame(
        {"image_name": sample["image_name"].to_numpy(), "target": average(preds, weights, method)}
    )


def ensemble_oof(members: list[str], weights: np.ndarray, method: str) -> pd.DataFrame:
    """The averaged OOF predictions, rows in the first member's order; rows must agree."""
    first = read_oof(members[0])
    first_name = f"{Path(members[0]) / 'oof.csv'}"
    preds = [first["pred"].to_numpy()]
    for m in members[1:]:
        other = align_oof(first, read_oof(m), first_name, f"{Path(m) / 'oof.csv'}")
        preds.append(other["pred"].to_numpy())
    oof = first[["image_name", "fold", "source", "target"]].copy()
    oof["pred"] = average(preds, weights, method)
    return oof


def run_ensemble(cfg: EnsembleConfig) -> pd.DataFrame:
    """Write the submission and the ensemble's prediction dir; return a table of OOF AUCs."""
    from deepauc.pipeline.submission import validate_submission, write_submission

    if not cfg.members:
        raise ValueError(
            "members: no prediction directory given (list them in the YAML or pass "
            "--set members=[preds/a,preds/b])"
        )
    if cfg.weights is not None and len(cfg.weights) != len(cfg.members):
        raise ValueError(f"weights: {len(cfg.weights)} weight(s) for {len(cfg.members)} member(s)")
    weights = normalised_weights(cfg.weights, len(cfg.members))
    sample = read_sample_submission(cfg.sample_submission)
    _, provenance = read_oofs_same_folds(cfg.members)
    oof = ensemble_oof(cfg.members, weights, cfg.method)
    sub = ensemble_test(cfg.members, sample, weights, cfg.method, cfg.sample_submission)
    sub = validate_submission(sub, sample, cfg.out)
    test = sub.rename(columns={"target": "pred"})
    write_pred_dir(cfg.oof_dir, oof, test, provenance=provenance)
    write_submission(sub, sample, cfg.out)

    rows = []
    for name, m, w in zip(model_names(cfg.members), cfg.members, weights):
        rows.append({"model": name, "weight": w, **_oof_scores(read_oof(m))})
    rows.append({"model": f"ensemble ({cfg.method})", "weight": 1.0, **_oof_scores(oof)})
    return pd.DataFrame(rows)


def _oof_scores(oof: pd.DataFrame) -> dict[str, float]:
    s = score_oof(oof)
    return {"OOF": s["OOF"], "external": s["external"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, EnsembleConfig, args.overrides)
    table = run_ensemble(cfg)
    print(markdown_table(table))
    print(f"wrote {cfg.out} and {cfg.oof_dir}/oof.csv, test.csv")
    return 0
