"""``deepauc ensemble``: the (weighted) mean or rank mean of prediction directories, fixed or
chosen greedily on OOF, into a validated submission CSV (logged in the submission log), the
ensemble's own OOF and test predictions and its summary (``ensemble.md``)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from deepauc.config import add_config_arguments, check_dir_name, load_config
from deepauc.data.tables import read_sample_submission
from deepauc.io import write_text
from deepauc.pipeline.ensemble_summary import Choice, EnsembleResult, summarise
from deepauc.pipeline.pred_files import (
    inputs_provenance,
    read_oofs_same_folds,
    read_test,
    stack_oof_preds,
    stack_test_preds,
    to_scale,
    write_pred_dir,
)
from deepauc.pipeline.selection import DECIMALS, greedy_select, nested_greedy
from deepauc.pipeline.submission_log import (
    append_entry,
    file_sha256,
    format_number,
    read_log,
    utc_now,
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
    # fixed: the members with ``weights``; greedy: chosen on OOF from the candidates
    selection: Literal["fixed", "greedy"] = "fixed"
    # greedy's pool: the members; "all": also each member's TTA / no-TTA / metadata siblings
    # on disk; a list: the members and these dirs
    candidates: Literal["members", "all"] | list[str] = "members"
    greedy_steps: int = 20
    submission_log: str | None = None  # None: log.csv beside ``out``

    def validate(self) -> None:
        check_dir_name(self.name)
        dup = sorted({m for m in self.members if self.members.count(m) > 1})
        if dup:
            raise ValueError(f"members: listed more than once: {dup}")
        if isinstance(self.candidates, list):
            dup = sorted({m for m in self.candidates if self.candidates.count(m) > 1})
            if dup:
                raise ValueError(f"candidates: listed more than once: {dup}")
        if self.selection == "fixed" and self.candidates != "members":
            raise ValueError(
                f"candidates: {self.candidates!r} needs selection: greedy (fixed uses the members)"
            )
        if self.selection == "greedy" and self.weights is not None:
            raise ValueError(
                "weights: greedy selection sets the weights (selection counts); drop weights "
                "or use selection: fixed"
            )
        if self.greedy_steps < 1:
            raise ValueError(f"greedy_steps must be >= 1 (got {self.greedy_steps})")
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

    @property
    def log_path(self) -> Path:
        """``submission_log`` if set, else ``log.csv`` in the submission's folder."""
        return (
            Path(self.submission_log) if self.submission_log else Path(self.out).parent / "log.csv"
        )


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
    preds = stack_test_preds(sample, sample_name, [read_test(m) for m in members], members)
    return pd.DataFrame(
        {
            "image_name": sample["image_name"].to_numpy(),
            "target": average(list(preds), weights, method),
        }
    )


def ensemble_oof(
    members: list[str], oofs: list[pd.DataFrame], weights: np.ndarray, method: str
) -> pd.DataFrame:
    """The averaged OOF predictions of ``members`` (``oofs``: their OOF frames), rows in the
    first member's order; rows must agree."""
    oof, preds = stack_oof_preds(oofs, members)
    oof["pred"] = average(list(preds), weights, method)
    return oof


def family(member: str | os.PathLike) -> list[str]:
    """The prediction dirs beside ``member`` from the same model: with and without TTA
    (``-notta``), with and without metadata (``+meta``), those that hold an ``oof.csv``."""
    p = Path(member)
    stem = p.name.removesuffix("+meta").removesuffix("-notta")
    variants = [stem, f"{stem}-notta", f"{stem}+meta", f"{stem}-notta+meta"]
    return [str(p.parent / v) for v in variants if (p.parent / v / "oof.csv").is_file()]


def candidate_pool(members: list[str], candidates: str | list[str]) -> list[str]:
    """The dirs greedy selection chooses from: the members first, then the others in order."""
    extra: list[str] = []
    if candidates == "all":
        extra = [d for m in members for d in family(m)]
    elif isinstance(candidates, list):
        extra = list(candidates)
    pool = list(members)
    for d in extra:
        if Path(d) not in {Path(p) for p in pool}:
            pool.append(d)
    return pool


def choose(cfg: EnsembleConfig, oofs: list[pd.DataFrame], pool: list[str]) -> Choice:
    """Align the pool's OOF rows and choose the members and weights (fixed or greedy)."""
    first_name = f"{Path(pool[0]) / 'oof.csv'}"
    keys, raw = stack_oof_preds(oofs, pool)
    scale = {"mean": "prob", "rank": "rank"}[cfg.method]
    scaled = np.stack([to_scale(c, scale) for c in raw])
    choice = Choice(
        pool=pool,
        members=list(cfg.members),
        weights=normalised_weights(cfg.weights, len(cfg.members)),
        oof=keys,
        raw=raw,
        scaled=scaled,
    )
    if cfg.selection == "fixed":
        return choice
    comp = choice.comp
    y, folds = keys["target"].to_numpy()[comp], keys["fold"].to_numpy()[comp]
    if y.size == 0 or y.min() == y.max():
        raise ValueError(
            f"{first_name}: the competition rows hold {y.size} row(s) of one class; "
            "cannot choose members"
        )
    counts, steps = greedy_select(y, scaled[:, comp], cfg.greedy_steps)
    kept = np.flatnonzero(counts)
    choice.members = [pool[i] for i in kept]
    choice.weights = counts[kept] / counts.sum()
    choice.path = [(pool[i], auc) for i, auc in steps]
    choice.nested = nested_greedy(y, folds, scaled[:, comp], cfg.greedy_steps)
    return choice


def run_ensemble(cfg: EnsembleConfig, config: str | os.PathLike | None = None) -> EnsembleResult:
    """Write the ensemble's prediction dir and summary, the submission and its log row.

    ``config`` is the YAML's path, recorded in the submission log.
    """
    from deepauc.pipeline.submission import validate_submission, write_submission

    if not cfg.members:
        raise ValueError(
            "members: no prediction directory given (list them in the YAML or pass "
            "--set members=[preds/a,preds/b])"
        )
    if cfg.weights is not None and len(cfg.weights) != len(cfg.members):
        raise ValueError(f"weights: {len(cfg.weights)} weight(s) for {len(cfg.members)} member(s)")
    read_log(cfg.log_path)  # a malformed log stops the run before anything is written
    sample = read_sample_submission(cfg.sample_submission)
    pool = cfg.members if cfg.selection == "fixed" else candidate_pool(cfg.members, cfg.candidates)
    oofs, provenance = read_oofs_same_folds(pool)
    choice = choose(cfg, oofs, pool)
    member_oofs = [oofs[pool.index(m)] for m in choice.members]
    if cfg.selection == "greedy":
        provenance = inputs_provenance(choice.members, member_oofs)
        if provenance is not None:  # what chose the inputs, for whoever reads the record
            provenance["ensemble"] = {
                "selection": "greedy",
                "candidates": pool,
                "weights": [float(w) for w in choice.weights],
                "nested_auc": choice.nested["auc"] if choice.nested else None,
            }
    oof = ensemble_oof(choice.members, member_oofs, choice.weights, cfg.method)
    sub = ensemble_test(choice.members, sample, choice.weights, cfg.method, cfg.sample_submission)
    if cfg.selection == "greedy":  # rounded as selection scored them (selection.DECIMALS)
        oof["pred"] = np.round(oof["pred"], DECIMALS)
        sub["target"] = np.round(sub["target"], DECIMALS)
    sub = validate_submission(sub, sample, cfg.out)
    test = sub.rename(columns={"target": "pred"})
    result = summarise(choice, oof, name=cfg.name, method=cfg.method, selection=cfg.selection)
    # ensemble.md first: oof.csv, written last by write_pred_dir, marks the directory complete
    write_text(result.markdown, cfg.oof_dir / "ensemble.md")
    write_pred_dir(cfg.oof_dir, oof, test, provenance=provenance)
    write_submission(sub, sample, cfg.out)
    _, result.log_message = append_entry(cfg.log_path, log_row(cfg, config, choice, result))
    return result


def log_row(
    cfg: EnsembleConfig, config: str | os.PathLike | None, choice: Choice, result: EnsembleResult
) -> dict[str, str]:
    """The submission log's row for the submission just written."""
    return {
        "time_utc": utc_now(),
        "submission": str(cfg.out),
        "sha256": file_sha256(cfg.out),
        "name": cfg.name,
        "config": "" if config is None else str(config),
        "method": cfg.method,
        "selection": cfg.selection,
        "members": ";".join(str(m) for m in choice.members),
        "weights": ";".join(f"{w:.6g}" for w in choice.weights),
        "oof_auc": format_number(result.oof_auc),
        "oof_auc_fold_rank": format_number(result.oof_auc_fold_rank),
        "nested_auc": format_number(choice.nested["auc"] if choice.nested else None),
        "lb_score": "",
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, EnsembleConfig, args.overrides)
    result = run_ensemble(cfg, args.config)
    print(result.markdown)
    print(f"wrote {cfg.out} and {cfg.oof_dir}/oof.csv, test.csv, ensemble.md")
    print(result.log_message)
    return 0
