"""``deepauc meta``: a metadata-only model per fold (the paper's 256x128 MLP, or LightGBM) on
age, sex, site and images per patient, with OOF and test predictions.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from deepauc.config import add_config_arguments, check_dir_name, load_config
from deepauc.data.tables import (
    SEXES,
    SITE_COLUMN,
    SITES_2020,
    TRAIN_COLUMNS,
    check_patients_in_one_fold,
    check_targets,
    check_unique_names,
    describe_rows,
    one_hot,
    read_folds_table,
    read_test_csv,
)
from deepauc.io import ensure_writable
from deepauc.metrics import roc_auc
from deepauc.pipeline.pred_files import COMPETITION, score_oof, write_pred_dir
from deepauc.pipeline.provenance import folds_of_table

# --------------------------------------------------------------------------- config


@dataclasses.dataclass
class LightGBMParams:
    """LightGBM hyper-parameters (the ``lightgbm`` block of the config)."""

    num_leaves: int = 15
    n_estimators: int = 300
    learning_rate: float = 0.03
    min_child_samples: int = 40
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    reg_lambda: float = 1.0

    def validate(self) -> None:
        if self.num_leaves < 2:
            raise ValueError("num_leaves must be >= 2")
        if self.n_estimators < 1 or self.min_child_samples < 1:
            raise ValueError("n_estimators and min_child_samples must be >= 1")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be > 0")
        if not (0 < self.subsample <= 1 and 0 < self.colsample_bytree <= 1):
            raise ValueError("subsample and colsample_bytree must be in (0, 1]")
        if self.reg_lambda < 0:
            raise ValueError("reg_lambda must be >= 0")


@dataclasses.dataclass
class MetaConfig:
    """The ``deepauc meta`` config (YAML keys; docs/pipeline.md)."""

    name: str
    train_csv: str
    test_csv: str
    model: Literal["mlp", "lightgbm"] = "mlp"
    hidden: list[int] = dataclasses.field(default_factory=lambda: [256, 128])
    dropout: float = 0.3
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 256
    weight_decay: float = 1e-5
    seed: int = 0
    use_external: bool = False
    lightgbm: LightGBMParams = dataclasses.field(default_factory=LightGBMParams)
    out_dir: str | None = None
    # width, height and byte size of each row's image file as features (log, standardised on
    # the training table); the image folders come from the Makefile
    image_features: bool = False
    image_root: str | None = None  # training rows: image_root/image_path
    test_image_root: str | None = None  # test rows: test_image_root/<image_name>.jpg
    # torch and LightGBM threads: the MLP's matrices are tiny, so one thread is fastest
    # (two threads were ~10x slower per step on a loaded 2-core machine)
    threads: int = 1

    def validate(self) -> None:
        check_dir_name(self.name)
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden sizes must be >= 1 (got {self.hidden})")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1) (got {self.dropout})")
        if self.epochs < 1 or self.batch_size < 2 or self.threads < 1:
            raise ValueError("epochs and threads must be >= 1 and batch_size >= 2")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("lr must be > 0 and weight_decay >= 0")
        if self.image_features and not (self.image_root and self.test_image_root):
            raise ValueError("image_features needs image_root and test_image_root")

    @property
    def output_dir(self) -> Path:
        """``out_dir`` if set, else ``preds/<name>``."""
        return Path(self.out_dir) if self.out_dir else Path("preds") / self.name


# --------------------------------------------------------------------------- tables


def check_training_table(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """Check what this stage relies on in the folds table ``df`` (read from ``name``).

    Unique image_name, target 0/1, fold an integer >= -1, source non-empty. Metadata
    values are checked by :func:`build_features`. Returns ``df`` with target and fold as int.
    """
    check_unique_names(df, name)
    df["target"] = check_targets(df, name)
    fold = pd.to_numeric(df["fold"], errors="coerce")
    bad = (fold.isna() | (fold != fold.round()) | (fold < -1)).to_numpy()
    if bad.any():
        raise ValueError(
            f"{name}: column 'fold' must be an integer >= -1 at {describe_rows(df, bad, 'fold')}"
        )
    df["fold"] = fold.astype(int)
    src = df["source"]
    no_src = (src.isna() | (src.astype(str).str.strip() == "")).to_numpy()
    if no_src.any():
        raise ValueError(f"{name}: empty 'source' at {describe_rows(df, no_src)}")
    if not (df["fold"] >= 0).any():
        raise ValueError(f"{name}: no row has a fold >= 0; nothing to validate")
    check_patients_in_one_fold(df, name)
    return df


# --------------------------------------------------------------------------- features


def _slug(value: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in value)


SEX_LEVELS = [*SEXES, "missing"]
SITE_LEVELS = [*SITES_2020, "missing"]


def _checked_one_hot(
    values: pd.Series, levels: list[str], prefix: str, df: pd.DataFrame, column: str, table: str
) -> pd.DataFrame:
    """One-hot of ``values`` over ``levels`` with NaN as the ``missing`` level.

    An unknown value raises ValueError naming the table, line and value: mapping it
    silently to "missing" would hide a broken upstream table.
    """
    known = [v for v in levels if v != "missing"]
    filled = values.where(values.notna(), "missing").astype(str).str.strip()
    bad = (~filled.isin(levels)).to_numpy()
    if bad.any():
        raise ValueError(
            f"{table}: unknown value in column {column!r} at {describe_rows(df, bad, column)}; "
            f"allowed: {known} or empty"
        )
    return one_hot(filled, levels, [f"{prefix}_{_slug(v)}" for v in levels], np.float32)


def _ages(df: pd.DataFrame, table: str) -> np.ndarray:
    raw = df["age_approx"]
    age = pd.to_numeric(raw, errors="coerce")
    bad = (age.isna() & raw.notna()).to_numpy()
    if bad.any():
        raise ValueError(
            f"{table}: column 'age_approx' is not numeric at {describe_rows(df, bad, 'age_approx')}"
        )
    return age.to_numpy(dtype=np.float64)


def patient_image_counts(df: pd.DataFrame) -> np.ndarray:
    """Number of rows of ``df`` sharing each row's patient_id (1 for a missing id)."""
    pid = df["patient_id"]
    counts = pid.map(pid.value_counts()).to_numpy(dtype=np.float64)
    return np.where(pid.isna().to_numpy(), 1.0, counts)


def table_features(df: pd.DataFrame, age_mean: float, age_std: float, table: str) -> pd.DataFrame:
    """The feature frame of one table, given the training table's age statistics."""
    age = _ages(df, table)
    missing = np.isnan(age)
    feats = pd.DataFrame(index=df.index)
    feats["age"] = np.where(missing, 0.0, (age - age_mean) / age_std)
    feats["age_missing"] = missing.astype(np.float32)
    feats = feats.join(_checked_one_hot(df["sex"], SEX_LEVELS, "sex", df, "sex", table))
    feats = feats.join(
        _checked_one_hot(df[SITE_COLUMN], SITE_LEVELS, "site", df, SITE_COLUMN, table)
    )
    feats["log1p_patient_images"] = np.log1p(patient_image_counts(df))
    return feats


def build_features(
    train_df: pd.DataFrame,
    test_df: pd.DataFrame,
    train_name: str = "train table",
    test_name: str = "test table",
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Feature matrices (float32, no NaN) of the training and test tables, and their names.

    Age is standardised with the mean and standard deviation of the training table's
    known ages (labels are not used, so one statistic for all folds leaks nothing).
    Patient image counts are computed within each table.
    """
    train_age = _ages(train_df, train_name)
    known = train_age[~np.isnan(train_age)]
    age_mean = float(known.mean()) if known.size else 0.0
    age_std = float(known.std()) if known.size > 1 and known.std() > 0 else 1.0
    ftrain = table_features(train_df, age_mean, age_std, train_name)
    ftest = table_features(test_df, age_mean, age_std, test_name)
    return (
        ftrain.to_numpy(dtype=np.float32),
        ftest.to_numpy(dtype=np.float32),
        list(ftrain.columns),
    )


def _with_image_features(
    cfg: MetaConfig,
    train_df: pd.DataFrame,
    test_df: pd.DataFrame,
    x_train: np.ndarray,
    x_test: np.ndarray,
    names: list[str],
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The feature matrices with log width, height and bytes of each image appended, each
    standardised with the training table's mean and sd (no labels used: nothing leaks)."""
    from deepauc.data.image_facts import image_facts

    facts_train = np.log(image_facts(train_df, str(cfg.image_root), cfg.train_csv).to_numpy())
    facts_test = np.log(image_facts(test_df, str(cfg.test_image_root), cfg.test_csv).to_numpy())
    mean, sd = facts_train.mean(axis=0), facts_train.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    extra = ["log_width", "log_height", "log_bytes"]
    return (
        np.hstack([x_train, ((facts_train - mean) / sd).astype(np.float32)]),
        np.hstack([x_test, ((facts_test - mean) / sd).astype(np.float32)]),
        names + extra,
    )


# --------------------------------------------------------------------------- models


def make_mlp(n_in: int, hidden: list[int], dropout: float):
    """Linear -> BatchNorm -> ReLU -> Dropout per hidden layer, then a 1-logit head."""
    from torch import nn

    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(dropout)]
        width = h
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def fit_predict_mlp(
    x_train: np.ndarray, y_train: np.ndarray, x_pred: list[np.ndarray], cfg: MetaConfig, seed: int
) -> list[np.ndarray]:
    """Train the MLP (BCE, Adam) on ``x_train``; return probabilities for each of ``x_pred``.

    Inputs are standardised with the training rows' column means/stds (one-hot
    columns included: BatchNorm would do the same, this keeps the first layer's
    scale sane at step 0). A final mini-batch of one row is dropped because
    BatchNorm cannot train on it.
    """
    import torch

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0

    def prep(x: np.ndarray):
        return torch.from_numpy(((x - mean) / std).astype(np.float32))

    xt, yt = prep(x_train), torch.from_numpy(y_train.astype(np.float32))
    model = make_mlp(xt.shape[1], cfg.hidden, cfg.dropout)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    n = xt.shape[0]
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            if idx.numel() < 2:
                continue
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]).squeeze(1), yt[idx])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return [torch.sigmoid(model(prep(x)).squeeze(1)).numpy().astype(np.float64) for x in x_pred]


def fit_predict_lightgbm(
    x_train: np.ndarray, y_train: np.ndarray, x_pred: list[np.ndarray], cfg: MetaConfig, seed: int
) -> list[np.ndarray]:
    """Train a LightGBM classifier on ``x_train``; return probabilities for each of ``x_pred``."""
    import lightgbm as lgb

    p = cfg.lightgbm
    model = lgb.LGBMClassifier(
        objective="binary",
        num_leaves=p.num_leaves,
        n_estimators=p.n_estimators,
        learning_rate=p.learning_rate,
        min_child_samples=p.min_child_samples,
        subsample=p.subsample,
        subsample_freq=1 if p.subsample < 1 else 0,
        colsample_bytree=p.colsample_bytree,
        reg_lambda=p.reg_lambda,
        random_state=seed,
        n_jobs=cfg.threads,
        deterministic=True,
        force_col_wise=True,
        verbose=-1,
    )
    model.fit(x_train, y_train)
    return [np.asarray(model.predict_proba(x))[:, 1].astype(np.float64) for x in x_pred]


# --------------------------------------------------------------------------- the stage


def train_mask(df: pd.DataFrame, k: int, use_external: bool) -> np.ndarray:
    """Rows that train fold ``k``'s model (docs/pipeline.md)."""
    fold = df["fold"].to_numpy()
    if use_external:
        return fold != k
    return (fold != k) & (fold >= 0) & (df["source"] == COMPETITION).to_numpy()


def run_meta(cfg: MetaConfig, train_df: pd.DataFrame, test_df: pd.DataFrame, log=print) -> dict:
    """Train one model per fold; return ``oof``, ``test``, ``test_folds`` frames and ``scores``."""
    x_train, x_test, names = build_features(train_df, test_df, cfg.train_csv, cfg.test_csv)
    if cfg.image_features:
        x_train, x_test, names = _with_image_features(
            cfg, train_df, test_df, x_train, x_test, names
        )
    y = train_df["target"].to_numpy()
    folds = sorted(int(k) for k in train_df["fold"].unique() if k >= 0)
    fit = fit_predict_mlp if cfg.model == "mlp" else fit_predict_lightgbm
    oof_pred = np.full(len(train_df), np.nan)
    test_folds = pd.DataFrame({"image_name": test_df["image_name"].to_numpy()})
    for k in folds:
        rows = train_mask(train_df, k, cfg.use_external)
        val = train_df["fold"].to_numpy() == k
        if rows.sum() == 0 or y[rows].min() == y[rows].max():
            raise ValueError(
                f"{cfg.train_csv}: the training rows of fold {k} are empty or hold one class"
            )
        pred_val, pred_test = fit(x_train[rows], y[rows], [x_train[val], x_test], cfg, cfg.seed + k)
        oof_pred[val] = pred_val
        test_folds[f"fold{k}"] = pred_test
        comp = val & (train_df["source"] == COMPETITION).to_numpy()
        yk = y[comp]
        auc = (
            f"{roc_auc(yk, pred_val[comp[val]]):.4f}"
            if yk.size and yk.min() != yk.max()
            else "n/a (one class)"
        )
        log(
            f"fold {k}: trained on {int(rows.sum())} rows, AUC {auc} on {int(comp.sum())} competition rows"
        )
    validated = train_df["fold"].to_numpy() >= 0
    oof = train_df.loc[validated, ["image_name", "fold", "source", "target"]].reset_index(drop=True)
    oof["pred"] = oof_pred[validated]
    test = test_folds[["image_name"]].copy()
    test["pred"] = test_folds[[f"fold{k}" for k in folds]].mean(axis=1).to_numpy()
    scores = score_oof(oof)
    log(f"OOF AUC (competition rows): {scores['OOF']:.4f}")
    if not np.isnan(scores["external"]):
        log(f"OOF AUC (external rows): {scores['external']:.4f}")
    return {"oof": oof, "test": test, "test_folds": test_folds, "scores": scores, "features": names}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, MetaConfig, args.overrides)
    import torch

    torch.set_num_threads(cfg.threads)
    train_df = check_training_table(
        read_folds_table(cfg.train_csv, [*TRAIN_COLUMNS, "source", "fold"]), cfg.train_csv
    )
    # metadata values: checked by build_features, which accepts values with padding
    test_df = read_test_csv(cfg.test_csv, check_metadata=False)
    print(
        f"meta {cfg.name}: {cfg.model}, {len(train_df)} training-table rows, {len(test_df)} test rows"
    )
    ensure_writable(cfg.output_dir)  # fail before training, not after it
    result = run_meta(cfg, train_df, test_df)
    record = {"folds": folds_of_table(cfg.train_csv)}
    out = write_pred_dir(
        cfg.output_dir, result["oof"], result["test"], result["test_folds"], record
    )
    print(f"wrote {out}/oof.csv, test.csv, test_folds.csv")
    return 0
