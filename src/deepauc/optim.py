"""PESG, the paper's Algorithm 1 (proximal epoch stochastic gradient descent-ascent),
:func:`create_optimizer`, the one place optimizers are created by name, :func:`end_stage`,
the one way a PESG stage ends, and :func:`average_grads`, gradients averaged over DDP ranks."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, cast, overload

import torch
from torch import nn

__all__ = [
    "OPTIMIZERS",
    "PESG",
    "OptimizerSpec",
    "average_grads",
    "create_optimizer",
    "end_stage",
    "is_stagewise",
    "mean_over_ranks",
    "owns_loss",
]

# torch's fused SGD kernel (behind SGD(fused=True)); private, so used only when present
_FUSED_SGD = getattr(torch, "_fused_sgd_", None)


def _group_by_device_dtype(
    tensors_lists: list[list[torch.Tensor]],
) -> list[list[list[torch.Tensor]]]:
    buckets: dict[tuple, list[list[torch.Tensor]]] = defaultdict(
        lambda: [[] for _ in tensors_lists]
    )
    for i in range(len(tensors_lists[0])):
        key = (tensors_lists[0][i].device, tensors_lists[0][i].dtype)
        for j, lst in enumerate(tensors_lists):
            buckets[key][j].append(lst[i])
    return list(buckets.values())


def _world_size() -> int:
    """Ranks in the torch.distributed group; 1 without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def mean_over_ranks(tensors: list[torch.Tensor]) -> None:
    """Replace each tensor, in place, by its mean over the DDP ranks (one all-reduce).

    Every rank must pass tensors of the same shapes and dtype, in the same order. Nothing
    happens without a process group of more than one rank.
    """
    world = _world_size()
    if world == 1 or not tensors:
        return
    flat = torch.cat([t.flatten() for t in tensors])
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def average_grads(params: Iterable[torch.Tensor], missing: str = "skip") -> None:
    """Average the ``.grad`` of ``params`` over DDP ranks, for tensors outside a DDP module.

    ``missing="skip"`` leaves a parameter without a gradient out (every rank must then lack
    the same ones); ``missing="zero"`` gives it a zero gradient first, so a rank whose batch
    did not reach it still takes part. Nothing happens with a single process.
    """
    if missing not in ("skip", "zero"):
        raise ValueError(f"missing must be 'skip' or 'zero', got {missing!r}")
    params = list(params)
    if _world_size() == 1:
        return
    if missing == "zero":
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
    mean_over_ranks([p.grad for p in params if p.grad is not None])


# LibAUC's PESG keywords that mean something else here, with what to do instead
_LIBAUC_REFUSED = {
    "clip_value": "LibAUC clips every gradient element at clip_value; this PESG does not clip. "
    "Call torch.nn.utils.clip_grad_value_(params, clip_value) before step() to clip",
    "betas": "it belongs to LibAUC's mode='adam', which this PESG does not implement",
    "eps": "it belongs to LibAUC's mode='adam', which this PESG does not implement",
    "amsgrad": "it belongs to LibAUC's mode='adam', which this PESG does not implement",
    "gamma": "LibAUC 1.1's gamma is 1/epoch_decay: pass epoch_decay=1/gamma",
    "a": "pass the loss as loss_fn=; its a, b and alpha are taken from it",
    "b": "pass the loss as loss_fn=; its a, b and alpha are taken from it",
    "alpha": "pass the loss as loss_fn=; its a, b and alpha are taken from it",
}


def _check_libauc_keywords(
    loss_fn: nn.Module | None, mode: str, margin: float | None, others: dict[str, Any]
) -> None:
    """Refuse LibAUC keywords whose meaning differs here, naming what to do instead."""
    for name in others:
        if name not in _LIBAUC_REFUSED:
            raise TypeError(f"PESG() got an unexpected keyword argument {name!r}")
        raise ValueError(f"PESG({name}=...) is not supported: {_LIBAUC_REFUSED[name]}")
    if str(mode).lower() != "sgd":
        raise ValueError(f"PESG supports mode='sgd' only (Algorithm 1), got mode={mode!r}")
    loss_margin = getattr(loss_fn, "margin", None)
    if margin is not None and margin != loss_margin:
        raise ValueError(
            f"PESG(margin={margin}) differs from the loss's margin {loss_margin}: the margin "
            "belongs to the loss, e.g. AUCMLoss(margin=...); PESG reads it from there"
        )


class PESG(torch.optim.Optimizer):
    """Proximal epoch stochastic gradient descent-ascent (paper Algorithm 1).

    With ``v = (w, a, b)`` the primal variables (network weights and the AUC loss's a, b)
    and α the dual variable, one step is::

        v ← v - η ( ∇_v F + γ (v - v_ref) ) - η λ v
        α ← max(0, α + η ∇_α F)                 # AUC-S: no max(0, ·)

    γ is ``epoch_decay``, λ ``weight_decay``. ``v_ref`` starts at the starting weights;
    :meth:`PESG.next_stage` divides η by a factor and sets ``v_ref`` to the average of the
    iterates of the stage just finished (the weights after each of its steps).

    The dual step. ∇_α F = 2 p(1-p)(m + E[h|y=0] - E[h|y=1] - α) in expectation, so with few
    positives Algorithm 1 moves α very slowly. ``dual="normalized"`` (the default) divides
    the dual step by p(1-p)::

        α ← max(0, α + η ∇_α F / (p(1-p)))      # ≈ α + η·2(m + b̂ - â - α)

    which keeps the true gradient direction (unlike a closed form in a and b) but makes its
    size independent of the class ratio. It contracts α by (1 - 2η) per step, so it needs
    η < 1 (it oscillates at η = 1 and diverges beyond); the paper's form has no such bound
    for any realistic η because its step carries the factor p(1-p) ≤ 1/4.
    ``dual="paper"`` is Algorithm 1 as written. ``dual="closed_form"`` is the expected
    dual gradient of eq. 8 with a and b standing in for the class means of the scores, on
    the normalized step's 1/(p(1-p)) scale::

        α ← max(0, α + 2η(m + b - a - α))       # AUC-S (m = 1): no max(0, ·)

    It reads a and b before the primal step moves them (α, a, b are all at step t, as in
    Algorithm 1) and needs no batch statistics of h; ``normalized`` equals it in expectation
    when a and b are the batch's class means. Why the default: docs/method.md.

    Momentum (an extension, off by default) is heavy-ball on the primal direction
    ``d = ∇_v F + γ (v - v_ref)``: ``buf ← μ buf + d``, ``v ← v - η buf - η λ v``.

    Under torch DDP, the gradients of the loss's a, b, α are averaged across ranks before
    the step (the model's own gradients are already averaged by DDP), so every rank keeps
    identical a, b, α.

    Args:
        params: the network's parameters (iterable of tensors or param-group dicts, or
            the module itself).
        loss_fn: an :class:`~deepauc.losses.AUCMLoss` / ``AUCSLoss``; its ``a`` and ``b``
            join the primal variables and its ``alpha`` is the dual variable, projected on
            α ≥ 0 when ``loss_fn.alpha_nonnegative``. A loss without ``alpha`` (CE, focal)
            or None leaves a proximal SGD on ``params``.
        lr: η.
        epoch_decay: γ, the pull toward ``v_ref`` (paper: 1/100 … 1/1000).
        weight_decay: λ.
        momentum: heavy-ball momentum on the primal direction (0 = Algorithm 1).
        dual: ``"normalized"`` (default), ``"paper"`` or ``"closed_form"``; see above.
        mode, margin, verbose, device: LibAUC's keywords, see below.

    Batch Score Normalization lives in the loss: with ``batch_score_norm=True`` the loss
    takes the logits z and F sees ``h = z / ||z||_2`` over the batch, per label, so the
    network's gradients pass through that normalisation, ``a`` and ``b`` track the class
    means of scores in [-1, 1], and α ≥ 0 is the multiplier of the margin constraint
    ``a - b ≥ m`` on that scale (its projection acts when a batch's class-mean gap passes
    the margin). PESG itself is the same with or without it.

    LibAUC (2.0.1) users switch by the import line. Its keywords ``loss_fn``, ``lr``,
    ``epoch_decay`` and ``weight_decay`` mean the same here; :meth:`update_regularizer`
    and :meth:`update_lr` are its stage methods and ``lr`` its learning-rate attribute.
    ``mode="sgd"`` is accepted (the only mode); ``margin`` is accepted when it equals the
    loss's (LibAUC reads the margin from the loss too). ``verbose`` is ignored (nothing
    is printed) and so is ``device`` (the state lives beside each parameter). Refused,
    with what to do instead: ``mode="adam"`` and its ``betas``, ``eps``, ``amsgrad``;
    ``clip_value`` (LibAUC clips gradients, this PESG does not); LibAUC 1.1's ``gamma``
    (= 1/epoch_decay) and ``a``/``b``/``alpha``. Differences a switch brings: defaults
    (λ = 1e-4 here, 1e-5 there; pass them explicitly); v_ref starts at the starting
    weights (LibAUC: small noise); the dual step follows ∇_α F (LibAUC: a closed form in
    a and b, which ``dual="normalized"`` equals in expectation once a and b reach the
    class means); and ``momentum`` is heavy-ball here while LibAUC's μ is an average
    weighting the newest direction by μ: LibAUC's (lr η, momentum μ) is about this
    PESG's (lr η·μ, momentum 1 - μ), so its default μ = 0.9 is close to momentum 0.1.

    >>> import torch
    >>> from deepauc.losses import AUCMLoss
    >>> _ = torch.manual_seed(0)
    >>> net, loss_fn = torch.nn.Linear(3, 1), AUCMLoss(imratio=0.25)
    >>> opt = PESG(net.parameters(), loss_fn=loss_fn, lr=0.1, epoch_decay=0.003)
    >>> x, y = torch.randn(8, 3), torch.tensor([1.0, 0, 0, 0, 1, 0, 0, 0])
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     loss_fn(torch.sigmoid(net(x)).squeeze(1), y).backward()
    ...     opt.step()
    >>> loss_fn.alpha.item() >= 0  # the dual variable stays projected on α ≥ 0
    True
    >>> opt.next_stage(decay_factor=10)  # η ÷ 10, v_ref ← the stage's average iterate
    >>> opt.param_groups[0]["lr"]
    0.01
    """

    # What the training loop asks (owns_loss, is_stagewise), as OPTIMIZERS["pesg"] says.
    owns_loss = True
    stagewise = True

    def __init__(
        self,
        params: Iterable | nn.Module,
        loss_fn: nn.Module | None = None,
        lr: float = 0.1,
        epoch_decay: float = 2e-3,
        weight_decay: float = 1e-4,
        momentum: float = 0.0,
        dual: str = "normalized",
        *,
        mode: str = "sgd",
        margin: float | None = None,
        verbose: bool = False,
        device: torch.device | str | None = None,
        **libauc_keywords: Any,
    ) -> None:
        _check_libauc_keywords(loss_fn, mode, margin, libauc_keywords)
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if epoch_decay < 0 or weight_decay < 0 or not 0 <= momentum < 1:
            raise ValueError("epoch_decay and weight_decay must be >= 0 and momentum in [0, 1)")
        if dual not in ("normalized", "paper", "closed_form"):
            raise ValueError(f"dual must be 'normalized', 'paper' or 'closed_form', got {dual!r}")
        defaults = dict(
            lr=lr,
            epoch_decay=epoch_decay,
            weight_decay=weight_decay,
            momentum=momentum,
            role="primal",
        )
        groups = list(params.parameters() if isinstance(params, nn.Module) else params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        # duck-typed: an AUC loss exposes a, b, alpha, dual_scale() and alpha_nonnegative
        self.loss_fn: Any = loss_fn
        has_dual = loss_fn is not None and isinstance(getattr(loss_fn, "alpha", None), torch.Tensor)
        if has_dual:
            seen = {id(p) for g in groups for p in g["params"]}
            auc_loss = cast(Any, loss_fn)
            extra = [t for t in (auc_loss.a, auc_loss.b) if id(t) not in seen]
            if extra:
                groups.append({"params": extra})
            groups.append({"params": [auc_loss.alpha], "role": "dual"})
        self.dual = dual
        super().__init__(groups, defaults)
        for group in self.param_groups:
            group.setdefault("stage_steps", 0)
            if group["role"] == "primal":
                for p in group["params"]:
                    self.state[p]["v_ref"] = p.detach().clone()
                    self.state[p]["stage_sum"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format
                    )

    # -- the step ------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        """One PESG step from the gradients already in ``.grad``; returns the closure's loss.

        The primal gradients are overwritten with the update direction (the next
        ``zero_grad`` discards them as usual); read them before calling ``step``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.loss_fn is not None and _world_size() > 1:  # DDP averages only the network's
            average_grads([self.loss_fn.a, self.loss_fn.b, self.loss_fn.alpha], missing="zero")
        # The dual step uses ∇_α F at (v_t, α_t): read before any primal update.
        for group in self.param_groups:
            if group["role"] == "dual":
                self._dual_step(group)
        for group in self.param_groups:
            if group["role"] == "primal":
                self._primal_step(group)
            group["stage_steps"] += 1
        return loss

    def _primal_step(self, group: dict) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        lr, gamma, lam, mu = (
            group["lr"],
            group["epoch_decay"],
            group["weight_decay"],
            group["momentum"],
        )
        grads = [p.grad for p in params]
        refs = [self.state[p]["v_ref"] for p in params]
        sums = [self.state[p]["stage_sum"] for p in params]
        bufs = []
        if mu > 0:
            for p in params:
                if "momentum_buffer" not in self.state[p]:
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p)
                bufs.append(self.state[p]["momentum_buffer"])
        lists = [params, grads, refs, sums] + ([bufs] if mu > 0 else [])
        for bucket in _group_by_device_dtype(lists):
            ps, gs, rs, ss = bucket[:4]
            # The update direction d = ∇F + γ (v - v_ref) is built in place in .grad: no
            # temporaries, one pass less over memory (bench/optim_step.py measures it).
            if gamma:
                torch._foreach_add_(gs, rs, alpha=-gamma)
            if mu == 0 and _FUSED_SGD is not None:
                # one kernel: v ← v - η (g - γ v_ref + (γ + λ) v), i.e. Algorithm 1 exactly
                _FUSED_SGD(
                    ps,
                    gs,
                    [],
                    weight_decay=gamma + lam,
                    momentum=0.0,
                    lr=lr,
                    dampening=0.0,
                    nesterov=False,
                    maximize=False,
                    is_first_step=False,
                )
            else:
                if gamma:
                    torch._foreach_add_(gs, ps, alpha=gamma)
                d = gs
                if mu > 0:
                    bs = bucket[4]
                    torch._foreach_mul_(bs, mu)
                    torch._foreach_add_(bs, gs)
                    d = bs
                # v ← (1 - ηλ) v - η d
                if lam:
                    torch._foreach_mul_(ps, 1 - lr * lam)
                torch._foreach_add_(ps, d, alpha=-lr)
            torch._foreach_add_(ss, ps)

    def _dual_step(self, group: dict) -> None:
        (alpha,) = group["params"]
        if alpha.grad is None:
            return
        step = alpha.grad
        if self.dual == "closed_form":
            # E[∇_α F] / (p(1-p)) with a, b for the class means: 2(m + b - a - α)
            lf = self.loss_fn
            step = 2 * (lf.margin + lf.b.detach() - lf.a.detach()) - 2 * alpha
            alpha.add_(group["lr"] * step)
        else:
            if self.dual == "normalized":
                step = step / self.loss_fn.dual_scale().to(step.dtype)
            alpha.add_(step, alpha=group["lr"])
        if self.loss_fn.alpha_nonnegative:
            alpha.clamp_(min=0)

    # -- stages --------------------------------------------------------------------------
    @torch.no_grad()
    def next_stage(self, decay_factor: float = 1.0) -> None:
        """End the stage: η ← η / decay_factor, v_ref ← mean of the stage's iterates."""
        if decay_factor <= 0:
            raise ValueError(f"decay_factor must be > 0, got {decay_factor}")
        for group in self.param_groups:
            group["lr"] /= decay_factor
            n = group["stage_steps"]
            if group["role"] == "primal" and n > 0:
                for p in group["params"]:
                    st = self.state[p]
                    st["v_ref"].copy_(st["stage_sum"] / n)
                    st["stage_sum"].zero_()
            group["stage_steps"] = 0

    def update_regularizer(self, decay_factor: float | None = None) -> None:
        """LibAUC's name for :meth:`next_stage`; None keeps η and only moves v_ref."""
        self.next_stage(1.0 if decay_factor is None else decay_factor)

    def update_lr(self, decay_factor: float | None = None) -> None:
        """LibAUC's learning-rate decay: η ← η / decay_factor, v_ref kept; None does nothing."""
        if decay_factor is None:
            return
        if decay_factor <= 0:
            raise ValueError(f"decay_factor must be > 0, got {decay_factor}")
        for group in self.param_groups:
            group["lr"] /= decay_factor

    @property
    def lr(self) -> float:
        """η of the first parameter group (every group shares it unless set apart)."""
        return self.param_groups[0]["lr"]

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Optimizer state (v_ref, stage sums, momentum, step counts, lr) plus the loss's
        a, b, α and p, so that loading it into a fresh PESG resumes identically."""
        sd = super().state_dict()
        if self.loss_fn is not None:
            sd["loss_state"] = {k: v.detach().clone() for k, v in self.loss_fn.state_dict().items()}
        sd["dual"] = self.dual
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        loss_state = state_dict.pop("loss_state", None)
        dual = state_dict.pop("dual", self.dual)
        if dual != self.dual:
            raise ValueError(
                f"checkpoint was saved with dual={dual!r}, this PESG has dual={self.dual!r}"
            )
        super().load_state_dict(state_dict)
        if loss_state is not None and self.loss_fn is not None:
            self.loss_fn.load_state_dict(loss_state)


def end_stage(optimizer: Any, decay_factor: float) -> None:
    """End a PESG stage: η ← η / ``decay_factor``, v_ref ← the stage's average iterate.

    Serves this module's :class:`PESG` (:meth:`PESG.next_stage`) and LibAUC's PESG, whose
    ``update_regularizer(decay_factor=...)`` does the same. An optimizer without stages
    (SGD, Adam, ...) is refused with TypeError: its learning rate is the caller's to decay.
    """
    if decay_factor <= 0:
        raise ValueError(f"decay_factor must be > 0, got {decay_factor}")
    if isinstance(optimizer, PESG):
        optimizer.next_stage(decay_factor)
    elif callable(getattr(optimizer, "update_regularizer", None)):
        optimizer.update_regularizer(decay_factor=decay_factor)
    else:
        raise TypeError(
            f"end_stage: {type(optimizer).__name__} has no PESG stage to end; "
            "decay its learning rate instead"
        )


@dataclass(frozen=True)
class OptimizerSpec:
    """A registered optimizer: how it is built from (params, loss, settings), which
    :func:`create_optimizer` settings apply to it, and what the training loop must ask it."""

    build: Callable[..., torch.optim.Optimizer]
    settings: tuple[str, ...]
    # It takes the loss object: steps its dual variable α and all-reduces its gradients
    # itself (else the loss's parameters are appended to the network's).
    owns_loss: bool = False
    # It has next_stage(decay_factor): a stage end is more than an lr decay.
    stagewise: bool = False


def _sgd(params: list, *, lr: float, weight_decay: float, momentum: float) -> torch.optim.SGD:
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=True
    )


def _adam(params: list, *, lr: float, weight_decay: float) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


def _adamw(params: list, *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "pesg": OptimizerSpec(
        PESG,
        ("lr", "epoch_decay", "weight_decay", "momentum", "dual"),
        owns_loss=True,
        stagewise=True,
    ),
    "sgd": OptimizerSpec(_sgd, ("lr", "weight_decay", "momentum")),
    "adam": OptimizerSpec(_adam, ("lr", "weight_decay")),
    "adamw": OptimizerSpec(_adamw, ("lr", "weight_decay")),
}


def owns_loss(optimizer: torch.optim.Optimizer) -> bool:
    """True if ``optimizer`` steps the loss's α and all-reduces the loss's gradients itself."""
    return bool(getattr(optimizer, "owns_loss", False))


def is_stagewise(optimizer: torch.optim.Optimizer) -> bool:
    """True if ``optimizer`` ends a stage by ``next_stage`` (PESG), not by an lr decay alone."""
    return bool(getattr(optimizer, "stagewise", False))


@overload
def create_optimizer(
    name: Literal["pesg"],
    params: Iterable,
    loss_fn: nn.Module | None = None,
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    epoch_decay: float = 0.0,
    dual: str = "normalized",
) -> PESG: ...


@overload
def create_optimizer(
    name: str,
    params: Iterable,
    loss_fn: nn.Module | None = None,
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    epoch_decay: float = 0.0,
    dual: str = "normalized",
) -> torch.optim.Optimizer: ...


def create_optimizer(
    name: str,
    params: Iterable,
    loss_fn: nn.Module | None = None,
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    epoch_decay: float = 0.0,
    dual: str = "normalized",
) -> torch.optim.Optimizer:
    """An optimizer by name over ``params`` and the loss's own parameters (a, b for AUC losses).

    An optimizer that owns the loss (``pesg``: it also steps α) gets the loss object; the
    others get the loss's parameters appended to ``params``. Each takes the settings that
    apply to it (its :class:`OptimizerSpec`'s ``settings``: ``epoch_decay`` and ``dual``
    apply to PESG only).
    """
    spec = OPTIMIZERS.get(name)
    if spec is None:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)}")
    given = dict(
        lr=lr, weight_decay=weight_decay, momentum=momentum, epoch_decay=epoch_decay, dual=dual
    )
    settings = {key: given[key] for key in spec.settings}
    if spec.owns_loss:
        return spec.build(params, loss_fn, **settings)
    params = list(params) + (list(loss_fn.parameters()) if loss_fn is not None else [])
    return spec.build(params, **settings)
