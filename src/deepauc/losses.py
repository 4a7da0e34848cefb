"""The paper's losses, one config switch apart: AUC-M (eq. 8), AUC-S (eq. 4), focal and BCE;
:func:`loss_input` feeds each the logits or the sigmoid scores it takes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AUCMLoss",
    "AUCSLoss",
    "BCELoss",
    "FocalLoss",
    "LOSSES",
    "LossSpec",
    "SoftmaxCELoss",
    "auc_variables",
    "WeightedBCELoss",
    "batch_score_norm",
    "build_loss",
    "create_loss",
    "loss_input",
]


def batch_score_norm(scores: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Batch Score Normalization (paper §4.1): ``z_i / ||z||_2`` over the batch dimension.

    Each label's column is divided by its Euclidean norm across the rows of the mini-batch
    (``F.normalize(z, dim=0)``), so a score depends on the rest of its batch and lies in
    [-1, 1]. The reference applies it to the raw linear outputs (the logits), which is what
    ``batch_score_norm=True`` does inside the AUC losses. It is a positive rescaling of the
    whole column, so the ranking inside a batch is unchanged; it is applied inside the loss
    only, and inference uses the plain sigmoid of the logit, which ranks the same.
    """
    return F.normalize(scores, p=2.0, dim=0, eps=eps)


# batch_score_norm settings: what the AUC losses take and normalise
BSN_MODES: dict[bool | str, bool | str] = {
    False: False,
    "none": False,
    True: "logits",
    "logits": "logits",
    "sigmoid": "sigmoid",
}


def _bsn_mode(value: bool | str) -> bool | str:
    """False, "logits" or "sigmoid" for a ``batch_score_norm`` setting."""
    if isinstance(value, (bool, str)) and value in BSN_MODES:
        return BSN_MODES[value]
    raise ValueError(
        f"batch_score_norm must be False, True, 'none', 'logits' or 'sigmoid', got {value!r}"
    )


def _as_2d(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(1) if x.dim() == 1 else x


class _AUCMinMaxLoss(nn.Module):
    """Shared min-max objective of AUC-M and AUC-S.

    With ``h`` the score (the sigmoid of the logit, or the logit normalised over the batch
    under Batch Score Normalization), ``y ∈ {0, 1}`` the label and ``p`` the positive ratio, the
    per-example objective of the AUC losses is::

        F = (1-p)(h-a)^2 [y=1] + p(h-b)^2 [y=0] - p(1-p) α^2
            + 2α( p(1-p) m + p h [y=0] - (1-p) h [y=1] )

    averaged over the rows of the mini-batch (and over labels for multi-label input, each
    label with its own a, b, α, p). Theorem 1 of the paper: for fixed scores,
    ``min_{a,b} max_{α≥0} E[F] = p(1-p) · A_M`` with
    ``A_M = Var(h|y=1) + Var(h|y=0) + max(0, m - E[h|y=1] + E[h|y=0])^2``.

    ``p`` is the positive ratio per label. Given ``imratio`` it is fixed. When
    ``imratio`` is None it is the running ratio of positives over every training batch
    seen so far (counts kept in buffers, so they are checkpointed), smoothed as
    ``(positives + 0.5) / (rows + 1)``. Unlike a per-batch estimate this converges to the
    training set's ratio within the first epoch, never hits 0 or 1, and so never zeroes
    the loss or divides by zero on a batch without positives. Prefer passing the training
    set's ratio: under DDP each rank would otherwise count only its own rows.

    ``batch_score_norm`` chooses the score ``h`` that enters F:

    * ``False`` (or ``"none"``): ``h`` is the sigmoid score, fed as is.
    * ``True`` (or ``"logits"``): the reference's Batch Score Normalization. The loss takes
      the raw logits ``z`` and uses ``h = z / ||z||_2`` over the batch, per label
      (:func:`batch_score_norm`); ``takes_logits`` is then True. With ``||h|| = 1`` a
      batch of n₊ positives and n₋ negatives has a class-mean gap of at most
      ``sqrt(1/n₊ + 1/n₋)``, so a margin can bind only below that: choose m with the
      batch size and class ratio in mind (the bound is below 1 once n₊ ≥ 2 and n₋ ≥ 3).
    * ``"sigmoid"``: a different method, kept for ablations: the sigmoid scores are fed and
      normalised the same way. While the sigmoid scores are of similar size each
      normalised score is close to ``1/sqrt(B)`` for a batch of B rows, so the class-mean
      gap stays small against the margins of the paper's grid.

    ``device`` (LibAUC's keyword) moves a, b, α and the buffers there. ``version`` is
    refused: LibAUC's ``"v1"`` re-estimates p on every batch and ``"v2"`` drops p, while
    this loss is eq. (8) with p as above (the LibAUC notes of
    :class:`~deepauc.optim.PESG` and docs/method.md list the differences).
    """

    alpha_nonnegative = True
    # A min-max loss: a, b and α are its own parameters (PESG steps α; the log records them).
    min_max: ClassVar[bool] = True
    # buffers, declared for the type checker
    p: torch.Tensor
    seen_pos: torch.Tensor
    seen_rows: torch.Tensor

    def __init__(
        self,
        margin: float = 1.0,
        imratio: float | list[float] | None = None,
        num_labels: int = 1,
        batch_score_norm: bool | str = False,
        *,
        label_reduction: str = "mean",
        device: torch.device | str | None = None,
        version: str | None = None,
    ) -> None:
        super().__init__()
        if label_reduction not in ("mean", "sum"):
            raise ValueError(f"label_reduction must be 'mean' or 'sum', got {label_reduction!r}")
        # "sum": label k's a, b and α get the gradient a one-label loss on column k would give
        # them, whatever the number of labels; "mean" divides it by num_labels, so with many
        # labels they trail the scores and the square terms pull the positives down
        self.label_reduction = label_reduction
        if version is not None:
            raise ValueError(
                f"{type(self).__name__} has no version (got {version!r}): it is the paper's "
                "eq. (8) with p fixed at imratio or a running ratio, unlike LibAUC's 'v1' "
                "(p from every batch) and 'v2' (no p); see the LibAUC notes of "
                "deepauc.optim.PESG and docs/method.md"
            )
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
        if device is not None:
            self.to(device)

    @property
    def batch_score_norm(self) -> bool | str:
        """False, ``"logits"`` or ``"sigmoid"``; set from any accepted setting."""
        return self._bsn

    @batch_score_norm.setter
    def batch_score_norm(self, value: bool | str) -> None:
        self._bsn = _bsn_mode(value)

    @property
    def takes_logits(self) -> bool:
        """True under Batch Score Normalization of the logits, False for sigmoid scores."""
        return self._bsn == "logits"

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

    def _score_columns(
        self, scores: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, labels) views of scores and targets; one label may come as (N,) or (N, 1)."""
        one_column = self.num_labels == 1 and scores.dim() in (1, 2) and targets.dim() in (1, 2)
        if one_column and scores.numel() == targets.numel() == scores.shape[0]:
            return scores.reshape(-1, 1), targets.reshape(-1, 1)
        if scores.shape != targets.shape:
            raise ValueError(
                f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)} differ in shape"
            )
        return _as_2d(scores), _as_2d(targets)

    def forward(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean of F over rows (and labels); ``targets`` 0/1.

        ``scores`` are what :func:`loss_input` gives: logits when ``takes_logits``, else
        sigmoid scores.
        """
        h, y = self._score_columns(scores, targets)
        # half-precision scores (autocast) are promoted: squares of small gaps underflow in fp16
        h = h.to(torch.promote_types(h.dtype, torch.float32))
        y = y.to(h.dtype)
        if h.shape[1] != self.num_labels:
            raise ValueError(f"expected {self.num_labels} label column(s), got {h.shape[1]}")
        if self._bsn:
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
        return per_label.sum() if self.label_reduction == "sum" else per_label.mean()


class AUCMLoss(_AUCMinMaxLoss):
    """AUC margin loss, paper eq. (8); PESG keeps α ≥ 0. See :class:`_AUCMinMaxLoss` for ``p``.

    Args:
        margin: m > 0, the desired gap between the mean positive and negative score.
        imratio: positive ratio p (float, or one per label); None = running estimate.
        num_labels: K, number of independent binary labels (one a, b, α, p each).
        label_reduction: ``"mean"`` (default) or ``"sum"`` of the K per-label losses; under
            the sum each label's a, b, α get the gradient of a one-label loss on its column.
        batch_score_norm: False (default): the loss takes sigmoid scores. True or
            ``"logits"``: Batch Score Normalization as the reference defines it; the loss
            takes the logits z and uses ``z / ||z||_2`` over the batch, per label
            (``takes_logits`` is True, so :func:`loss_input` feeds logits), and the margin
            then acts on scores in [-1, 1]. ``"sigmoid"``: normalise sigmoid scores instead
            (an ablation, not the reference's method). Inference is the sigmoid of the
            logit in every case.
        device: where a, b, α live (LibAUC's keyword; ``.to(device)`` does the same).
        version: LibAUC's keyword, refused (see :class:`_AUCMinMaxLoss`).

    >>> import torch
    >>> loss_fn = AUCMLoss(margin=1.0, imratio=0.25)  # a = b = α = 0 at the start
    >>> scores, labels = torch.tensor([0.9, 0.2, 0.3, 0.1]), torch.tensor([1.0, 0, 0, 0])
    >>> round(loss_fn(scores, labels).item(), 4)  # ((1-p)·0.9² + p·(0.2² + 0.3² + 0.1²)) / 4
    0.1606
    """


class AUCSLoss(_AUCMinMaxLoss):
    """AUC square loss, paper eq. (4): the min-max form with m = 1 and α unconstrained.

    ``batch_score_norm``, ``label_reduction`` and ``device`` as for :class:`AUCMLoss`.
    """

    alpha_nonnegative = False

    def __init__(
        self,
        imratio: float | list[float] | None = None,
        num_labels: int = 1,
        batch_score_norm: bool | str = False,
        *,
        label_reduction: str = "mean",
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(
            margin=1.0,
            imratio=imratio,
            num_labels=num_labels,
            batch_score_norm=batch_score_norm,
            label_reduction=label_reduction,
            device=device,
        )


class FocalLoss(nn.Module):
    """α-balanced focal loss on logits: mean of ``-α_t (1 - p_t)^γ log p_t``.

    ``p_t`` is the predicted probability of the true class, ``α_t = α`` for positives and
    ``1 - α`` for negatives. γ = 0 and α = 0.5 give half the BCE.
    """

    takes_logits = True
    min_max: ClassVar[bool] = False

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
    min_max: ClassVar[bool] = False

    def __init__(self, pos_weight: float | None = None) -> None:
        super().__init__()
        self.pos_weight = pos_weight

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pw = (
            None if self.pos_weight is None else torch.tensor(self.pos_weight, device=logits.device)
        )
        return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), pos_weight=pw)


class WeightedBCELoss(BCELoss):
    """Class-weighted cross-entropy: positives weighted by (1-p)/p, negatives by 1, so each
    class carries the same total weight. Inverse frequency (1/p, 1/(1-p)) is this times
    1/(1-p), a constant that SGD would read as a larger lr; this keeps the negatives' scale.

    >>> round(WeightedBCELoss(imratio=0.2).pos_weight, 6)
    4.0
    """

    def __init__(self, imratio: float | None = None) -> None:
        if imratio is None or not 0 < imratio < 1:
            raise ValueError(f"ce_weighted needs imratio in (0, 1), got {imratio}")
        super().__init__(pos_weight=(1 - imratio) / imratio)


class SoftmaxCELoss(nn.Module):
    """Cross-entropy of a softmax over K class logits; targets are class indices (as the
    loader's float labels). The multi-class stage-1 loss of the auxiliary diagnosis targets."""

    takes_logits = True
    min_max: ClassVar[bool] = False

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets.long())


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: its class and which :func:`create_loss` settings apply to it,
    as setting -> the class's keyword argument."""

    cls: type[nn.Module]
    settings: Mapping[str, str]

    @property
    def min_max(self) -> bool:
        """True for an AUC min-max loss: it holds a, b and the dual variable α."""
        return bool(getattr(self.cls, "min_max", False))


_AUC_SETTINGS = {"imratio": "imratio", "batch_score_norm": "batch_score_norm"}
LOSSES: dict[str, LossSpec] = {
    "auc_m": LossSpec(AUCMLoss, {"margin": "margin", **_AUC_SETTINGS}),
    "auc_s": LossSpec(AUCSLoss, _AUC_SETTINGS),
    "focal": LossSpec(FocalLoss, {"focal_alpha": "alpha", "focal_gamma": "gamma"}),
    "ce": LossSpec(BCELoss, {}),
    "bce": LossSpec(BCELoss, {}),
    "ce_weighted": LossSpec(WeightedBCELoss, {"imratio": "imratio"}),
}


def build_loss(name: str, **kwargs) -> nn.Module:
    """Create a loss by name: ``auc_m``, ``auc_s``, ``focal``, ``ce`` (= ``bce``)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name].cls(**kwargs)


def create_loss(
    name: str,
    *,
    imratio: float | None = None,
    margin: float = 1.0,
    batch_score_norm: bool | str = False,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
) -> nn.Module:
    """A loss from a config's settings; each loss takes the settings that apply to it
    (its :class:`LossSpec`'s ``settings``), the others are ignored.

    The one place where a config (the pipeline's ``loss`` section, the toy's, the study's)
    becomes a loss object.
    """
    given = dict(
        imratio=imratio,
        margin=margin,
        batch_score_norm=batch_score_norm,
        focal_alpha=focal_alpha,
        focal_gamma=focal_gamma,
    )
    spec = LOSSES.get(name)
    settings = spec.settings if spec is not None else {}
    return build_loss(name, **{arg: given[key] for key, arg in settings.items()})


def auc_variables(loss_fn: nn.Module) -> dict[str, float]:
    """a, b and α of an AUC min-max loss as numbers (of its first label, melanoma's in a
    multi-label loss); {} for any other loss."""
    if not getattr(loss_fn, "min_max", False):
        return {}
    net: Any = loss_fn
    return {"a": net.a[0].item(), "b": net.b[0].item(), "alpha": net.alpha[0].item()}


def loss_input(loss_fn: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """What ``loss_fn`` expects from the network's logits: the logits or their sigmoid."""
    return logits if getattr(loss_fn, "takes_logits", True) else torch.sigmoid(logits)
