"""The compositional objective of Yuan et al. (ICLR 2022): AUC-M evaluated at the weights one
cross-entropy gradient step away, L_AUC(w − θ ∇_w L_CE(w)), differentiated through that step."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["compositional_loss"]


def compositional_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    auc_loss: nn.Module,
    inner_lr: float,
    scores: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """L_AUC(w') on the batch, w' = w − θ ∇_w L_CE(w) on the same batch (θ = ``inner_lr``).

    The inner gradient keeps its graph, so backward gives the whole chain
    (I − θ ∇²L_CE(w)) ∇L_AUC(w') for the network and ∇L_AUC for a, b, α. ``scores`` maps the
    logits at w' to what ``auc_loss`` takes. Batch-norm statistics are updated by both
    forward passes."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    ce = F.binary_cross_entropy_with_logits(model(x), y.to(x.dtype))
    grads = torch.autograd.grad(ce, [p for _, p in named], create_graph=True)
    moved = {n: p - inner_lr * g for (n, p), g in zip(named, grads)}
    logits = torch.func.functional_call(model, moved, (x,))
    return auc_loss(scores(logits), y)
