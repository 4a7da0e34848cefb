"""Loss and PESG variants that the ablations switch on, and LibAUC 2.0.1 when it is installed."""

from __future__ import annotations

from typing import Any

import torch

from deepauc.losses import AUCMLoss
from deepauc.optim import PESG

__all__ = [
    "AUCMLossBatchP",
    "AUCMLossNoProjection",
    "PESGEMAMomentum",
    "import_libauc",
]


class AUCMLossNoProjection(AUCMLoss):
    """AUC-M whose α PESG leaves unconstrained (the α ≥ 0 ablation)."""

    alpha_nonnegative = False


class AUCMLossBatchP(AUCMLoss):
    """AUC-M with p re-estimated from every mini-batch (LibAUC's default behaviour),
    clipped to [1/(2N), 1 - 1/(2N)] so that a batch without positives does not zero
    p(1-p) (which the normalized dual step divides by)."""

    def __init__(self, margin: float, batch_score_norm: bool | str) -> None:
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


def import_libauc() -> tuple[tuple[Any, Any] | None, str]:
    """LibAUC's ``(AUCMLoss, PESG)`` and ``""``, or None and the reason it is not installed."""
    try:
        from libauc.losses import AUCMLoss as LibAUCMLoss
        from libauc.optimizers import PESG as LibPESG
    except ImportError as err:  # pragma: no cover - depends on the environment
        return (
            None,
            f"LibAUC is not installed ({err}); `pip install libauc==2.0.1` (requirements-study.txt)",
        )
    return (LibAUCMLoss, LibPESG), ""
