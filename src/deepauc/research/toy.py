"""``deepauc toy``: the paper's Figure 1, AUC-S against AUC-M on 2-D data with easy and noisy examples.

The paper (§3.2-3.3, Figure 1) argues that the AUC square loss (AUC-S) is hurt by easy
examples (well classified, far from the boundary) and by noisy labels, and that the AUC
margin loss (AUC-M) is not: the projection α ≥ 0 removes the easy-data effect and a
margin m < 1 shrinks the pull of a mislabelled example. This module tests that claim
on a toy problem, reports what it finds, and draws the 2 × 3 figure (rows AUC-S / AUC-M,
columns clean / +easy / +noisy)::

    deepauc toy --out-dir reports --seeds 5 --epochs 500 --seed 0
    python -m deepauc.research.toy ...                       (the same)

writes ``reports/toy_figure1.png`` (seed ``--seed``) and ``reports/toy_figure1.md``
(test AUC, mean ± std over seeds ``seed … seed+seeds-1``) and prints the table.

Set-up (all in :class:`ToyConfig`; chosen from the paper's description, not tuned to
make either loss win):

* Data. One positive Gaussian at (1.5, 1.5) and a negative mixture of two Gaussians at
  (-0.5, 1.5) and (1.5, -0.5), all with covariance I, so the Bayes boundary is an
  L-shaped curve around the positives (something for the hidden layer to bend).
  1000 training rows, 10% positive (imbalanced, as the paper's studies). The Bayes
  score is the class-conditional log-likelihood ratio (:func:`bayes_llr`); its test AUC
  (≈ 0.88) is printed as the ceiling.
* Easy examples: 500 more rows in the same class ratio, correctly labelled, each with
  ``|LLR| ≥ 6`` on its own side. The LLR is 2-Lipschitz here, so every easy row is at
  least 3 standard deviations from the Bayes boundary, and a clean-trained model (either
  loss, seed 0) scores every easy positive above all clean positives and every easy
  negative below at least 97% of the clean negatives. They are the far tails of the classes (drawn from each class with a
  twice wider spread and kept past the threshold).
* Noisy labels: k true positives labelled negative and k true negatives labelled
  positive are added, so that 10% of the +noisy training rows carry a wrong label
  (k = 56 per direction; 36% of the rows labelled positive are really negative). Each
  lies inside its true class (``LLR > 2`` resp. ``< -2``: about as deep as the class
  centre), which is the paper's §3.2 scenario, a mislabelled example the model scores
  confidently on its true side.
* Model: 2 → 32 → ELU → 1, sigmoid score, the same seeded initial weights for all six
  panels of a seed. Every panel is trained from those weights on its own training set
  (``--warm-start``: the +easy / +noisy panels instead continue from the clean model of
  their row, as the paper's figure does); the dashed line in those panels is the clean
  model's boundary.
* Training: full-batch PESG (deterministic, fast), 500 steps ("epochs" = full-batch
  steps), lr 0.3 divided by 10 at 50% and 75% of the steps (each a PESG stage: v_ref ←
  stage average), γ = 1/500, λ = 1e-4, heavy-ball momentum 0.9 (PESG's documented
  extension: without it lr 1 needs ~3× the steps for the same clean AUC, and a larger lr
  is not an option because the normalized dual step α ← α + 2η(m + b̂ - â - α)
  overshoots for η ≥ 1; at lr 2 AUC-S's α diverges). p is each training
  set's own positive ratio. These were set on the clean panels only (clean test AUC
  within ~0.003 of the Bayes ceiling).
* AUC-M margin m = 0.5, the middle of the paper's grid {0.1, 0.3, 0.5, 0.7, 1.0}. With
  sigmoid scores a - b ≤ 1, so with m = 1 the optimal α = 1 + b - a is never negative and
  the projection never binds: AUC-M with m = 1 *is* AUC-S (the sweep below gives
  identical numbers). Any difference needs m < 1.
* Evaluation: test AUC on 20,000 fresh rows of the clean distribution; the table also
  gives the per-seed paired change against the clean panel.

What happens (5 seeds, defaults; ``reports/toy_figure1.md``): the paper's effect does
**not** show. Easy examples cost both losses the same 0.001 of test AUC; the noisy labels
cost both, AUC-M (m = 0.5: -0.051 ± 0.011) more than AUC-S (-0.033 ± 0.024). Other
settings tried, each over the same 5 seeds (change in test AUC against the clean panel,
easy / noisy; reproduce with ``run_toy(cfg=replace(ToyConfig(), ...))``):

* margin sweep m ∈ {0.1, 0.3, 0.5, 0.7, 1.0} at the defaults: every m < 1 loses
  0.048-0.051 to the noise against AUC-S's 0.033; m = 1 gives AUC-S's numbers exactly;
  m = 0.1 has the lowest clean AUC (0.8745 vs 0.8795) and the largest easy loss (-0.005);
* the first setting tried, 5% noise anywhere on the true side (``noise_frac=0.05,
  noise_llr=0``): easy -0.001 for AUC-S and m = 0.3 … 0.7; noisy -0.0025 … -0.0034 for
  every loss and every m: the noise barely matters (it is close to class-conditional
  noise, which leaves the AUC-optimal ranking unchanged) and no loss is more robust;
* ``--warm-start`` (the paper's protocol: +easy / +noisy retrained from the clean model):
  AUC-S +0.001 / +0.000, AUC-M (m = 0.5) +0.000 / -0.011 ± 0.013;
* 200 training rows (with the first setting's noise): easy -0.001 for both, noisy AUC-S
  -0.003, AUC-M -0.008 (seed std ~0.01);
* unbounded scores, the logit fed to the loss as the linear h of §3.2 (``score="logit"``,
  ``lr=0.03``; at lr 0.3 it diverges; first setting's noise): AUC-S -0.003 / -0.004,
  AUC-M m = 0.5 -0.003 / -0.003, m = 0.1 -0.018 / -0.004.

Why, as far as this toy shows: the §3.2 easy-data mechanism needs a positive-negative
score gap above 1, which sigmoid scores cannot reach. At α's optimum 1 + b - a the AUC-S
gradient on a positive's score is 2(1-p)(h - 1 - b) < 0 and on a negative's 2p(h + 1 - a)
> 0, so AUC-S never pushes a score against its label. AUC-M once its margin is met
(α = 0) pulls every score toward its class mean, i.e. pushes the easiest positives down.
For noisy labels, a small m shrinks the pull on a mislabelled example (to about m, from
about 1), which is the paper's argument; but what moves the boundary is that pull
relative to the pull on the correctly labelled rows, and m shifts the coefficient
h - m - b of every labelled positive alike (those scored above m + b are even pushed
down), so nothing forces the balance in AUC-M's favour, and here it does not go there.
The paper's Figure 1 may rest on a different (unpublished) set-up or
on SGD dynamics far from convergence; this module reports the toy as it comes out.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deepauc.io import atomic_path, write_text
from deepauc.losses import create_loss
from deepauc.metrics import roc_auc
from deepauc.optim import create_optimizer

__all__ = [
    "LOSS_NAMES",
    "PANELS",
    "ToyConfig",
    "ToyNet",
    "add_arguments",
    "bayes_llr",
    "llr_lipschitz",
    "make_datasets",
    "noisy_count",
    "plot_figure",
    "run",
    "run_toy",
    "sample_clean",
    "sample_easy",
    "sample_noisy",
    "summarize",
    "summary_markdown",
    "train_model",
]

# One positive Gaussian and a two-component negative mixture, all with covariance
# SIGMA^2 I: the Bayes boundary is an L-shaped curve around the positive cluster.
MU_POS = np.array([1.5, 1.5])
MU_NEG = np.array([[-0.5, 1.5], [1.5, -0.5]])
SIGMA = 1.0

PANELS = ("clean", "+easy", "+noisy")
LOSS_NAMES = ("AUC-S", "AUC-M")
FIGURE_NAME = "toy_figure1"


@dataclass(frozen=True)
class ToyConfig:
    """Everything a toy run depends on besides the seed (see the module docstring)."""

    n_train: int = 1000
    pos_ratio: float = 0.1
    n_test: int = 20000
    easy_frac: float = 0.5  # easy rows added, as a fraction of n_train (same class ratio)
    easy_llr: float = 6.0  # every easy row has |Bayes LLR| >= this, on its label's side
    noise_frac: float = 0.1  # fraction of wrong labels in the +noisy training set
    noise_llr: float = 2.0  # every noisy row has |Bayes LLR| > this, on its true side
    hidden: int = 32
    epochs: int = 500  # full-batch PESG steps
    lr: float = 0.3
    momentum: float = 0.9
    epoch_decay: float = 2e-3  # PESG's γ
    weight_decay: float = 1e-4
    margin: float = 0.5  # AUC-M's m
    warm_start: bool = False  # +easy/+noisy continue from the clean model (paper's protocol)
    score: str = "sigmoid"  # h fed to the loss: "sigmoid" or "logit" (unbounded, §3.2's linear h)

    def __post_init__(self) -> None:
        if self.score not in ("sigmoid", "logit"):
            raise ValueError(f"score must be 'sigmoid' or 'logit', got {self.score!r}")
        if self.epochs < 1 or self.n_train < 2 or self.n_test < 2:
            raise ValueError("epochs must be >= 1 and n_train, n_test >= 2")
        if not 0 < self.pos_ratio < 1 or self.easy_frac < 0 or not 0 <= self.noise_frac < 1:
            raise ValueError("need 0 < pos_ratio < 1, easy_frac >= 0 and 0 <= noise_frac < 1")


# --------------------------------------------------------------------------------------
# data


def _log_gauss(x: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """log N(x; mu, SIGMA^2 I) up to the normalising constant shared by all components."""
    return -((x - mu) ** 2).sum(-1) / (2 * SIGMA**2)


def bayes_llr(x) -> np.ndarray:
    """Class-conditional log-likelihood ratio ``log p(x|y=1) - log p(x|y=0)``.

    The Bayes-optimal score: nothing ranks the clean distribution with a higher AUC.
    """
    x = np.asarray(x, dtype=np.float64)
    log_neg = np.logaddexp(_log_gauss(x, MU_NEG[0]), _log_gauss(x, MU_NEG[1])) + np.log(0.5)
    return _log_gauss(x, MU_POS) - log_neg


def llr_lipschitz() -> float:
    """A Lipschitz constant L of :func:`bayes_llr` (here 2).

    Its gradient is ``(MU_POS - Σ_k w_k MU_NEG[k]) / SIGMA²`` with weights ``w_k ≥ 0``
    summing to 1, of norm at most ``max_k ||MU_POS - MU_NEG[k]|| / SIGMA²``. A point with
    ``|LLR| ≥ t`` is therefore at Euclidean distance ``≥ t / L`` from the boundary LLR = 0.
    """
    return float(np.max(np.linalg.norm(MU_POS - MU_NEG, axis=1)) / SIGMA**2)


def _draw(rng: np.random.Generator, n: int, positive: bool, spread: float = 1.0) -> np.ndarray:
    if positive:
        centres = np.broadcast_to(MU_POS, (n, 2))
    else:
        centres = MU_NEG[rng.integers(0, len(MU_NEG), size=n)]
    return centres + rng.normal(scale=SIGMA * spread, size=(n, 2))


def _draw_where(
    rng: np.random.Generator, n: int, positive: bool, keep, spread: float = 1.0
) -> np.ndarray:
    """``n`` draws of a class (its spread widened by ``spread``) that satisfy ``keep``."""
    out, have = [], 0
    while have < n:
        x = _draw(rng, max(4 * (n - have), 64), positive, spread)
        x = x[keep(x)]
        out.append(x)
        have += len(x)
    return np.concatenate(out)[:n]


def _shuffle(rng: np.random.Generator, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    order = rng.permutation(len(arrays[0]))
    return tuple(a[order] for a in arrays)


def sample_clean(
    rng: np.random.Generator, n: int, pos_ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows of the base distribution with exactly ``round(n * pos_ratio)`` positives."""
    n_pos = int(round(n * pos_ratio))
    if not 0 < n_pos < n:
        raise ValueError(f"n={n}, pos_ratio={pos_ratio} leaves a class empty")
    x = np.concatenate([_draw(rng, n_pos, True), _draw(rng, n - n_pos, False)])
    y = np.concatenate([np.ones(n_pos), np.zeros(n - n_pos)])
    return _shuffle(rng, x, y)


def sample_easy(
    rng: np.random.Generator, n_pos: int, n_neg: int, min_llr: float
) -> tuple[np.ndarray, np.ndarray]:
    """Easy rows: correctly labelled, ``LLR ≥ min_llr`` (positives) or ``≤ -min_llr``
    (negatives), hence at least ``min_llr / L`` (:func:`llr_lipschitz`) from the Bayes
    boundary on the right side. Drawn from each class with twice its spread and kept
    past the threshold: the far tails of the classes, away from the boundary."""
    xp = _draw_where(rng, n_pos, True, lambda x: bayes_llr(x) >= min_llr, spread=2.0)
    xn = _draw_where(rng, n_neg, False, lambda x: bayes_llr(x) <= -min_llr, spread=2.0)
    x = np.concatenate([xp, xn])
    y = np.concatenate([np.ones(n_pos), np.zeros(n_neg)])
    return _shuffle(rng, x, y)


def noisy_count(n_clean: int, noise_frac: float) -> int:
    """Mislabelled rows per direction, ``k``, so that ``2k / (n_clean + 2k) ≈ noise_frac``."""
    if not 0 <= noise_frac < 1:
        raise ValueError(f"noise_frac must lie in [0, 1), got {noise_frac}")
    return int(round(noise_frac * n_clean / (2 * (1 - noise_frac))))


def sample_noisy(rng: np.random.Generator, k: int, min_llr: float = 0.0) -> tuple[np.ndarray, ...]:
    """Noisy rows: ``k`` true positives labelled 0 and ``k`` true negatives labelled 1.

    Each is drawn from its true class and kept only where ``LLR > min_llr`` (true
    positives) or ``LLR < -min_llr`` (true negatives): inside its true class, among the
    examples of the label it does not carry. Returns ``x, y_observed, y_true``.
    """
    xp = _draw_where(rng, k, True, lambda x: bayes_llr(x) > min_llr)
    xn = _draw_where(rng, k, False, lambda x: bayes_llr(x) < -min_llr)
    x = np.concatenate([xp, xn])
    y_true = np.concatenate([np.ones(k), np.zeros(k)])
    return _shuffle(rng, x, 1 - y_true, y_true)


def make_datasets(seed: int, cfg: ToyConfig) -> dict[str, dict[str, np.ndarray]]:
    """The three training sets of one seed and the clean test set.

    Each part draws from its own child of ``SeedSequence(seed)``. The +easy and +noisy
    training sets are the clean training set followed by the added rows (``extra``
    marks them; ``y_true`` holds the true labels, ``y`` the observed ones).
    """
    r_train, r_easy, r_noisy, r_test = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    x, y = sample_clean(r_train, cfg.n_train, cfg.pos_ratio)
    n_easy = int(round(cfg.easy_frac * cfg.n_train))
    n_easy_pos = int(round(n_easy * y.mean()))
    xe, ye = sample_easy(r_easy, n_easy_pos, n_easy - n_easy_pos, cfg.easy_llr)
    xn, yn, yn_true = sample_noisy(r_noisy, noisy_count(cfg.n_train, cfg.noise_frac), cfg.noise_llr)
    xt, yt = sample_clean(r_test, cfg.n_test, cfg.pos_ratio)
    base = np.zeros(len(x), dtype=bool)

    def joined(xa, ya, ya_true):
        return {
            "x": np.concatenate([x, xa]),
            "y": np.concatenate([y, ya]),
            "y_true": np.concatenate([y, ya_true]),
            "extra": np.concatenate([base, np.ones(len(xa), dtype=bool)]),
        }

    return {
        "clean": {"x": x, "y": y, "y_true": y, "extra": base},
        "+easy": joined(xe, ye, ye),
        "+noisy": joined(xn, yn, yn_true),
        "test": {"x": xt, "y": yt},
    }


# --------------------------------------------------------------------------------------
# model and training


class ToyNet(nn.Module):
    """2 → hidden → ELU → 1, the paper's two-layer ELU network; ``forward`` gives the logit."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.ELU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    @torch.no_grad()
    def score(self, x) -> np.ndarray:
        """Sigmoid scores of numpy points."""
        return torch.sigmoid(self(torch.as_tensor(np.asarray(x), dtype=torch.float32))).numpy()


def _make_loss(name: str, p: float, cfg: ToyConfig) -> nn.Module:
    losses = {"AUC-S": "auc_s", "AUC-M": "auc_m"}
    if name not in losses:
        raise ValueError(f"unknown toy loss {name!r}; choose one of {LOSS_NAMES}")
    return create_loss(losses[name], imratio=p, margin=cfg.margin)


def train_model(x: np.ndarray, y: np.ndarray, loss_name: str, cfg: ToyConfig, init: dict) -> ToyNet:
    """Full-batch PESG from the weights ``init`` for ``cfg.epochs`` steps.

    The loss's p is the training set's positive ratio; a, b, α start at 0. The lr is
    divided by 10 at 50% and 75% of the steps, each a new PESG stage.
    """
    model = ToyNet(cfg.hidden)
    model.load_state_dict(init)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    loss_fn = _make_loss(loss_name, float(np.mean(y)), cfg)
    opt = create_optimizer(
        "pesg",
        model.parameters(),
        loss_fn,
        lr=cfg.lr,
        epoch_decay=cfg.epoch_decay,
        weight_decay=cfg.weight_decay,
        momentum=cfg.momentum,
    )
    milestones = {int(cfg.epochs * 0.5), int(cfg.epochs * 0.75)} - {0}
    for step in range(cfg.epochs):
        if step in milestones:
            opt.next_stage(10.0)
        opt.zero_grad(set_to_none=True)
        logits = model(xt)
        h = torch.sigmoid(logits) if cfg.score == "sigmoid" else logits
        loss_fn(h, yt).backward()
        opt.step()
    model.eval()
    return model


def _state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------------------
# the study


@contextlib.contextmanager
def _one_thread():
    """One torch thread inside (a 2→32→1 net on 1.5k rows: threads cost more than they
    give, and one thread keeps the sums in a fixed order); the caller's count after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_toy(
    seeds: int = 5,
    epochs: int | None = None,
    seed: int = 0,
    out_dir: str | Path | None = "reports",
    cfg: ToyConfig | None = None,
    verbose: bool = False,
):
    """Train the six panels for seeds ``seed … seed+seeds-1``; return the test AUCs.

    Returns a pandas DataFrame, one row per (seed, loss, panel), with columns ``seed``,
    ``loss``, ``panel``, ``auc`` (test AUC) and ``bayes_auc`` (the Bayes score's test AUC
    on that seed's test set). ``epochs`` overrides ``cfg.epochs``. Unless ``out_dir`` is
    None, writes ``toy_figure1.png`` (the first seed) and ``toy_figure1.md`` there. Runs on
    one torch thread (restored afterwards) and leaves the global torch RNG untouched.
    """
    import pandas as pd

    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    cfg = cfg or ToyConfig()
    if epochs is not None:
        cfg = replace(cfg, epochs=epochs)
    rows, shown = [], {}
    with _one_thread(), torch.random.fork_rng(devices=[]):
        for s in range(seed, seed + seeds):
            data = make_datasets(s, cfg)
            torch.manual_seed(s)
            init = _state(ToyNet(cfg.hidden))
            bayes = roc_auc(data["test"]["y"], bayes_llr(data["test"]["x"]))
            for loss_name in LOSS_NAMES:
                clean_state = None
                for panel in PANELS:
                    start = clean_state if (cfg.warm_start and panel != "clean") else init
                    model = train_model(data[panel]["x"], data[panel]["y"], loss_name, cfg, start)
                    if panel == "clean":
                        clean_state = _state(model)
                    auc = roc_auc(data["test"]["y"], model.score(data["test"]["x"]))
                    rows.append(
                        {
                            "seed": s,
                            "loss": loss_name,
                            "panel": panel,
                            "auc": auc,
                            "bayes_auc": bayes,
                        }
                    )
                    if verbose:
                        print(f"  seed {s}  {loss_name}  {panel:<7} test AUC {auc:.4f}", flush=True)
                    if s == seed:
                        shown[loss_name, panel] = model
            if s == seed:
                shown_data = data
    df = pd.DataFrame(rows)
    if out_dir is not None:
        out = Path(out_dir)
        plot_figure(shown_data, shown, df[df.seed == seed], cfg, out / f"{FIGURE_NAME}.png")
        write_text(summary_markdown(df, cfg, seed) + "\n", out / f"{FIGURE_NAME}.md")
    return df


def summarize(df):
    """Per loss: mean and std over seeds of each panel's test AUC, and of the paired
    changes ``+easy - clean`` and ``+noisy - clean`` (columns ``(panel, "mean"|"std")``)."""
    wide = df.pivot_table(index=["loss", "seed"], columns="panel", values="auc")
    wide["+easy - clean"] = wide["+easy"] - wide["clean"]
    wide["+noisy - clean"] = wide["+noisy"] - wide["clean"]
    cols = [*PANELS, "+easy - clean", "+noisy - clean"]
    agg = wide[cols].groupby(level="loss").agg(["mean", "std"])
    return agg.reindex([name for name in LOSS_NAMES if name in agg.index])


def _pm(mean: float, std: float, signed: bool = False) -> str:
    fmt = "+.4f" if signed else ".4f"
    std_text = "n/a" if np.isnan(std) else f"{std:.4f}"
    return f"{mean:{fmt}} ± {std_text}"


def summary_markdown(df, cfg: ToyConfig, seed: int = 0) -> str:
    """The markdown report: the AUC table (mean ± std over seeds) and the set-up."""
    summ = summarize(df)
    seeds = sorted(df.seed.unique())
    n_noisy = noisy_count(cfg.n_train, cfg.noise_frac)
    label = {"AUC-S": "AUC-S", "AUC-M": f"AUC-M (m = {cfg.margin:g})"}
    lines = [
        "# Toy study: paper Figure 1 (AUC-S vs AUC-M with easy and noisy data)",
        "",
        f"Test AUC on {cfg.n_test} clean held-out rows, mean ± std over {len(seeds)} seed(s) "
        f"({seeds[0]}…{seeds[-1]}); the last two columns are the per-seed paired change "
        f"against the clean panel. Figure: `{FIGURE_NAME}.png` (seed {seed}).",
        "",
        "| loss | clean | +easy | +noisy | +easy − clean | +noisy − clean |",
        "|---|---|---|---|---|---|",
    ]
    for name in summ.index:
        r = summ.loc[name]
        cells = [_pm(r[(p, "mean")], r[(p, "std")]) for p in PANELS]
        cells += [
            _pm(r[(c, "mean")], r[(c, "std")], signed=True)
            for c in ("+easy - clean", "+noisy - clean")
        ]
        lines.append(f"| {label[name]} | " + " | ".join(cells) + " |")
    bayes = df.groupby("seed").bayes_auc.first()
    lines += [
        "",
        f"Bayes-optimal score (true log-likelihood ratio): test AUC {_pm(bayes.mean(), bayes.std())}.",
        "",
        "Set-up: positives N((1.5, 1.5), I), negatives ½N((-0.5, 1.5), I) + ½N((1.5, -0.5), I); "
        f"{cfg.n_train} training rows, {cfg.pos_ratio:.0%} positive. "
        f"+easy adds {int(round(cfg.easy_frac * cfg.n_train))} correctly labelled rows (same class ratio) "
        f"with |Bayes LLR| ≥ {cfg.easy_llr:g}, i.e. ≥ {cfg.easy_llr / llr_lipschitz():.1f} from the Bayes "
        f"boundary. +noisy adds {n_noisy} true positives labelled negative and {n_noisy} true negatives "
        f"labelled positive, each with |LLR| > {cfg.noise_llr:g} on its true side "
        f"({2 * n_noisy / (cfg.n_train + 2 * n_noisy):.1%} of the rows wrong). "
        f"Model 2→{cfg.hidden}→ELU→1, sigmoid score; full-batch PESG, {cfg.epochs} steps, lr {cfg.lr:g} "
        f"÷10 at 50% and 75%, γ {cfg.epoch_decay:g}, λ {cfg.weight_decay:g}, momentum {cfg.momentum:g}; "
        + (
            "+easy/+noisy retrained from the clean model of their row."
            if cfg.warm_start
            else "every panel trained from the same initial weights of its seed."
        ),
    ]
    return "\n".join(lines)


def plot_figure(data: dict, models: dict, df_seed, cfg: ToyConfig, path: str | Path) -> Path:
    """The 2 × 3 figure: score contours, data points and the models' boundaries.

    The solid line is each model's boundary at the rate-matched threshold (the score
    above which it puts ``pos_ratio`` of the clean training rows: AUC only ranks, so
    0.5 would mean nothing); the dashed line is the clean model of the same row, the
    dotted grey line the Bayes boundary at the same rate.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    every = np.concatenate([data[p]["x"] for p in PANELS])
    lo, hi = every.min(0) - 0.5, every.max(0) + 0.5
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 220), np.linspace(lo[1], hi[1], 220))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    x_clean = data["clean"]["x"]
    q = 1 - cfg.pos_ratio

    def level(score_fn):
        return float(np.quantile(score_fn(x_clean), q))

    bayes_level = level(bayes_llr)
    bayes_grid = bayes_llr(grid).reshape(gx.shape)
    aucs = {(r.loss, r.panel): r.auc for r in df_seed.itertuples()}
    fig, axes = plt.subplots(2, 3, figsize=(15, 9.6), sharex=True, sharey=True)
    for i, loss_name in enumerate(LOSS_NAMES):
        clean = models[loss_name, "clean"]
        clean_grid = clean.score(grid).reshape(gx.shape)
        clean_level = level(clean.score)
        for j, panel in enumerate(PANELS):
            ax = axes[i, j]
            model = models[loss_name, panel]
            s_grid = model.score(grid).reshape(gx.shape)
            ax.contourf(gx, gy, s_grid, levels=np.linspace(0, 1, 21), cmap="RdBu_r", alpha=0.55)
            ax.contour(
                gx,
                gy,
                bayes_grid,
                levels=[bayes_level],
                colors="0.35",
                linestyles=":",
                linewidths=1.2,
            )
            if panel != "clean":
                ax.contour(
                    gx,
                    gy,
                    clean_grid,
                    levels=[clean_level],
                    colors="k",
                    linestyles="--",
                    linewidths=1.2,
                )
            ax.contour(gx, gy, s_grid, levels=[level(model.score)], colors="k", linewidths=2.0)
            d = data[panel]
            base, extra = ~d["extra"], d["extra"]
            for mask, y_val, colour in [(base, 0, "tab:blue"), (base, 1, "tab:red")]:
                sel = mask & (d["y"] == y_val)
                ax.scatter(
                    *d["x"][sel].T, s=5 if y_val == 0 else 9, c=colour, alpha=0.6, linewidths=0
                )
            for y_val, colour in [(0, "tab:blue"), (1, "tab:red")]:
                sel = extra & (d["y"] == y_val)
                if panel == "+easy":
                    ax.scatter(
                        *d["x"][sel].T, s=16, facecolors="none", edgecolors=colour, linewidths=0.8
                    )
                else:
                    ax.scatter(*d["x"][sel].T, s=14, c=colour, edgecolors="k", linewidths=1.0)
            name = "AUC-S" if loss_name == "AUC-S" else f"AUC-M (m={cfg.margin:g})"
            ax.set_title(f"{name}, {panel}: test AUC {aucs[loss_name, panel]:.4f}", fontsize=10)
            ax.set_xlim(lo[0], hi[0])
            ax.set_ylim(lo[1], hi[1])
            ax.set_aspect("equal")
    fig.suptitle(
        "Decision boundaries (solid: this model; dashed: the row's clean model; dotted: Bayes). "
        "Red: positive label, blue: negative. Hollow: easy rows; black-edged: mislabelled rows.",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = ToyConfig()
    parser.add_argument(
        "--out-dir", default="reports", help="where toy_figure1.png/.md go (default reports)"
    )
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    parser.add_argument(
        "--epochs", type=int, default=d.epochs, help=f"full-batch PESG steps (default {d.epochs})"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="first seed; the figure shows it (default 0)"
    )
    parser.add_argument(
        "--margin", type=float, default=d.margin, help=f"AUC-M margin m (default {d.margin})"
    )
    parser.add_argument(
        "--noise-frac",
        type=float,
        default=d.noise_frac,
        help=f"wrong-label fraction of +noisy (default {d.noise_frac})",
    )
    parser.add_argument(
        "--warm-start",
        action="store_true",
        help="retrain +easy/+noisy from the clean model (the paper's protocol)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-panel progress lines")


def run(args: argparse.Namespace) -> int:
    cfg = replace(
        ToyConfig(), margin=args.margin, noise_frac=args.noise_frac, warm_start=args.warm_start
    )
    start = time.perf_counter()
    df = run_toy(
        seeds=args.seeds,
        epochs=args.epochs,
        seed=args.seed,
        out_dir=args.out_dir,
        cfg=cfg,
        verbose=not args.quiet,
    )
    print()
    print(summary_markdown(df, replace(cfg, epochs=args.epochs), args.seed))
    out = Path(args.out_dir)
    print(
        f"\nwrote {out / (FIGURE_NAME + '.png')} and {out / (FIGURE_NAME + '.md')} in {time.perf_counter() - start:.1f} s"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deepauc.research.toy", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
