"""The toy's 2-D distribution, its Bayes score, and the clean, +easy and +noisy sets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# One positive Gaussian and a two-component negative mixture, all with covariance
# SIGMA^2 I: the Bayes boundary is an L-shaped curve around the positive cluster.
MU_POS = np.array([1.5, 1.5])
MU_NEG = np.array([[-0.5, 1.5], [1.5, -0.5]])
SIGMA = 1.0

PANELS = ("clean", "+easy", "+noisy")
LOSS_NAMES = ("AUC-S", "AUC-M")
FIGURE_NAME = "toy_figure1"
SCORES = ("sigmoid", "logit", "bsn")


def report_stem(cfg: ToyConfig) -> str:
    """The report and figure name: ``toy_figure1``, with ``_<score>`` unless sigmoid."""
    stem = FIGURE_NAME if cfg.score == "sigmoid" else f"{FIGURE_NAME}_{cfg.score}"
    return stem if cfg.head_init == "torch_default" else f"{stem}_{cfg.head_init}_head"


@dataclass(frozen=True)
class ToyConfig:
    """Everything a toy run depends on besides the seed.

    * Data: one positive Gaussian at (1.5, 1.5) and a negative mixture of two Gaussians
      at (-0.5, 1.5) and (1.5, -0.5), all with covariance I, so the Bayes boundary is an
      L-shaped curve around the positives (something for the hidden layer to bend);
      ``n_train`` training rows, ``pos_ratio`` of them positive. The Bayes score is the
      class-conditional log-likelihood ratio (:func:`bayes_llr`); its test AUC is the
      ceiling.
    * Easy examples: ``easy_frac * n_train`` more rows in the same class ratio, correctly
      labelled, each with ``|LLR| >= easy_llr`` on its own side. The LLR is 2-Lipschitz
      (:func:`llr_lipschitz`), so every easy row is at least ``easy_llr / 2`` from the
      Bayes boundary. They are the far tails of the classes (drawn from each class with a
      twice wider spread and kept past the threshold).
    * Noisy labels: k true positives labelled negative and k true negatives labelled
      positive (:func:`noisy_count`), so that ``noise_frac`` of the +noisy training rows
      carry a wrong label. Each lies inside its true class (``|LLR| > noise_llr`` on its
      true side), the paper's §3.2 scenario: a mislabelled example the model scores
      confidently on its true side.
    * Model: 2 → ``hidden`` → ELU → 1, the same seeded initial weights for
      all six panels of a seed; the output layer drawn as ``head_init`` says. Every panel is trained from those weights on its own
      training set; with ``warm_start`` the +easy / +noisy panels instead continue from
      the clean model of their row, as the paper's figure does.
    * Training: full-batch PESG, ``epochs`` steps ("epochs" = full-batch steps), lr
      divided by 10 at 50% and 75% of the steps (each a PESG stage: v_ref ← stage
      average), γ = ``epoch_decay``, λ = ``weight_decay``, heavy-ball ``momentum`` (PESG's
      documented extension). p is each training set's own positive ratio. The defaults
      were set on the clean panels only, not tuned to make either loss win.
    * Score h fed to the loss (``score``): ``sigmoid`` σ(z); ``logit`` the raw logit z
      (§3.2's unbounded linear h); ``bsn`` the reference's batch score normalisation,
      z / ‖z‖ over the full batch (its l2 head). Test AUC ranks by z in every case.
    * AUC-M margin m = ``margin``. With sigmoid scores a - b ≤ 1, so with m = 1 the
      optimal α = 1 + b - a is never negative and the projection never binds: AUC-M with
      m = 1 *is* AUC-S. Any difference needs m < 1. Under ``bsn`` the class-mean gap is at
      most √(1/n₊ + 1/n₋) (0.105 for the clean set), so only margins below it can bind.
    * Evaluation: test AUC on ``n_test`` fresh rows of the clean distribution, and the
      per-seed paired change against the clean panel.
    """

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
    score: str = "sigmoid"  # h fed to the loss: one of SCORES
    # the output layer as built: torch_default (nn.Linear's uniform draw) or pipeline
    # (deepauc.models.init_head: N(0, 0.01²), bias 0); ce_direction needs a CE stage
    head_init: str = "torch_default"

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}")
        if self.head_init not in ("torch_default", "pipeline"):
            raise ValueError(
                f"head_init must be torch_default or pipeline (the toy has no CE stage for "
                f"ce_direction), got {self.head_init!r}"
            )
        if self.epochs < 1 or self.n_train < 2 or self.n_test < 2:
            raise ValueError("epochs must be >= 1 and n_train, n_test >= 2")
        if not 0 < self.pos_ratio < 1 or self.easy_frac < 0 or not 0 <= self.noise_frac < 1:
            raise ValueError("need 0 < pos_ratio < 1, easy_frac >= 0 and 0 <= noise_frac < 1")


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
    rng: np.random.Generator,
    n: int,
    positive: bool,
    keep: Callable[[np.ndarray], np.ndarray],
    spread: float = 1.0,
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
    x, y = _shuffle(rng, x, y)
    return x, y


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
    x, y = _shuffle(rng, x, y)
    return x, y


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
