"""``deepauc toy``: the paper's Figure 1, AUC-S against AUC-M on 2-D data with easy and noisy examples.

DRAFT
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from deepauc.losses import AUCMLoss, AUCSLoss
from deepauc.metrics import roc_auc
from deepauc.optim import PESG

__all__ = [
    "LOSS_NAMES",
    "PANELS",
    "ToyConfig",
    "ToyNet",
    "add_arguments",
    "bayes_llr",
    "easy_llr_lipschitz",
    "make_datasets",
    "run",
    "run_toy",
    "sample_clean",
    "sample_easy",
    "sample_noisy",
    "summarize",
    "train_model",
]

# Geometry: one positive Gaussian and a two-component negative mixture, all with
# covariance SIGMA^2 I, so the Bayes boundary is an L-shaped curve around the
# positive cluster (a two-layer network has something to bend).
MU_POS = np.array([1.5, 1.5])
MU_NEG = np.array([[-0.5, 1.5], [1.5, -0.5]])
SIGMA = 1.0

PANELS = ("clean", "+easy", "+noisy")
LOSS_NAMES = ("AUC-S", "AUC-M")


@dataclass(frozen=True)
class ToyConfig:
    """Everything a toy run depends on besides the seed."""

    n_train: int = 1000
    pos_ratio: float = 0.1
    n_test: int = 20000
    easy_frac: float = 0.5  # easy rows added, as a fraction of n_train (same class ratio)
    easy_llr: float = 6.0  # |Bayes log-likelihood ratio| of every easy row is at least this
    noise_frac: float = 0.05  # fraction of wrong labels in the +noisy training set
    noise_llr: float = 0.0  # noisy rows lie at |Bayes LLR| > this on their true side
    score: str = "sigmoid"
    hidden: int = 32
    epochs: int = 500  # full-batch PESG steps
    lr: float = 0.3
    momentum: float = 0.9
    margin: float = 0.5  # AUC-M's m
    epoch_decay: float = 2e-3  # PESG's gamma
    weight_decay: float = 1e-4


# --------------------------------------------------------------------------------------
# data


def _log_gauss(x: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """log N(x; mu, SIGMA^2 I) up to the shared normalising constant."""
    return -((x - mu) ** 2).sum(-1) / (2 * SIGMA**2)


def bayes_llr(x: np.ndarray) -> np.ndarray:
    """Class-conditional log-likelihood ratio log p(x|y=1) - log p(x|y=0).

    It is the Bayes-optimal score (any increasing function of it has the best AUC).
    """
    x = np.asarray(x, dtype=np.float64)
    neg = np.logaddexp(_log_gauss(x, MU_NEG[0]), _log_gauss(x, MU_NEG[1])) + math.log(0.5)
    return _log_gauss(x, MU_POS) - neg


def easy_llr_lipschitz() -> float:
    """A Lipschitz constant of :func:`bayes_llr`.

    Its gradient is ``(MU_POS - sum_k w_k MU_NEG[k]) / SIGMA^2`` with weights w_k ≥ 0
    summing to 1, whose norm is at most ``max_k ||MU_POS - MU_NEG[k]|| / SIGMA^2``. So a
    point with ``|llr| >= t`` lies at Euclidean distance ``>= t / L`` from the boundary.
    """
    return float(np.max(np.linalg.norm(MU_POS - MU_NEG, axis=1)) / SIGMA**2)


def _draw(rng: np.random.Generator, n: int, positive: bool, scale: float = 1.0) -> np.ndarray:
    if positive:
        centres = np.broadcast_to(MU_POS, (n, 2))
    else:
        centres = MU_NEG[rng.integers(0, len(MU_NEG), size=n)]
    return centres + rng.normal(scale=SIGMA * scale, size=(n, 2))


def _draw_where(rng, n: int, positive: bool, keep, scale: float = 1.0) -> np.ndarray:
    """``n`` draws from a class (proposal widened by ``scale``) that satisfy ``keep``."""
    out: list[np.ndarray] = []
    have = 0
    while have < n:
        x = _draw(rng, max(4 * (n - have), 64), positive, scale)
        x = x[keep(x)]
        out.append(x)
        have += len(x)
    return np.concatenate(out)[:n]


def _shuffle(rng, x: np.ndarray, *cols: np.ndarray):
    order = rng.permutation(len(x))
    return (x[order], *(c[order] for c in cols))


def sample_clean(rng: np.random.Generator, n: int, pos_ratio: float):
    """``n`` rows from the base distribution, exactly ``round(n * pos_ratio)`` positives."""
    n_pos = int(round(n * pos_ratio))
    if not 0 < n_pos < n:
        raise ValueError(f"n={n}, pos_ratio={pos_ratio} leaves a class empty")
    x = np.concatenate([_draw(rng, n_pos, True), _draw(rng, n - n_pos, False)])
    y = np.concatenate([np.ones(n_pos), np.zeros(n - n_pos)])
    return _shuffle(rng, x, y)


def sample_easy(rng: np.random.Generator, n_pos: int, n_neg: int, min_llr: float):
    """Easy examples: correctly labelled, with Bayes log-likelihood ratio ``>= min_llr``
    (positives) or ``<= -min_llr`` (negatives), so at least ``min_llr / L`` (see
    :func:`easy_llr_lipschitz`) from the Bayes boundary, on the right side.

    Drawn from each class's own distribution with a twice wider spread, keeping only the
    draws past the threshold: the far tails of the classes, in every direction away from
    the boundary.
    """
    xp = _draw_where(rng, n_pos, True, lambda x: bayes_llr(x) >= min_llr, scale=2.0)
    xn = _draw_where(rng, n_neg, False, lambda x: bayes_llr(x) <= -min_llr, scale=2.0)
    x = np.concatenate([xp, xn])
    y = np.concatenate([np.ones(n_pos), np.zeros(n_neg)])
    return _shuffle(rng, x, y)


def noisy_count(n_clean: int, noise_frac: float) -> int:
    """Mislabelled rows to add per direction so that ``2k / (n_clean + 2k) ≈ noise_frac``."""
    if not 0 <= noise_frac < 1:
        raise ValueError(f"noise_frac must lie in [0, 1), got {noise_frac}")
    return int(round(noise_frac * n_clean / (2 * (1 - noise_frac))))


def sample_noisy(rng: np.random.Generator, k: int, min_llr: float = 0.0):
    """Noisy examples: ``k`` true positives labelled 0 and ``k`` true negatives labelled 1.

    Each is drawn from its true class and kept only on its true class's side of the
    Bayes boundary, so every one sits among the other label's examples (the paper's
    §3.2 scenario: a truly positive x scored high but labelled negative, and the
    reverse). Returns ``x, y_observed, y_true``.
    """
    xp = _draw_where(rng, k, True, lambda x: bayes_llr(x) > min_llr)
    xn = _draw_where(rng, k, False, lambda x: bayes_llr(x) < -min_llr)
    x = np.concatenate([xp, xn])
    y_true = np.concatenate([np.ones(k), np.zeros(k)])
    return _shuffle(rng, x, 1 - y_true, y_true)


def make_datasets(seed: int, cfg: ToyConfig) -> dict[str, dict[str, np.ndarray]]:
    """The three training sets of one seed and the clean test set.

    Every part comes from its own child of ``SeedSequence(seed)``: the +easy and +noisy
    training sets are the clean training set plus the extra rows (``extra`` marks
    them), and the test set is drawn from the clean distribution.
    """
    r_train, r_easy, r_noisy, r_test = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    x, y = sample_clean(r_train, cfg.n_train, cfg.pos_ratio)
    n_pos = int(y.sum())
    n_easy = int(round(cfg.easy_frac * cfg.n_train))
    n_easy_pos = int(round(n_easy * n_pos / cfg.n_train))
    xe, ye = sample_easy(r_easy, n_easy_pos, n_easy - n_easy_pos, cfg.easy_llr)
    k = noisy_count(cfg.n_train, cfg.noise_frac)
    xn, yn, yn_true = sample_noisy(r_noisy, k, cfg.noise_llr)
    xt, yt = sample_clean(r_test, cfg.n_test, cfg.pos_ratio)
    clean_mask = np.zeros(len(x), dtype=bool)

    def joined(xa, ya, y_true):
        return {
            "x": np.concatenate([x, xa]),
            "y": np.concatenate([y, ya]),
            "y_true": np.concatenate([y, y_true]),
            "extra": np.concatenate([clean_mask, np.ones(len(xa), dtype=bool)]),
        }

    return {
        "clean": {"x": x, "y": y, "y_true": y, "extra": clean_mask},
        "+easy": joined(xe, ye, ye),
        "+noisy": joined(xn, yn, yn_true),
        "test": {"x": xt, "y": yt},
    }


# --------------------------------------------------------------------------------------
# model and training


class ToyNet(nn.Module):
    """2 → hidden → ELU → 1: the paper's two-layer ELU network; returns the logit."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.ELU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    @torch.no_grad()
    def score(self, x: np.ndarray) -> np.ndarray:
        """Sigmoid score of numpy points."""
        return torch.sigmoid(self(torch.as_tensor(x, dtype=torch.float32))).numpy()


def _make_loss(name: str, p: float, cfg: ToyConfig) -> nn.Module:
    if name == "AUC-S":
        return AUCSLoss(imratio=p)
    if name == "AUC-M":
        return AUCMLoss(margin=cfg.margin, imratio=p)
    raise ValueError(f"unknown toy loss {name!r}; choose one of {LOSS_NAMES}")


def train_model(x: np.ndarray, y: np.ndarray, loss_name: str, cfg: ToyConfig, init: dict) -> ToyNet:
    """Full-batch PESG from the weights ``init``; the lr drops 10× at 50% and 75% of the steps."""
    model = ToyNet(cfg.hidden)
    model.load_state_dict(init)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    loss_fn = _make_loss(loss_name, float(y.mean()), cfg)
    opt = PESG(
        model.parameters(), loss_fn, lr=cfg.lr, epoch_decay=cfg.epoch_decay, weight_decay=cfg.weight_decay,
        momentum=cfg.momentum,
    )
    milestones = {int(cfg.epochs * 0.5), int(cfg.epochs * 0.75)}
    for step in range(cfg.epochs):
        if step in milestones and step > 0:
            opt.next_stage(10.0)
        opt.zero_grad(set_to_none=True)
        z = model(xt)
        loss = loss_fn(torch.sigmoid(z) if cfg.score == "sigmoid" else z, yt)
        loss.backward()
        opt.step()
    model.eval()
    return model


# --------------------------------------------------------------------------------------
# the study


def run_toy(seeds: int = 5, epochs: int | None = None, seed: int = 0, out_dir="reports", cfg=None, verbose=False):
    """DRAFT"""
    import pandas as pd

    cfg = cfg or ToyConfig()
    if epochs is not None:
        cfg = replace(cfg, epochs=epochs)
    rows = []
    figure_models = {}
    for s in range(seed, seed + seeds):
        data = make_datasets(s, cfg)
        torch.manual_seed(s)
        init = ToyNet(cfg.hidden).state_dict()
        bayes = roc_auc(data["test"]["y"], bayes_llr(data["test"]["x"]))
        for loss_name in LOSS_NAMES:
            for panel in PANELS:
                model = train_model(data[panel]["x"], data[panel]["y"], loss_name, cfg, init)
                auc = roc_auc(data["test"]["y"], model.score(data["test"]["x"]))
                rows.append(dict(seed=s, loss=loss_name, panel=panel, auc=auc, bayes_auc=bayes))
                if verbose:
                    print(s, loss_name, panel, round(auc, 4), round(bayes, 4), flush=True)
                if s == seed:
                    figure_models[loss_name, panel] = model
    return pd.DataFrame(rows)


def summarize(df):
    return df.groupby(["loss", "panel"])["auc"].agg(["mean", "std"]).unstack()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out-dir", default="reports")


def run(args: argparse.Namespace) -> int:
    return 0


if __name__ == "__main__":
    sys.exit(0)
