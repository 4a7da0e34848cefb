"""``deepauc study``: the paper's benchmark study (§4.1, Table 1, appendices H, M, N) on real data.

For every data set and imbalance ratio of the config, the same network is trained with
CE, focal, AUC-S and AUC-M over several seeds (each seed drops different positives, see
:func:`deepauc.research.datasets.make_imbalanced`), and the mean ± std test AUC lands in a
markdown table laid out like the paper's Table 1 (``reports/<name>.md``). The
hyper-parameters are tuned on the validation split from the paper's grids (focal α, γ;
PESG's epoch decay γ; AUC-M's margin m): the criterion is the mean validation AUC over
``tune_seeds``, and the final numbers are test AUCs at the end of training (no early
stopping on anything).

Protocol, as the paper's where the CPU budget allows (the report states every departure):

* CE and focal: SGD (``train.sgd_momentum``), AUC-S / AUC-M: PESG with batch score
  normalisation (BSN) on. Learning rate ``train.lr`` decayed by ``train.decay_factor`` at
  50 % and 75 % of the epochs; for PESG each decay also ends a stage (v_ref ← the stage's
  average). Weight decay 1e-4. Whole-batch tensors in memory, no augmentation except an
  optional horizontal flip.
* Networks: ``resnet20`` (the paper's ResNet20 with ELU) or ``cnn`` (a small ELU CNN
  with batch norm, for tiny images and the CPU budget).

Ablations (on ``ablations.datasets`` at the ratio nearest ``ablations.imratio``, with the
tuned AUC-S / AUC-M hyper-parameters):

* two-stage: CE for half the epochs, then AUC-M with a freshly initialised head for the
  other half, against CE and AUC-M from scratch over the full epochs;
* robustness (paper §3.2–3.3, appendix N): ``+easy`` appends ``easy_frac · n`` duplicates
  of training rows that a pixel-space logistic regression ranks confidently on their own
  side (class ratio kept); ``+noisy`` flips ``noise_frac`` of the positive labels to
  negative and as many negative labels to positive (class ratio kept); AUC-S vs AUC-M;
* α ≥ 0: AUC-M with PESG's projection of α on [0, ∞) and without it;
* dual step: PESG's ``dual='normalized'`` (default) vs ``'paper'`` (Algorithm 1 verbatim);
* LibAUC side by side: LibAUC 2.0.1's ``AUCMLoss`` + ``PESG`` (imported only here, only
  when installed) on the same data, network, seeds, epochs and hyper-parameters, plus
  ours with one LibAUC design choice switched on at a time (v_ref initialised at
  N(0, 0.01) noise, p re-estimated per batch, gradients clipped element-wise at 1,
  LibAUC's closed-form α step) to say which choice makes a difference; and the time per
  training step of both.

Jobs run in ``workers`` processes of ``threads`` torch threads each; every finished run
is appended to ``reports/<name>_runs.csv``, and a rerun with the same config reuses the
runs already there (``resume``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepauc.config import add_config_arguments, load_config
from deepauc.io import write_csv, write_text
from deepauc.losses import AUCMLoss, AUCSLoss, BCELoss, FocalLoss, batch_score_norm
from deepauc.metrics import roc_auc
from deepauc.optim import PESG
from deepauc.research.datasets import (
    DatasetUnavailable,
    ImbalancedSplit,
    load_benchmark,
    make_imbalanced,
)

__all__ = [
    "AUCMLossNoProjection",
    "AblationSpec",
    "DatasetSpec",
    "ELUCNN",
    "GridSpec",
    "Job",
    "ResNet20ELU",
    "StudyConfig",
    "TrainSpec",
    "add_arguments",
    "add_easy_examples",
    "build_model",
    "flip_labels",
    "run",
    "run_job",
    "run_study",
]

MAIN_LOSSES = ("ce", "focal", "auc_s", "auc_m")
# ours with one LibAUC 2.0.1 design choice switched on at a time (LibAUC side by side)
ATTRIBUTION_TWEAKS = (
    ("vref_noise", "+ v_ref ~ N(0, 0.01)"),
    ("batch_p", "+ per-batch p"),
    ("clip", "+ grad clip ±1"),
    ("libauc_alpha", "+ LibAUC α step"),
    ("ema_momentum", "+ LibAUC EMA momentum"),
)
LOSS_TITLES = {"ce": "CE", "focal": "Focal", "auc_s": "AUC-S", "auc_m": "AUC-M"}

# The paper's Table 1, ResNet20 rows, imratio = 1 % (test AUC mean ± std).
PAPER_TABLE1_R = {
    "C2 (R)": ("0.730±0.028", "0.724±0.020", "0.748±0.007", "0.756±0.017"),
    "C10 (R)": ("0.690±0.011", "0.681±0.011", "0.702±0.015", "0.715±0.008"),
    "S10 (R)": ("0.641±0.021", "0.634±0.024", "0.645±0.029", "0.659±0.020"),
    "C100 (R)": ("0.563±0.015", "0.565±0.022", "0.587±0.017", "0.596±0.016"),
}


# ----------------------------------------------------------------------------------------
# config


@dataclass
class GridSpec:
    """Hyper-parameter grids tuned on validation (the paper's, by default)."""

    focal_alpha: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    focal_gamma: list[float] = field(default_factory=lambda: [1.0, 2.0, 5.0])
    epoch_decay: list[float] = field(
        default_factory=lambda: [1 / 100, 1 / 300, 1 / 500, 1 / 700, 1 / 1000]
    )
    margin: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 1.0])

    def validate(self) -> None:
        for k in ("focal_alpha", "focal_gamma", "epoch_decay", "margin"):
            if not getattr(self, k):
                raise ValueError(f"grids.{k} must not be empty")


@dataclass
class DatasetSpec:
    """One data set of the study and how it is trained."""

    name: str
    root: str | None = None
    image_size: int | None = None  # area-average resize; None = native size
    imratios: list[float] = field(default_factory=lambda: [0.01, 0.1])
    min_positives: int = 20  # raise a ratio that would leave fewer training positives
    model: Literal["cnn", "resnet20", "mlp"] = "cnn"
    width: int = (
        16  # cnn: channels of the first stage (doubled at each stride-2 stage); mlp: hidden units
    )
    depth: int = 3  # cnn: number of conv stages
    epochs: int = 20
    batch_size: int = 128
    lr: float | None = None  # None = train.lr
    flip: bool = False  # random horizontal flips
    tune_seeds: list[int] | None = None  # None = the first of `seeds`
    grids: GridSpec | None = None  # None = the study's `grids`

    def validate(self) -> None:
        if not self.imratios or not all(0 < r <= 0.5 for r in self.imratios):
            raise ValueError(f"{self.name}: imratios must be non-empty values in (0, 0.5]")
        if self.epochs < 1 or self.batch_size < 2 or self.width < 1 or self.depth < 1:
            raise ValueError(f"{self.name}: epochs >= 1, batch_size >= 2, width >= 1, depth >= 1")


@dataclass
class TrainSpec:
    lr: float = 0.1
    weight_decay: float = 1e-4
    decay_at: list[float] = field(default_factory=lambda: [0.5, 0.75])
    decay_factor: float = 10.0
    sgd_momentum: float = 0.9  # CE / focal optimiser
    pesg_momentum: float = 0.0  # PESG heavy-ball momentum (0 = Algorithm 1)
    libauc_momentum: float | None = None  # LibAUC PESG's `momentum` (an EMA); None = pesg_momentum
    batch_score_norm: bool = True  # BSN before the AUC losses, as the paper
    dual: Literal["normalized", "paper"] = "normalized"

    def validate(self) -> None:
        if self.lr <= 0 or self.decay_factor <= 0 or not all(0 < f < 1 for f in self.decay_at):
            raise ValueError("train: lr > 0, decay_factor > 0, decay_at in (0, 1)")


@dataclass
class AblationSpec:
    datasets: list[str] = field(default_factory=list)  # names from `datasets`; empty = none
    libauc_datasets: list[str] = field(
        default_factory=list
    )  # extra data sets for the LibAUC column only
    imratio: float = 0.1  # run at each data set's ratio nearest this
    two_stage: bool = True
    two_stage_datasets: list[str] = field(default_factory=list)  # extra data sets, two-stage only
    two_stage_ce_fraction: float = 0.5  # share of the epochs spent on CE before AUC-M
    stage2_lr: float | None = None  # None = the data set's lr
    robustness: bool = True
    easy_frac: float = 0.5
    noise_frac: float = 0.1
    small_margin: float | None = 0.1  # also run AUC-M at this margin (None = only the tuned one)
    alpha_projection: bool = True
    dual_step: bool = True
    bsn: bool = True  # AUC-M with batch score normalisation switched off (paper appendix M)
    libauc: bool = True  # needs `pip install libauc==2.0.1`; skipped with a message otherwise
    attribution: bool = True  # ours with one LibAUC design choice at a time
    libauc_no_momentum: bool = True  # also ours vs LibAUC with momentum 0 for both
    timing_steps: int = 100  # steps timed per optimiser for the per-step time table

    def validate(self) -> None:
        if not 0 < self.two_stage_ce_fraction < 1:
            raise ValueError("ablations.two_stage_ce_fraction must lie in (0, 1)")
        if self.easy_frac < 0 or not 0 <= self.noise_frac < 1:
            raise ValueError("ablations: easy_frac >= 0, noise_frac in [0, 1)")


@dataclass
class StudyConfig:
    name: str = "study"
    out_dir: str = "reports"
    cache_dir: str | None = "data/cache/study"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    workers: int = 2
    threads: int = 1  # torch threads per worker
    on_missing: Literal["error", "skip"] = "error"
    resume: bool = True
    losses: list[str] = field(default_factory=lambda: list(MAIN_LOSSES))
    datasets: list[DatasetSpec] = field(default_factory=list)
    train: TrainSpec = field(default_factory=TrainSpec)
    grids: GridSpec = field(default_factory=GridSpec)
    ablations: AblationSpec = field(default_factory=AblationSpec)
    notes: str = ""  # free text appended to the report's caption

    def validate(self) -> None:
        if not self.datasets:
            raise ValueError("at least one data set is needed under `datasets`")
        if not self.seeds or self.workers < 1 or self.threads < 1:
            raise ValueError("seeds must be non-empty; workers, threads >= 1")
        bad = [loss for loss in self.losses if loss not in MAIN_LOSSES]
        if bad:
            raise ValueError(f"unknown losses {bad}; choose from {list(MAIN_LOSSES)}")
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"data set names repeat: {names}")
        a = self.ablations
        missing = [
            d for d in a.datasets + a.libauc_datasets + a.two_stage_datasets if d not in names
        ]
        if missing:
            raise ValueError(f"ablations.datasets {missing} are not among the datasets {names}")


# ----------------------------------------------------------------------------------------
# networks


class ELUCNN(nn.Module):
    """A small CNN: ``depth`` conv-BN-ELU stages (the later ones stride 2), global average
    pooling and a one-logit linear ``head``."""

    def __init__(self, in_ch: int = 1, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        layers, ch = [], in_ch
        for i in range(depth):
            out = width * 2**i
            layers += [
                nn.Conv2d(ch, out, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ELU(inplace=True),
            ]
            ch = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = (cout - cin) // 2 if (stride != 1 or cin != cout) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.elu(self.bn1(self.conv1(x)))))
        if self.pad is None:
            short = x
        else:  # option A of the CIFAR ResNets: subsample and zero-pad the channels
            short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.elu(out + short)


class ResNet20ELU(nn.Module):
    """The CIFAR ResNet20 (3 stages × 3 basic blocks, 16/32/64 channels) with ELU, as in
    the paper's benchmarks, with a one-logit linear ``head``."""

    def __init__(self, in_ch: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_ch, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ELU(inplace=True)
        )
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(_BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x))
        return self.head(h.mean(dim=(2, 3))).squeeze(1)


class ELUMLP(nn.Module):
    """One hidden ELU layer over the flattened image, a one-logit linear ``head``."""

    def __init__(self, in_features: int, width: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, width), nn.ELU(inplace=True)
        )
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


def build_model(spec: DatasetSpec, shape: tuple[int, ...]) -> nn.Module:
    """The data set's network for images of shape ``(C, H, W)``."""
    if spec.model == "resnet20":
        return ResNet20ELU(shape[0])
    if spec.model == "mlp":
        return ELUMLP(int(np.prod(shape)), spec.width)
    return ELUCNN(shape[0], spec.width, spec.depth)


def model_title(spec: DatasetSpec) -> str:
    if spec.model == "mlp":
        return f"MLP-{spec.width}"
    return "ResNet20-ELU" if spec.model == "resnet20" else f"CNN{spec.depth}-{spec.width}"


# ----------------------------------------------------------------------------------------
# loss / optimiser variants used by the ablations


class AUCMLossNoProjection(AUCMLoss):
    """AUC-M whose α PESG leaves unconstrained (the α ≥ 0 ablation)."""

    alpha_nonnegative = False


class AUCMLossBatchP(AUCMLoss):
    """AUC-M with p re-estimated from every mini-batch (LibAUC's default behaviour),
    clipped to [1/(2N), 1 - 1/(2N)] so that a batch without positives does not zero
    p(1-p) (which the normalized dual step divides by)."""

    def __init__(self, margin: float, batch_score_norm: bool) -> None:
        super().__init__(margin=margin, imratio=0.5, batch_score_norm=batch_score_norm)

    def _update_p(self, y: torch.Tensor) -> None:
        if self.training:
            n = y.shape[0]
            self.p.copy_(y.mean(0).clamp(0.5 / n, 1 - 0.5 / n).to(self.p.dtype))


class PESGEMAMomentum(PESG):
    """Our PESG with LibAUC's "momentum": an EMA of the primal direction that weights the
    newest direction by μ, ``buf ← (1-μ) buf + μ d`` (first step ``buf = d``), then
    ``v ← (1 - ηλ) v - η buf``."""

    def _primal_step(self, group: dict) -> None:
        lr, gamma, lam, mu = (
            group["lr"],
            group["epoch_decay"],
            group["weight_decay"],
            group["momentum"],
        )
        for p in group["params"]:
            if p.grad is None:
                continue
            st = self.state[p]
            d = p.grad + gamma * (p - st["v_ref"])
            if mu == 0:  # LibAUC skips its EMA when momentum is 0
                st["ema_buffer"] = d
            elif "ema_buffer" not in st:
                st["ema_buffer"] = d.clone()
            else:
                st["ema_buffer"].mul_(1 - mu).add_(d, alpha=mu)
            if lam:
                p.mul_(1 - lr * lam)
            p.add_(st["ema_buffer"], alpha=-lr)
            st["stage_sum"].add_(p)


class PESGClosedFormAlpha(PESG):
    """Our PESG with LibAUC's α step: α ← clip(α + η(2(m + b − a) − 2α), 0, 999)."""

    def _dual_step(self, group: dict) -> None:
        (alpha,) = group["params"]
        if alpha.grad is None:
            return
        lf = self.loss_fn
        alpha.add_(group["lr"] * (2 * (lf.margin + lf.b.detach() - lf.a.detach()) - 2 * alpha))
        alpha.clamp_(0, 999)


def _import_libauc():
    """LibAUC's AUCMLoss and PESG, or None (with the reason) when it is not installed."""
    try:
        from libauc.losses import AUCMLoss as LibAUCMLoss
        from libauc.optimizers import PESG as LibPESG
    except ImportError as err:  # pragma: no cover - depends on the environment
        return (
            None,
            f"LibAUC is not installed ({err}); `pip install libauc==2.0.1` (requirements-study.txt)",
        )
    return (LibAUCMLoss, LibPESG), ""


# ----------------------------------------------------------------------------------------
# data preparation


def _standardize(split: ImbalancedSplit) -> dict[str, torch.Tensor]:
    """Float tensors, standardised by the training split's per-channel mean and std."""
    xtr = torch.from_numpy(split.x_train).float().div_(255)
    mean = xtr.mean(dim=(0, 2, 3), keepdim=True)
    std = xtr.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3)

    def prep(x: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(x).float().div_(255) - mean) / std

    return {
        "x_train": (xtr - mean) / std,
        "y_train": torch.from_numpy(split.y_train).float(),
        "x_val": prep(split.x_val),
        "y_val": torch.from_numpy(split.y_val).float(),
        "x_test": prep(split.x_test),
        "y_test": torch.from_numpy(split.y_test).float(),
    }


def add_easy_examples(split: ImbalancedSplit, frac: float, seed: int) -> ImbalancedSplit:
    """Append ``round(frac · n_train)`` easy training rows (class ratio kept).

    Easy = a pixel-space logistic regression fitted on the training rows scores the row
    on its own side of its class's median (positives above the positive median,
    negatives below the negative median); rows are drawn from those pools with
    replacement, so the additions are duplicates of easy training images.
    """
    from sklearn.linear_model import LogisticRegression

    x = split.x_train.reshape(len(split.x_train), -1).astype(np.float32) / 255
    y = split.y_train
    lr = LogisticRegression(C=1.0, max_iter=300)
    lr.fit(x, y)
    s = lr.decision_function(x)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    easy_pos = pos[s[pos] >= np.median(s[pos])]
    easy_neg = neg[s[neg] <= np.median(s[neg])]
    n_add = int(round(frac * len(y)))
    n_pos = max(1, int(round(n_add * len(pos) / len(y))))
    rng = np.random.default_rng([seed, 31])
    add = np.concatenate([rng.choice(easy_pos, n_pos), rng.choice(easy_neg, n_add - n_pos)])
    order = rng.permutation(len(y) + len(add))
    out = dataclasses.replace(split)
    out.x_train = np.concatenate([split.x_train, split.x_train[add]])[order]
    out.y_train = np.concatenate([y, y[add]])[order]
    return out


def flip_labels(split: ImbalancedSplit, frac: float, seed: int) -> ImbalancedSplit:
    """Flip ``round(frac · n_pos)`` positive training labels to 0 and as many negative ones to 1."""
    y = split.y_train.copy()
    rng = np.random.default_rng([seed, 37])
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    k = int(round(frac * len(pos)))
    y[rng.choice(pos, k, replace=False)] = 0
    y[rng.choice(neg, k, replace=False)] = 1
    out = dataclasses.replace(split)
    out.y_train = y
    return out


# ----------------------------------------------------------------------------------------
# one training run


@dataclass(frozen=True)
class Job:
    """One training run: a data set at a ratio, a seed, a method and its parameters."""

    dataset: str
    imratio: float  # requested ratio (the achieved one is in the result)
    seed: int
    method: str  # ce | focal | auc_s | auc_m | auc_m_noproj | two_stage | libauc
    params: tuple = ()  # sorted (name, value) pairs
    variant: str = "clean"  # clean | easy | noisy
    # "" | dual_paper | bsn_flip | no_momentum | vref_noise | batch_p | clip | libauc_alpha | ema_momentum
    tweak: str = ""

    def param(self, name: str, default=None):
        return dict(self.params).get(name, default)


def _params(**kw) -> tuple:
    return tuple(sorted(kw.items()))


def _decay_epochs(epochs: int, fractions: list[float]) -> set[int]:
    """Epochs (1-based, counted as finished) after which the lr decays."""
    return {e for e in (int(round(f * epochs)) for f in fractions) if 0 < e < epochs}


def _predict(model: nn.Module, x: torch.Tensor, chunk: int = 2048) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(x[i : i + chunk]) for i in range(0, len(x), chunk)])
    model.train()
    return out.numpy().astype(np.float64)


def _auc(y: torch.Tensor, s: np.ndarray) -> float:
    y = y.numpy()
    if not np.isfinite(s).all() or y.min() == y.max():
        return float("nan")
    return roc_auc(y, s)


def _make_loss_and_opt(job: Job, model: nn.Module, p: float, lr: float, tspec: TrainSpec):
    """The loss module, optimiser and a pre-step hook for ``job``'s method and tweak."""
    bsn = tspec.batch_score_norm
    wd = tspec.weight_decay
    pre_step: Callable[[], None] | None = None
    method = job.method
    if method == "ce":
        loss = BCELoss()
    elif method == "focal":
        loss = FocalLoss(alpha=job.param("alpha"), gamma=job.param("gamma"))
    if method in ("ce", "focal"):
        opt = torch.optim.SGD(
            model.parameters(), lr=lr, momentum=tspec.sgd_momentum, weight_decay=wd
        )
        return loss, opt, pre_step, "sgd"
    gamma = job.param("epoch_decay")
    if method == "libauc":
        mods, why = _import_libauc()
        if mods is None:
            raise RuntimeError(why)
        LibAUCMLoss, LibPESG = mods
        import warnings

        warnings.filterwarnings("ignore", message="Input data has no positive sample")
        loss = LibAUCMLoss(margin=job.param("margin"), imratio=p, device=torch.device("cpu"))
        mom = tspec.pesg_momentum if tspec.libauc_momentum is None else tspec.libauc_momentum
        if job.tweak == "no_momentum":
            mom = 0.0
        opt = LibPESG(
            model.parameters(),
            loss_fn=loss,
            lr=lr,
            epoch_decay=gamma,
            weight_decay=wd,
            momentum=mom,
            verbose=False,
            device=torch.device("cpu"),
        )
        return loss, opt, pre_step, "libauc"
    if method == "auc_s":
        loss = AUCSLoss(imratio=p, batch_score_norm=bsn)
    elif method == "auc_m_noproj":
        loss = AUCMLossNoProjection(margin=job.param("margin"), imratio=p, batch_score_norm=bsn)
    elif method in ("auc_m", "two_stage"):
        if job.tweak == "batch_p":
            loss = AUCMLossBatchP(margin=job.param("margin"), batch_score_norm=bsn)
        else:
            loss = AUCMLoss(margin=job.param("margin"), imratio=p, batch_score_norm=bsn)
    else:
        raise ValueError(f"unknown method {method!r}")
    dual = "paper" if job.tweak == "dual_paper" else tspec.dual
    cls = {"libauc_alpha": PESGClosedFormAlpha, "ema_momentum": PESGEMAMomentum}.get(
        job.tweak, PESG
    )
    mom = tspec.pesg_momentum
    if job.tweak == "ema_momentum" and tspec.libauc_momentum is not None:
        mom = tspec.libauc_momentum
    if job.tweak == "no_momentum":
        mom = 0.0
    if job.tweak == "bsn_flip":
        loss.batch_score_norm = not bsn
    opt = cls(
        model.parameters(), loss, lr=lr, epoch_decay=gamma, weight_decay=wd, momentum=mom, dual=dual
    )
    if job.tweak == "vref_noise":
        with torch.no_grad():
            for group in opt.param_groups:
                if group["role"] == "primal":
                    for prm in group["params"]:
                        opt.state[prm]["v_ref"].normal_(0.0, 0.01)
    if job.tweak == "clip":
        clipped = [prm for g in opt.param_groups if g["role"] == "primal" for prm in g["params"]]

        def pre_step() -> None:
            for prm in clipped:
                if prm.grad is not None:
                    prm.grad.clamp_(-1.0, 1.0)

    return loss, opt, pre_step, "pesg"


def _train(
    job: Job,
    model: nn.Module,
    data: dict,
    p: float,
    epochs: int,
    batch_size: int,
    lr: float,
    tspec: TrainSpec,
    flip: bool,
    gen: torch.Generator,
    method_override: str | None = None,
) -> dict:
    """Train ``model`` in place; returns timing stats and whether the loss stayed finite."""
    if method_override is not None:
        job = dataclasses.replace(job, method=method_override)
    loss_fn, opt, pre_step, kind = _make_loss_and_opt(job, model, p, lr, tspec)
    takes_logits = getattr(loss_fn, "takes_logits", False)
    x, y = data["x_train"], data["y_train"]
    n = len(x)
    nb = max(1, n // batch_size)  # drop the last partial batch (BSN needs a batch)
    decays = _decay_epochs(epochs, tspec.decay_at)
    model.train()
    steps, t_opt, finite = 0, 0.0, True
    t0 = time.perf_counter()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for b in range(nb):
            idx = perm[b * batch_size : (b + 1) * batch_size] if nb > 1 else perm
            xb, yb = x[idx], y[idx]
            if flip:
                m = torch.rand(len(idx), generator=gen) < 0.5
                xb = torch.where(m[:, None, None, None], xb.flip(3), xb)
            logits = model(xb)
            if takes_logits:
                inp = logits
            else:
                inp = torch.sigmoid(logits)
                if kind == "libauc" and tspec.batch_score_norm:
                    inp = batch_score_norm(inp)
            loss = loss_fn(inp, yb)
            if not torch.isfinite(loss):
                finite = False
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if pre_step is not None:
                pre_step()
            t1 = time.perf_counter()
            opt.step()
            t_opt += time.perf_counter() - t1
            steps += 1
        if not finite:
            break
        if epoch + 1 in decays:
            if kind == "pesg":
                opt.next_stage(tspec.decay_factor)
            elif kind == "libauc":
                opt.update_regularizer(decay_factor=tspec.decay_factor)
            else:
                for g in opt.param_groups:
                    g["lr"] /= tspec.decay_factor
    total = time.perf_counter() - t0
    return {
        "steps": steps,
        "train_s": total,
        "ms_per_step": 1000 * total / max(steps, 1),
        "opt_ms_per_step": 1000 * t_opt / max(steps, 1),
        "finite": finite,
    }


_DATA_CACHE: dict = {}


def _load(spec: DatasetSpec, cache_dir: str | None):
    key = (spec.name, spec.root, spec.image_size)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # one data set at a time per process keeps memory flat
        _DATA_CACHE[key] = load_benchmark(
            spec.name, root=spec.root, image_size=spec.image_size, cache_dir=cache_dir
        )
    return _DATA_CACHE[key]


def make_split(
    spec: DatasetSpec,
    imratio: float,
    seed: int,
    cache_dir: str | None,
    variant: str = "clean",
    abl: AblationSpec | None = None,
) -> ImbalancedSplit:
    split = make_imbalanced(_load(spec, cache_dir), imratio, seed, min_positives=spec.min_positives)
    if variant == "easy":
        split = add_easy_examples(split, (abl or AblationSpec()).easy_frac, seed)
    elif variant == "noisy":
        split = flip_labels(split, (abl or AblationSpec()).noise_frac, seed)
    elif variant != "clean":
        raise ValueError(f"unknown data variant {variant!r}")
    return split


def run_job(
    job: Job, spec: DatasetSpec, tspec: TrainSpec, abl: AblationSpec, cache_dir: str | None
) -> dict:
    """Train and evaluate one run; returns a flat result row."""
    split = make_split(spec, job.imratio, job.seed, cache_dir, job.variant, abl)
    data = _standardize(split)
    p = float(split.y_train.mean())
    lr = spec.lr or tspec.lr
    torch.manual_seed(job.seed)
    model = build_model(spec, tuple(data["x_train"].shape[1:]))
    gen = torch.Generator().manual_seed(job.seed * 7919 + 17)
    if job.method == "two_stage":
        e1 = max(1, int(round(spec.epochs * abl.two_stage_ce_fraction)))
        e2 = max(1, spec.epochs - e1)
        s1 = _train(
            job,
            model,
            data,
            p,
            e1,
            spec.batch_size,
            lr,
            tspec,
            spec.flip,
            gen,
            method_override="ce",
        )
        model.head.reset_parameters()  # fresh classifier layer for the AUC stage
        s2 = _train(
            job,
            model,
            data,
            p,
            e2,
            spec.batch_size,
            abl.stage2_lr or lr,
            tspec,
            spec.flip,
            gen,
            method_override="auc_m",
        )
        stats = {
            "steps": s1["steps"] + s2["steps"],
            "train_s": s1["train_s"] + s2["train_s"],
            "ms_per_step": 1000
            * (s1["train_s"] + s2["train_s"])
            / max(1, s1["steps"] + s2["steps"]),
            "opt_ms_per_step": s2["opt_ms_per_step"],
            "finite": s1["finite"] and s2["finite"],
        }
    else:
        stats = _train(job, model, data, p, spec.epochs, spec.batch_size, lr, tspec, spec.flip, gen)
    val = _auc(data["y_val"], _predict(model, data["x_val"]))
    test = _auc(data["y_test"], _predict(model, data["x_test"]))
    return {
        "dataset": job.dataset,
        "requested_imratio": job.imratio,
        "imratio": split.imratio,
        "seed": job.seed,
        "method": job.method,
        "params": json.dumps(dict(job.params), sort_keys=True),
        "variant": job.variant,
        "tweak": job.tweak,
        "val_auc": val,
        "test_auc": test,
        "n_train": len(split.y_train),
        "pos_train": int(split.y_train.sum()),
        **stats,
    }


# ----------------------------------------------------------------------------------------
# scheduling


def _spec_hash(spec: DatasetSpec, tspec: TrainSpec) -> str:
    """What a run of ``spec`` depends on (not which runs the study asks for: grids, seeds)."""
    d = dataclasses.asdict(spec)
    for k in ("imratios", "tune_seeds", "grids"):
        d.pop(k)
    blob = json.dumps([d, dataclasses.asdict(tspec)], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def job_key(job: Job, spec_hash: str, abl: AblationSpec) -> str:
    """The cache key of a run: the job, its data set's hash and the ablation knobs it uses."""
    extra = []
    if job.variant == "easy":
        extra.append(abl.easy_frac)
    elif job.variant == "noisy":
        extra.append(abl.noise_frac)
    if job.method == "two_stage":
        extra += [abl.two_stage_ce_fraction, abl.stage2_lr]
    return json.dumps(
        [
            job.dataset,
            job.imratio,
            job.seed,
            job.method,
            list(job.params),
            job.variant,
            job.tweak,
            spec_hash,
            *extra,
        ]
    )


_WORKER: dict = {}


def _worker_init(cfg: StudyConfig) -> None:
    torch.set_num_threads(cfg.threads)
    _WORKER["cfg"] = cfg
    _WORKER["specs"] = {d.name: d for d in cfg.datasets}


def _worker_run(job: Job) -> dict:
    cfg: StudyConfig = _WORKER["cfg"]
    return run_job(job, _WORKER["specs"][job.dataset], cfg.train, cfg.ablations, cfg.cache_dir)


class Runner:
    """Runs jobs (in a process pool when ``workers > 1``), caching rows by key."""

    def __init__(self, cfg: StudyConfig, runs_csv: Path, log: Callable[[str], None]) -> None:
        self.cfg, self.runs_csv, self.log = cfg, runs_csv, log
        self.specs = {d.name: d for d in cfg.datasets}
        self.hashes = {d.name: _spec_hash(d, cfg.train) for d in cfg.datasets}
        self.rows: dict[str, dict] = {}
        if cfg.resume and runs_csv.is_file():
            import pandas as pd

            for row in pd.read_csv(runs_csv, keep_default_na=True).to_dict("records"):
                row["tweak"] = "" if not isinstance(row.get("tweak"), str) else row["tweak"]
                self.rows[row["key"]] = row
            if self.rows:
                log(f"resume: {len(self.rows)} runs already in {runs_csv}")
        self._pool = None
        self.trained: set[str] = set()  # keys trained by this invocation
        self.used: set[str] = set()  # keys the study asked for

    def key(self, job: Job) -> str:
        return job_key(job, self.hashes[job.dataset], self.cfg.ablations)

    def result(self, job: Job) -> dict:
        return self.rows[self.key(job)]

    def _save(self) -> None:
        import pandas as pd

        write_csv(pd.DataFrame(list(self.rows.values())), self.runs_csv)

    def _cost(self, job: Job) -> float:
        s = self.specs[job.dataset]
        side = s.image_size or {"digits": 8, "fashion_mnist": 28}.get(s.name, 32)
        return s.epochs * side**2 * (60 if s.name == "fashion_mnist" else 1)

    def run(self, jobs: list[Job], label: str) -> None:
        todo, seen = [], set()
        for j in jobs:
            k = self.key(j)
            self.used.add(k)
            if k not in self.rows and k not in seen:
                seen.add(k)
                todo.append(j)
        if not todo:
            return
        todo.sort(key=self._cost, reverse=True)  # longest first: the pool ends evenly
        self.log(f"{label}: {len(todo)} runs ({len(jobs) - len(todo)} cached)")
        t0 = time.perf_counter()
        if self.cfg.workers == 1:
            _worker_init(self.cfg)
            results = ((j, _worker_run(j)) for j in todo)
            self._collect(results, len(todo), t0)
        else:
            import concurrent.futures as cf
            import multiprocessing as mp

            if self._pool is None:
                self._pool = cf.ProcessPoolExecutor(
                    self.cfg.workers,
                    mp_context=mp.get_context("spawn"),
                    initializer=_worker_init,
                    initargs=(self.cfg,),
                )
            futs = {self._pool.submit(_worker_run, j): j for j in todo}
            self._collect(((futs[f], f.result()) for f in cf.as_completed(futs)), len(todo), t0)

    def _collect(self, results, total: int, t0: float) -> None:
        for i, (job, row) in enumerate(results, 1):
            row["key"] = self.key(job)
            self.rows[row["key"]] = row
            self.trained.add(row["key"])
            self._save()
            el = time.perf_counter() - t0
            self.log(
                f"  [{i}/{total}] {job.dataset} r={job.imratio:g} s={job.seed} {job.method}"
                f"{'/' + job.variant if job.variant != 'clean' else ''}{'/' + job.tweak if job.tweak else ''} "
                f"{dict(job.params)} val={row['val_auc']:.4f} test={row['test_auc']:.4f} "
                f"({row['train_s']:.1f}s; {el:.0f}s elapsed, ~{el / i * (total - i):.0f}s left)"
            )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


# ----------------------------------------------------------------------------------------
# the study


def _grid(cfg: StudyConfig, spec: DatasetSpec, loss: str) -> list[tuple]:
    g = spec.grids or cfg.grids
    if loss == "ce":
        return [()]
    if loss == "focal":
        return [_params(alpha=a, gamma=c) for a in g.focal_alpha for c in g.focal_gamma]
    if loss == "auc_s":
        return [_params(epoch_decay=e) for e in g.epoch_decay]
    return [_params(epoch_decay=e, margin=m) for e in g.epoch_decay for m in g.margin]


def _mean_val(runner: Runner, jobs: list[Job]) -> float:
    v = np.array([runner.result(j)["val_auc"] for j in jobs], float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else -math.inf


def _nearest(values: list[float], target: float) -> float:
    return min(values, key=lambda v: (abs(math.log(v) - math.log(target)), v))


def run_study(cfg: StudyConfig, log: Callable[[str], None] = print) -> dict:
    """Run the whole study; writes ``<out_dir>/<name>.md`` and ``<name>_runs.csv``. Returns a summary."""
    t_start = time.perf_counter()
    out_dir = Path(cfg.out_dir)
    runs_csv = out_dir / f"{cfg.name}_runs.csv"
    torch.set_num_threads(cfg.threads)

    # data sets that are available (loading also fills the per-data-set cache files)
    available, skipped = [], {}
    for spec in cfg.datasets:
        try:
            data = load_benchmark(
                spec.name, root=spec.root, image_size=spec.image_size, cache_dir=cfg.cache_dir
            )
        except DatasetUnavailable as err:
            if cfg.on_missing == "error":
                raise
            skipped[spec.name] = str(err)
            log(f"skipping {spec.name}: {err}")
            continue
        available.append(spec)
        log(
            f"{spec.name}: {len(data.y_train)} train / {len(data.y_test)} test images of shape "
            f"{tuple(data.x_train.shape[1:])}, {data.num_classes} classes"
        )
        del data
    if not available:
        raise DatasetUnavailable(
            "no data set of the study is available: " + "; ".join(skipped.values())
        )

    runner = Runner(cfg, runs_csv, log)
    try:
        # 1. tuning on validation
        tune_jobs: dict[tuple, dict[tuple, list[Job]]] = {}
        for spec in available:
            tseeds = spec.tune_seeds or cfg.seeds[:1]
            for r in spec.imratios:
                for loss in cfg.losses:
                    grid = _grid(cfg, spec, loss)
                    if len(grid) > 1:
                        tune_jobs[spec.name, r, loss] = {
                            prm: [Job(spec.name, r, s, loss, prm) for s in tseeds] for prm in grid
                        }
        runner.run([j for d in tune_jobs.values() for js in d.values() for j in js], "tuning")
        chosen: dict[tuple, tuple] = {}
        for spec in available:
            for r in spec.imratios:
                for loss in cfg.losses:
                    if (spec.name, r, loss) in tune_jobs:
                        cands = tune_jobs[spec.name, r, loss]
                        chosen[spec.name, r, loss] = max(
                            cands, key=lambda prm, c=cands: _mean_val(runner, c[prm])
                        )
                    else:
                        chosen[spec.name, r, loss] = _grid(cfg, spec, loss)[0]

        # 2. final runs and ablations (one pool submission)
        final = {
            (spec.name, r, loss, s): Job(spec.name, r, s, loss, chosen[spec.name, r, loss])
            for spec in available
            for r in spec.imratios
            for loss in cfg.losses
            for s in cfg.seeds
        }
        abl_jobs, abl_notes = _ablation_jobs(cfg, available, chosen)
        runner.run(
            list(final.values()) + [j for js in abl_jobs.values() for j in js],
            "final runs and ablations",
        )
    finally:
        runner.close()

    timing = _step_timing(cfg, available, chosen) if cfg.ablations.libauc else None
    wall = time.perf_counter() - t_start
    report = _report(
        cfg, available, skipped, runner, final, chosen, tune_jobs, abl_jobs, abl_notes, timing, wall
    )
    md_path = write_text(report, out_dir / f"{cfg.name}.md")
    log(f"wrote {md_path} and {runs_csv} ({wall / 60:.1f} min)")
    return {"report": md_path, "runs": runs_csv, "wall_s": wall, "chosen": chosen}


def _ablation_ratio(cfg: StudyConfig, spec: DatasetSpec) -> float:
    return _nearest(spec.imratios, cfg.ablations.imratio)


def _ablation_jobs(cfg: StudyConfig, available: list[DatasetSpec], chosen: dict):
    """The ablation runs, keyed ``<ablation>/<data set>/<ratio>/<row>``."""
    abl = cfg.ablations
    jobs: dict[str, list[Job]] = {}
    notes: list[str] = []
    specs = {s.name: s for s in available}
    if "auc_m" not in cfg.losses:
        return jobs, ["Ablations skipped: they need `auc_m` among the losses."]
    lib_ok = True
    if abl.libauc:
        mods, why = _import_libauc()
        if mods is None:
            lib_ok = False
            notes.append(f"LibAUC side by side skipped: {why}.")

    def mk(name, r, method, params, variant="clean", tweak=""):
        return [Job(name, r, s, method, params, variant, tweak) for s in cfg.seeds]

    if abl.two_stage:
        for name in _unique(abl.datasets + abl.two_stage_datasets):
            if name in specs:
                for r in specs[name].imratios:
                    jobs[f"two_stage/{name}/{r}/two_stage"] = mk(
                        name, r, "two_stage", chosen[name, r, "auc_m"]
                    )
    for name in _unique(abl.datasets + abl.libauc_datasets):
        if name not in specs:
            continue
        r = _ablation_ratio(cfg, specs[name])
        pm = chosen[name, r, "auc_m"]
        if abl.libauc and lib_ok:
            jobs[f"libauc/{name}/{r}/libauc"] = mk(name, r, "libauc", pm)
        if name not in abl.datasets:
            continue
        ps = chosen.get((name, r, "auc_s"), _params(epoch_decay=dict(pm)["epoch_decay"]))
        small = (
            _params(epoch_decay=dict(pm)["epoch_decay"], margin=abl.small_margin)
            if abl.small_margin
            else None
        )
        if abl.robustness:
            for v in ("easy", "noisy"):
                jobs[f"robust/{name}/{r}/{v}/auc_s"] = mk(name, r, "auc_s", ps, v)
                jobs[f"robust/{name}/{r}/{v}/auc_m"] = mk(name, r, "auc_m", pm, v)
            if small:
                for v in ("clean", "easy", "noisy"):
                    jobs[f"robust/{name}/{r}/{v}/auc_m_small"] = mk(name, r, "auc_m", small, v)
        if abl.alpha_projection:
            variants = ("clean", "easy") if abl.robustness else ("clean",)
            for v in variants:
                jobs[f"alpha/{name}/{r}/{v}/noproj"] = mk(name, r, "auc_m_noproj", pm, v)
                if small:
                    jobs[f"alpha/{name}/{r}/{v}/small"] = mk(name, r, "auc_m", small, v)
                    jobs[f"alpha/{name}/{r}/{v}/small_noproj"] = mk(
                        name, r, "auc_m_noproj", small, v
                    )
        if abl.dual_step:
            jobs[f"dual/{name}/{r}/paper"] = mk(name, r, "auc_m", pm, tweak="dual_paper")
        if abl.bsn:
            jobs[f"bsn/{name}/{r}/flip"] = mk(name, r, "auc_m", pm, tweak="bsn_flip")
        if abl.attribution:
            for tw, _ in ATTRIBUTION_TWEAKS:
                jobs[f"attr/{name}/{r}/{tw}"] = mk(name, r, "auc_m", pm, tweak=tw)
        lib_mom = (
            cfg.train.pesg_momentum
            if cfg.train.libauc_momentum is None
            else cfg.train.libauc_momentum
        )
        if (
            abl.libauc
            and lib_ok
            and abl.libauc_no_momentum
            and (cfg.train.pesg_momentum or lib_mom)
        ):
            jobs[f"nomom/{name}/{r}/ours"] = mk(name, r, "auc_m", pm, tweak="no_momentum")
            jobs[f"nomom/{name}/{r}/libauc"] = mk(name, r, "libauc", pm, tweak="no_momentum")
    return jobs, notes


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _step_timing(cfg: StudyConfig, available: list[DatasetSpec], chosen: dict) -> list[dict] | None:
    """Time ``timing_steps`` training steps (forward, backward, step) of ours and LibAUC's
    AUC-M + PESG on each ablation data set's network, in this process, one after the other."""
    mods, _ = _import_libauc()
    if mods is None:
        return None
    out = []
    abl = cfg.ablations
    for name in _unique(abl.datasets + abl.libauc_datasets):
        spec = next((s for s in available if s.name == name), None)
        if spec is None:
            continue
        r = _ablation_ratio(cfg, spec)
        data = _standardize(make_split(spec, r, cfg.seeds[0], cfg.cache_dir))
        p = float(data["y_train"].mean())
        row = {"dataset": name, "model": model_title(spec), "batch": spec.batch_size}
        for method in ("auc_m", "libauc"):
            job = Job(name, r, cfg.seeds[0], method, chosen[name, r, "auc_m"])
            torch.manual_seed(0)
            model = build_model(spec, tuple(data["x_train"].shape[1:]))
            loss_fn, opt, _, kind = _make_loss_and_opt(
                job, model, p, spec.lr or cfg.train.lr, cfg.train
            )
            x = data["x_train"][: spec.batch_size]
            y = data["y_train"][: spec.batch_size].clone()
            y[0] = 1.0
            tot, t_opt = [], []
            for i in range(cfg.ablations.timing_steps + 5):
                t0 = time.perf_counter()
                h = torch.sigmoid(model(x))
                if kind == "libauc" and cfg.train.batch_score_norm:
                    h = batch_score_norm(h)
                loss = loss_fn(h, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                t1 = time.perf_counter()
                opt.step()
                t2 = time.perf_counter()
                if i >= 5:
                    tot.append(t2 - t0)
                    t_opt.append(t2 - t1)
            row[f"{method}_step_ms"] = 1000 * float(np.median(tot))
            row[f"{method}_opt_ms"] = 1000 * float(np.median(t_opt))
        out.append(row)
    return out


# ----------------------------------------------------------------------------------------
# the report


def _fmt(vals: list[float]) -> str:
    v = np.asarray(vals, float)
    ok = v[np.isfinite(v)]
    if ok.size == 0:
        return "diverged"
    s = f"{ok.mean():.3f}±{ok.std(ddof=1) if ok.size > 1 else 0.0:.3f}"
    if ok.size < v.size:
        s += f" ({v.size - ok.size} diverged)"
    return s


def _tests(runner: Runner, jobs: list[Job]) -> list[float]:
    return [float(runner.result(j)["test_auc"]) for j in jobs]


def _paired(a: list[float], b: list[float]) -> str:
    d = np.asarray(a, float) - np.asarray(b, float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return "n/a"
    sd = d.std(ddof=1) if d.size > 1 else 0.0
    return f"{d.mean():+.3f}±{sd:.3f}"


def _significant(a: list[float], b: list[float], min_effect: float = 0.001) -> int:
    """+1 / -1 when a − b is positive / negative beyond 2 standard errors (paired) and by at
    least ``min_effect`` (visible at three decimals), else 0."""
    d = np.asarray(a, float) - np.asarray(b, float)
    d = d[np.isfinite(d)]
    if d.size < 2 or abs(d.mean()) < min_effect:
        return 0
    se = d.std(ddof=1) / math.sqrt(d.size)
    if se == 0:
        return int(np.sign(d.mean()))
    return int(np.sign(d.mean())) if abs(d.mean()) > 2 * se else 0


def _tuning_text(cfg: StudyConfig, spec: DatasetSpec) -> str:
    g = spec.grids or cfg.grids
    if all(
        len(getattr(g, k)) == 1 for k in ("focal_alpha", "focal_gamma", "epoch_decay", "margin")
    ):
        return "hyper-parameters fixed, no tuning: " + _grid_text(g)
    seeds = ", ".join(map(str, spec.tune_seeds or cfg.seeds[:1]))
    own = f" over its own grids {_grid_text(g)}" if spec.grids else ""
    return f"tuned on the mean validation AUC of seed(s) {seeds}{own}"


def _grid_text(g: GridSpec) -> str:
    return (
        f"focal α ∈ {g.focal_alpha}, γ_f ∈ {g.focal_gamma}; PESG γ ∈ "
        f"{{{', '.join(f'1/{round(1 / e)}' for e in g.epoch_decay)}}}; m ∈ {g.margin}"
    )


def _params_text(prm: tuple) -> str:
    names = {"alpha": "α", "gamma": "γ_f", "epoch_decay": "γ", "margin": "m"}
    parts = []
    for k, v in prm:
        if k == "epoch_decay":
            parts.append(f"γ=1/{round(1 / v):d}")
        else:
            parts.append(f"{names.get(k, k)}={v:g}")
    return ", ".join(parts) or "—"


def _report(
    cfg, available, skipped, runner, final, chosen, tune_jobs, abl_jobs, abl_notes, timing, wall
) -> str:
    losses = cfg.losses
    L = []
    L.append(f"# Benchmark study: {', '.join(LOSS_TITLES[x] for x in losses)} on imbalanced data\n")
    L.append(
        f"Generated by `deepauc study` (config name `{cfg.name}`) in {wall / 60:.1f} minutes "
        f"with {cfg.workers} worker process(es) × {cfg.threads} torch thread(s) "
        f"(torch {torch.__version__}, CPU). Every number is a test AUC at the end of training, mean ± std "
        f"over {len(cfg.seeds)} seeds (seeds {', '.join(map(str, cfg.seeds))}: each drops different "
        f"positives and draws a different 10 % validation split; the test set is untouched). "
        f"All runs: `{cfg.name}_runs.csv`.\n"
    )
    reused = len(runner.used - runner.trained)
    if reused:
        cpu = sum(float(runner.rows[k]["train_s"]) for k in runner.used) / 60
        L.append(
            f"{reused} of the {len(runner.used)} runs were reused from `{cfg.name}_runs.csv` (`resume`), so the "
            f"time above is not the study's; their training loops took {cpu:.0f} CPU-minutes in all.\n"
        )

    # --- Table 1 layout
    L.append("## Table 1 layout: test AUC\n")
    head = "| Dataset (network) | imratio | " + " | ".join(LOSS_TITLES[x] for x in losses) + " |"
    has_cm = "ce" in losses and "auc_m" in losses
    if has_cm:
        head += " AUC-M − CE (paired) |"
    L.append(head)
    L.append("|" + "---|" * (head.count("|") - 1))
    orderings = []
    for spec in available:
        for r in spec.imratios:
            cells = {
                loss: _tests(runner, [final[spec.name, r, loss, s] for s in cfg.seeds])
                for loss in losses
            }
            means = {k: np.nanmean(v) if np.isfinite(v).any() else -1 for k, v in cells.items()}
            best = max(means, key=means.get)
            achieved = runner.result(final[spec.name, r, losses[0], cfg.seeds[0]])["imratio"]
            ratio = (
                f"{achieved:.1%}" if abs(achieved - r) < 5e-4 else f"{achieved:.1%} (asked {r:.0%})"
            )
            row = (
                f"| {spec.name} ({model_title(spec)}) | {ratio} | "
                + " | ".join(
                    (f"**{_fmt(cells[k])}**" if k == best else _fmt(cells[k])) for k in losses
                )
                + " |"
            )
            if has_cm:
                row += f" {_paired(cells['auc_m'], cells['ce'])} |"
            L.append(row)
            orderings.append((spec, r, achieved, cells))
    L.append("")
    cap = []
    for spec in available:
        pos = runner.result(final[spec.name, spec.imratios[0], losses[0], cfg.seeds[0]])
        cap.append(
            f"{spec.name}: {model_title(spec)}"
            f"{f' at {spec.image_size}×{spec.image_size} px' if spec.image_size else ''}, "
            f"{spec.epochs} epochs (paper: 100), batch {spec.batch_size}, lr {spec.lr or cfg.train.lr:g}"
            f"{', horizontal flips' if spec.flip else ''}, {_tuning_text(cfg, spec)}; "
            f"{pos['n_train']} training rows at the first ratio"
        )
    L.append(
        "*Caption.* " + "; ".join(cap) + ". "
        f"Stagewise lr: ÷{cfg.train.decay_factor:g} at {', '.join(f'{f:.0%}' for f in cfg.train.decay_at)} "
        f"of the epochs (PESG: each decay ends a stage, v_ref ← the stage's average); weight decay "
        f"{cfg.train.weight_decay:g}; CE and focal by SGD with momentum {cfg.train.sgd_momentum:g}; AUC-S and "
        f"AUC-M by our PESG (dual step `{cfg.train.dual}`, momentum {cfg.train.pesg_momentum:g}), BSN "
        f"{'on' if cfg.train.batch_score_norm else 'off'}, p fixed at the training split's ratio. "
        + (f"Grids: {_grid_text(cfg.grids)}. " if any(sp.grids is None for sp in available) else "")
        + "The paper's grids: α ∈ [0.25, 0.5, 0.75], γ_f ∈ [1, 2, 5], γ ∈ {1/100, 1/300, 1/500, 1/700, 1/1000}, "
        "m ∈ [0.1, 0.3, 0.5, 0.7, 1.0]. Ratios below `min_positives` positives are raised to it. "
        "Bold: best mean in the row. The last column is the mean ± std over seeds of the per-seed "
        "difference (same split and initial weights for both losses)."
        + (f" {cfg.notes}" if cfg.notes else "")
    )
    L.append("")
    L.append("The paper's Table 1 (ResNet20-ELU rows, imratio 1 %, 100 epochs) for comparison:\n")
    L.append("| Dataset | CE | Focal | AUC-S | AUC-M |\n|---|---|---|---|---|")
    for k, v in PAPER_TABLE1_R.items():
        L.append(f"| {k} | " + " | ".join(v) + " |")
    L.append("")

    # --- ordering
    L.append("## Does the paper's ordering hold?\n")
    L.append(
        "The paper's claim: AUC-M ≥ AUC-S > CE, Focal, most clearly at imratio 1 %. Per row, "
        "a difference counts when the paired per-seed difference exceeds two standard errors.\n"
    )
    for spec, _r, achieved, cells in orderings:
        bits = []
        for a, b in (
            ("auc_m", "auc_s"),
            ("auc_m", "ce"),
            ("auc_m", "focal"),
            ("auc_s", "ce"),
            ("ce", "focal"),
        ):
            if a in cells and b in cells:
                sig = _significant(cells[a], cells[b])
                word = {1: ">", -1: "<", 0: "≈"}[sig]
                bits.append(
                    f"{LOSS_TITLES[a]} {word} {LOSS_TITLES[b]} ({_paired(cells[a], cells[b])})"
                )
        L.append(f"- {spec.name} at {achieved:.1%}: " + "; ".join(bits) + ".")
    same = [
        f"{spec.name} at {achieved:.1%}"
        for spec, _r, achieved, cells in orderings
        if "auc_m" in cells and "auc_s" in cells and np.array_equal(cells["auc_m"], cells["auc_s"])
    ]
    if same:
        L.append(
            f"\nAUC-M and AUC-S agree run for run in {', '.join(same)}: validation chose m = 1 there, and for "
            "scores in [0, 1] with m ≥ 1 the optimal α = m − E[h|y=1] + E[h|y=0] is never negative, PESG's "
            "projection on α ≥ 0 never bound in these runs, and AUC-M was exactly AUC-S (m = 1, α free)."
        )
    L.append("")

    # --- chosen hyper-parameters
    L.append("## Hyper-parameters chosen on validation\n")
    L.append("| Dataset | imratio | " + " | ".join(LOSS_TITLES[x] for x in losses) + " |")
    L.append("|---|---|" + "---|" * len(losses))
    for spec in available:
        for r in spec.imratios:
            cells = []
            for loss in losses:
                prm = chosen[spec.name, r, loss]
                if (spec.name, r, loss) in tune_jobs:
                    v = _mean_val(runner, tune_jobs[spec.name, r, loss][prm])
                    cells.append(f"{_params_text(prm)} (val {v:.3f})")
                else:
                    cells.append(_params_text(prm))
            L.append(f"| {spec.name} | {r:g} | " + " | ".join(cells) + " |")
    L.append("")

    # --- ablations
    if abl_jobs or abl_notes:
        L.extend(
            _ablation_report(cfg, available, runner, final, chosen, abl_jobs, abl_notes, timing)
        )
    if skipped:
        L.append("## Data sets skipped\n")
        for k, v in skipped.items():
            L.append(f"- {k}: {v}")
        L.append("")
    return "\n".join(L) + "\n"


def _ablation_report(cfg, available, runner, final, chosen, abl_jobs, notes, timing) -> list[str]:
    L = ["## Ablations\n"]
    a = cfg.ablations

    def get(key):
        return _tests(runner, abl_jobs[key]) if key in abl_jobs else None

    def main(name, r, loss):
        return (
            _tests(runner, [final[name, r, loss, s] for s in cfg.seeds])
            if loss in cfg.losses
            else None
        )

    def ratio(name, r):
        return f"{runner.result(final[name, r, 'auc_m', cfg.seeds[0]])['imratio']:.1%}"

    def f(v):
        return _fmt(v) if v is not None else "—"

    def d(x, y):
        return _paired(x, y) if x is not None and y is not None else "—"

    def keyed(prefix):
        """(data set, ratio) pairs that have keys under ``prefix``, in config order."""
        out = []
        for k in abl_jobs:
            parts = k.split("/")
            if parts[0] == prefix and (parts[1], float(parts[2])) not in out:
                out.append((parts[1], float(parts[2])))
        return out

    def tuned_m(name, r):
        return dict(chosen[name, r, "auc_m"]).get("margin")

    if keyed("two_stage"):
        L.append("### Two-stage vs one-stage (paper §3.4)\n")
        L.append(
            "| Dataset | imratio | CE | AUC-M from scratch | CE → AUC-M (fresh head) | two-stage − scratch | "
            "two-stage − CE |"
        )
        L.append("|---|---|---|---|---|---|---|")
        for name, r in keyed("two_stage"):
            t, sc, ce = (
                get(f"two_stage/{name}/{r}/two_stage"),
                main(name, r, "auc_m"),
                main(name, r, "ce"),
            )
            L.append(
                f"| {name} | {ratio(name, r)} | {f(ce)} | {f(sc)} | {f(t)} | {d(t, sc)} | {d(t, ce)} |"
            )
        L.append(
            f"\nSame total epochs for all three: the two-stage run spends {a.two_stage_ce_fraction:.0%} of "
            "them on CE (SGD) and the rest on AUC-M (PESG, the tuned γ and m of the row, lr "
            f"{a.stage2_lr if a.stage2_lr else 'as the data set'}) after re-initialising the last linear "
            "layer; each stage has its own stagewise decays. Differences are paired per seed.\n"
        )
    if keyed("robust"):
        L.append("### Robustness to easy and noisy data (paper §3.2–3.3, appendix N)\n")
        sm = a.small_margin
        L.append(
            "| Dataset | training data | AUC-S | AUC-M (tuned m) | "
            + (f"AUC-M (m = {sm:g}) | " if sm else "")
            + "AUC-M − AUC-S |"
            + (f" AUC-M (m = {sm:g}) − AUC-S |" if sm else "")
        )
        L.append("|---|---|---|---|---|" + ("---|---|" if sm else ""))
        for name, r in keyed("robust"):
            for v in ("clean", "easy", "noisy"):
                s_ = main(name, r, "auc_s") if v == "clean" else get(f"robust/{name}/{r}/{v}/auc_s")
                m_ = main(name, r, "auc_m") if v == "clean" else get(f"robust/{name}/{r}/{v}/auc_m")
                row = f"| {name} ({ratio(name, r)}) | {v if v == 'clean' else '+' + v} | {f(s_)} | {f(m_)} (m = {tuned_m(name, r):g}) |"
                if sm:
                    small = get(f"robust/{name}/{r}/{v}/auc_m_small")
                    row += f" {f(small)} |"
                row += f" {d(m_, s_)} |"
                if sm:
                    row += f" {d(small, s_)} |"
                L.append(row)
        L.append(
            f"\n+easy: {a.easy_frac:.0%} more training rows, duplicates of rows that a pixel-space "
            "logistic regression places on their own side of their class's median score (class ratio "
            f"kept). +noisy: {a.noise_frac:.0%} of the positive labels flipped to negative and as many "
            "negative labels flipped to positive (class ratio kept). Validation and test sets clean; "
            "γ as tuned on the clean data.\n"
        )
    if keyed("alpha"):
        L.append("### α ≥ 0: AUC-M with and without the projection\n")
        L.append("| Dataset | training data | m | with α ≥ 0 | α unconstrained | with − without |")
        L.append("|---|---|---|---|---|---|")
        pairs = []
        for name, r in keyed("alpha"):
            for v in ("clean", "easy"):
                if f"alpha/{name}/{r}/{v}/noproj" not in abl_jobs:
                    continue
                label = v if v == "clean" else "+easy"
                w = main(name, r, "auc_m") if v == "clean" else get(f"robust/{name}/{r}/easy/auc_m")
                wo = get(f"alpha/{name}/{r}/{v}/noproj")
                pairs.append((w, wo))
                L.append(
                    f"| {name} ({ratio(name, r)}) | {label} | {tuned_m(name, r):g} (tuned) | {f(w)} | {f(wo)} | {d(w, wo)} |"
                )
                if f"alpha/{name}/{r}/{v}/small" in abl_jobs:
                    w, wo = (
                        get(f"alpha/{name}/{r}/{v}/small"),
                        get(f"alpha/{name}/{r}/{v}/small_noproj"),
                    )
                    pairs.append((w, wo))
                    L.append(
                        f"| {name} ({ratio(name, r)}) | {label} | {a.small_margin:g} | {f(w)} | {f(wo)} | {d(w, wo)} |"
                    )
        L.append(
            "\nFor scores in [0, 1] and m ≥ 1 the optimal α = m − E[h|y=1] + E[h|y=0] is never negative, so "
            "the projection can only matter for m < 1."
            + (
                " Here every row is identical run for run with and without it: α never reached 0 in "
                "any of these runs, so the projection never acted, whatever the margin."
                if pairs and all(w is not None and np.array_equal(w, wo) for w, wo in pairs)
                else ""
            )
            + "\n"
        )
    if keyed("dual"):
        L.append("### PESG dual step: normalized vs the paper's\n")
        L.append(
            "| Dataset | imratio | `dual='normalized'` | `dual='paper'` | normalized − paper |"
        )
        L.append("|---|---|---|---|---|")
        for name, r in keyed("dual"):
            m_, pp = main(name, r, "auc_m"), get(f"dual/{name}/{r}/paper")
            if cfg.train.dual == "paper":
                m_, pp = pp, m_
            L.append(f"| {name} | {ratio(name, r)} | {f(m_)} | {f(pp)} | {d(m_, pp)} |")
        L.append(
            "\nThe docstring of `deepauc.optim` cites a measurement on an MLP without momentum; "
            "`bench/dual_step.py` re-measures that exact setting (`reports/study_dual_step.md`).\n"
        )
    if keyed("bsn"):
        L.append("### Batch score normalisation (paper appendix M)\n")
        L.append("| Dataset | imratio | AUC-M with BSN | AUC-M without BSN | with − without |")
        L.append("|---|---|---|---|---|")
        for name, r in keyed("bsn"):
            m_, o = main(name, r, "auc_m"), get(f"bsn/{name}/{r}/flip")
            if not cfg.train.batch_score_norm:
                m_, o = o, m_
            L.append(f"| {name} | {ratio(name, r)} | {f(m_)} | {f(o)} | {d(m_, o)} |")
        L.append("")
    lib = _unique(keyed("libauc") + keyed("attr") + keyed("nomom"))
    if lib:
        mom = cfg.train.pesg_momentum
        lmom = mom if cfg.train.libauc_momentum is None else cfg.train.libauc_momentum
        L.append("### LibAUC side by side\n")
        L.append(
            "Same data, network, seeds, initial weights, batches, epochs and hyper-parameters (tuned γ, m; "
            "lr, weight decay, decays; BSN applied to the scores fed to both losses). LibAUC is called as "
            "its documentation shows: `AUCMLoss(margin, imratio)` then `loss(scores, labels)`, "
            "`PESG(model.parameters(), loss_fn=..., momentum=...)`, `update_regularizer(decay_factor)` at "
            f"each decay. Momentum: ours {mom:g} (heavy-ball: buf ← μ·buf + d), LibAUC {lmom:g} (its "
            "`momentum`, an EMA that weights the newest direction by μ: buf ← (1−μ)·buf + μ·d, which "
            "for μ = 0.9 is nearly no momentum). The middle columns are ours with one of LibAUC's design "
            "choices switched on at a time.\n"
        )
        tw = list(ATTRIBUTION_TWEAKS)
        L.append(
            "| Dataset | imratio | ours (AUC-M) | "
            + " | ".join(t for _, t in tw)
            + " | LibAUC 2.0.1 | ours − LibAUC |"
        )
        L.append("|---|---|---|" + "---|" * len(tw) + "---|---|")
        for name, r in lib:
            ours, lb = main(name, r, "auc_m"), get(f"libauc/{name}/{r}/libauc")
            cells = " | ".join(f(get(f"attr/{name}/{r}/{t}")) for t, _ in tw)
            L.append(
                f"| {name} | {ratio(name, r)} | {f(ours)} | {cells} | {f(lb) if lb else 'skipped'} | {d(ours, lb)} |"
            )
        L.append("")
        for name, r in lib:
            ours = main(name, r, "auc_m")
            effects = []
            for t, title in tw:
                other = get(f"attr/{name}/{r}/{t}")
                if other is not None:
                    verdict = {1: "hurts", -1: "helps", 0: "no difference beyond seed noise"}[
                        _significant(ours, other)
                    ]
                    effects.append(f"{title.lstrip('+ ')}: {verdict} ({_paired(other, ours)})")
            if effects:
                L.append(f"- {name}, ours with LibAUC's choice − ours: " + "; ".join(effects) + ".")
        nm = keyed("nomom")
        if nm:
            L.append("\nWithout momentum for both (PESG as the paper's Algorithm 1):\n")
            L.append(
                "| Dataset | imratio | ours (AUC-M, momentum 0) | LibAUC 2.0.1 (momentum 0) | ours − LibAUC |"
            )
            L.append("|---|---|---|---|---|")
            for name, r in nm:
                o, lb = get(f"nomom/{name}/{r}/ours"), get(f"nomom/{name}/{r}/libauc")
                L.append(f"| {name} | {ratio(name, r)} | {f(o)} | {f(lb)} | {d(o, lb)} |")
        L.append("")
    if timing:
        L.append("### Time per training step (forward + backward + optimiser step)\n")
        L.append(
            "| Dataset | network | batch | ours: step ms | ours: optimiser ms | LibAUC: step ms | LibAUC: optimiser ms |"
        )
        L.append("|---|---|---|---|---|---|---|")
        for t in timing:
            L.append(
                f"| {t['dataset']} | {t['model']} | {t['batch']} | {t['auc_m_step_ms']:.2f} | "
                f"{t['auc_m_opt_ms']:.3f} | {t['libauc_step_ms']:.2f} | {t['libauc_opt_ms']:.3f} |"
            )
        L.append(
            f"\nMedian over {cfg.ablations.timing_steps} steps in one process with {cfg.threads} torch "
            "thread(s), measured one optimiser after the other on a shared machine.\n"
        )
    for note in notes:
        L.append(f"- {note}")
    if notes:
        L.append("")
    return L


# ----------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--workers", type=int, default=None, help="override the config's worker processes"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final line")


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.workers is not None:
        overrides.append(f"workers={args.workers}")
    cfg = load_config(args.config, StudyConfig, overrides)

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, flush=True)

    out = run_study(cfg, log=log)
    if args.quiet:
        print(out["report"])
    return 0


if __name__ == "__main__":  # pragma: no cover
    from deepauc.cli import main

    sys.exit(main(["study", *sys.argv[1:]]))
