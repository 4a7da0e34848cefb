"""Losses of the paper's tables, one config switch apart.

* :class:`AUCMLoss`: the AUC margin loss, paper eq. (8), min over (w, a, b), max over α ≥ 0.
* :class:`AUCSLoss`: the AUC square loss, paper eq. (4), the same min-max form with
  margin 1 and α unconstrained.
* :class:`FocalLoss`: α-balanced focal loss on logits.
* :class:`BCELoss`: binary cross-entropy on logits.

With ``h`` the sigmoid score, ``y ∈ {0, 1}`` the label and ``p`` the positive ratio, the
per-example objective of the AUC losses is::

    F = (1-p)(h-a)^2 [y=1] + p(h-b)^2 [y=0] - p(1-p) α^2
        + 2α( p(1-p) m + p h [y=0] - (1-p) h [y=1] )

averaged over the rows of the mini-batch (and over labels for multi-label input, each
label with its own a, b, α, p). Theorem 1 of the paper: for fixed scores,
``min_{a,b} max_{α≥0} E[F] = p(1-p) · A_M`` with
``A_M = Var(h|y=1) + Var(h|y=0) + max(0, m - E[h|y=1] + E[h|y=0])^2``.

The AUC losses take scores in [0, 1]; focal and BCE take logits. Every loss carries
``takes_logits`` so that :func:`loss_input` feeds each the right thing, and
:func:`build_loss` creates any of them by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AUCMLoss",
    "AUCSLoss",
    "BCELoss",
    "FocalLoss",
    "batch_score_norm",
    "build_loss",
    "create_loss",
    "loss_input",
]


def batch_score_norm(scores: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Batch Score Normalization (paper §4.1): ``h_i / ||h||_2`` over the batch dimension.

    Each label's column of scores is divided by its Euclidean norm across the rows of the
    mini-batch, so a score depends on the rest of its batch. It is a positive rescaling of
    the whole column, so the ranking inside a batch (and hence any AUC computed on it) is
    unchanged; it is applied inside the loss only, and inference uses the plain sigmoid.
    """
    return scores / scores.norm(p=2, dim=0, keepdim=True).clamp_min(eps)


def _as_2d(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(1) if x.dim() == 1 else x


class _AUCMinMaxLoss(nn.Module):
    """Shared min-max objective of AUC-M and AUC-S (see the module docstring).

    ``p`` is the positive ratio per label. Given ``imratio`` it is fixed. When
    ``imratio`` is None it is the running ratio of positives over every training batch
    seen so far (counts kept in buffers, so they are checkpointed), smoothed as
    ``(positives + 0.5) / (rows + 1)``. Unlike a per-batch estimate this converges to the
    training set's ratio within the first epoch, never hits 0 or 1, and so never zeroes
    the loss or divides by zero on a batch without positives. Prefer passing the training
    set's ratio: under DDP each rank would otherwise count only its own rows.
    """

    takes_logits = False
    alpha_nonnegative = True
    # buffers, declared for the type checker
    p: torch.Tensor
    seen_pos: torch.Tensor
    seen_rows: torch.Tensor

    def __init__(
        self,
        margin: float = 1.0,
        imratio: float | list[float] | None = None,
        num_labels: int = 1,
        batch_score_norm: bool = False,
    ) -> None:
        super().__init__()
        if margin <= 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self.margin = float(margin)
        self.num_labels = num_labels
        self.batch_score_norm = batch_score_norm
        self.a = nn.Parameter(torch.zeros(num_labels))
        self.b = nn.Parameter(torch.zeros(num_labels))
        self.alpha = nn.Parameter(torch.zeros(num_labels))
        if imratio is None:
            self.fixed_p = False
            self.register_buffer("p", torch.full((num_labels,), 0.5))
        else:
            p = torch.as_tensor(imratio, dtype=torch.float32).flatten().expand(num_labels).clone()
            if not bool(((p > 0) & (p < 1)).all()):
                raise ValueError(f"imratio must lie in (0, 1), got {imratio}")
            self.fixed_p = True
            self.register_buffer("p", p)
        self.register_buffer("seen_pos", torch.zeros(num_labels, dtype=torch.float64))
        self.register_buffer("seen_rows", torch.zeros(num_labels, dtype=torch.float64))

    def _update_p(self, y: torch.Tensor) -> None:
        if self.fixed_p or not self.training:
            return
        with torch.no_grad():
            self.seen_pos += y.sum(0).to(torch.float64)
            self.seen_rows += y.shape[0]
            self.p.copy_(((self.seen_pos + 0.5) / (self.seen_rows + 1.0)).to(self.p.dtype))

    def dual_scale(self) -> torch.Tensor:
        """``p(1-p)`` per label: the factor by which ∇_α F scales with the class ratio."""
        return self.p * (1 - self.p)

    def forward(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean of F over rows (and labels); ``scores`` in [0, 1], ``targets`` 0/1, same shape."""
        if scores.shape != targets.shape:
            raise ValueError(
                f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)} differ in shape"
            )
        h = _as_2d(scores)
        # half-precision scores (autocast) are promoted: squares of small gaps underflow in fp16
        h = h.to(torch.promote_types(h.dtype, torch.float32))
        y = _as_2d(targets).to(h.dtype)
        if h.shape[1] != self.num_labels:
            raise ValueError(f"expected {self.num_labels} label column(s), got {h.shape[1]}")
        if self.batch_score_norm:
            h = batch_score_norm(h)
        self._update_p(y)
        p, a, b, alpha, m = self.p, self.a, self.b, self.alpha, self.margin
        pos, neg = y, 1 - y
        per_row = (
            (1 - p) * (h - a) ** 2 * pos
            + p * (h - b) ** 2 * neg
            + 2 * alpha * (p * h * neg - (1 - p) * h * pos)
        )
        per_label = per_row.mean(0) + 2 * alpha * p * (1 - p) * m - p * (1 - p) * alpha**2
        return per_label.mean()


class AUCMLoss(_AUCMinMaxLoss):
    """AUC margin loss, paper eq. (8); PESG keeps α ≥ 0. See :class:`_AUCMinMaxLoss` for ``p``.

    Args:
        margin: m > 0, the desired gap between the mean positive and negative score.
        imratio: positive ratio p (float, or one per label); None = running estimate.
        num_labels: K, number of independent binary labels (one a, b, α, p each).
        batch_score_norm: apply :func:`batch_score_norm` to the scores first (off by default).
    """


class AUCSLoss(_AUCMinMaxLoss):
    """AUC square loss, paper eq. (4): the min-max form with m = 1 and α unconstrained."""

    alpha_nonnegative = False

    def __init__(
        self,
        imratio: float | list[float] | None = None,
        num_labels: int = 1,
        batch_score_norm: bool = False,
    ) -> None:
        super().__init__(
            margin=1.0, imratio=imratio, num_labels=num_labels, batch_score_norm=batch_score_norm
        )


class FocalLoss(nn.Module):
    """α-balanced focal loss on logits: mean of ``-α_t (1 - p_t)^γ log p_t``.

    ``p_t`` is the predicted probability of the true class, ``α_t = α`` for positives and
    ``1 - α`` for negatives. γ = 0 and α = 0.5 give half the BCE.
    """

    takes_logits = True

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        if not 0 < alpha < 1:
            raise ValueError(f"focal alpha must lie in (0, 1), got {alpha}")
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.alpha, self.gamma = float(alpha), float(gamma)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        y = targets.to(logits.dtype)
        log_pt = -F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        pt = log_pt.exp()
        alpha_t = self.alpha * y + (1 - self.alpha) * (1 - y)
        return (-alpha_t * (1 - pt) ** self.gamma * log_pt).mean()


class BCELoss(nn.Module):
    """Binary cross-entropy on logits, optionally with a positive-class weight."""

    takes_logits = True

    def __init__(self, pos_weight: float | None = None) -> None:
        super().__init__()
        self.pos_weight = pos_weight

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pw = (
            None if self.pos_weight is None else torch.tensor(self.pos_weight, device=logits.device)
        )
        return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), pos_weight=pw)


LOSSES = {"auc_m": AUCMLoss, "auc_s": AUCSLoss, "focal": FocalLoss, "ce": BCELoss, "bce": BCELoss}


def build_loss(name: str, **kwargs) -> nn.Module:
    """Create a loss by name: ``auc_m``, ``auc_s``, ``focal``, ``ce`` (= ``bce``)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name](**kwargs)


def create_loss(
    name: str,
    *,
    imratio: float | None = None,
    margin: float = 1.0,
    batch_score_norm: bool = False,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
) -> nn.Module:
    """A loss from a config's settings; each loss takes the settings that apply to it.

    The one place where a config (the pipeline's ``loss`` section, the toy's, the study's)
    becomes a loss object.
    """
    options: dict[str, dict] = {
        "auc_m": dict(margin=margin, imratio=imratio, batch_score_norm=batch_score_norm),
        "auc_s": dict(imratio=imratio, batch_score_norm=batch_score_norm),
        "focal": dict(alpha=focal_alpha, gamma=focal_gamma),
    }
    return build_loss(name, **options.get(name, {}))


def loss_input(loss_fn: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """What ``loss_fn`` expects from the network's logits: the logits or their sigmoid."""
    return logits if getattr(loss_fn, "takes_logits", True) else torch.sigmoid(logits)
