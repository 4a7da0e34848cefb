"""The research networks' one-logit heads: timm's classifier protocol over them, and a fresh
head drawn as torch draws ``nn.Linear``, as the pipeline's factory does, or along a trained
head's direction."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from deepauc.models import reset_head

__all__ = [
    "HEAD_INITS",
    "HeadInit",
    "TimmClassifier",
    "ce_direction_head",
    "first_head",
    "fresh_head",
]

HeadInit = Literal["torch_default", "pipeline", "ce_direction"]
HEAD_INITS: tuple[str, ...] = ("torch_default", "pipeline", "ce_direction")
PIPELINE_STD = 0.01  # deepauc.models.init_head's N(0, std²) weights


class TimmClassifier:
    """timm's ``get_classifier`` / ``reset_classifier`` over a module's linear ``head``, so
    that :func:`deepauc.models.reset_head` resets it as it resets a timm backbone's."""

    head: nn.Linear

    def get_classifier(self) -> nn.Linear:
        return self.head

    def reset_classifier(self, num_classes: int = 1) -> None:
        old = self.head
        w = old.weight
        self.head = nn.Linear(old.in_features, num_classes, device=w.device, dtype=w.dtype)


def _classifier(model: nn.Module) -> nn.Linear:
    head = getattr(model, "get_classifier", None)
    if head is None:
        raise TypeError(f"{type(model).__name__} has no get_classifier(): it cannot reset its head")
    return head()


@torch.no_grad()
def ce_direction_head(model: nn.Module, std: float = PIPELINE_STD) -> nn.Module:
    """Keep the trained head's direction, scaled to the pipeline draw's norm, bias zero.

    The pipeline draws d weights from N(0, std²): E‖w‖² = d·std², so the norm is scaled to
    std·√d. With the bias zeroed the scores start as close to ½ as a fresh head's do, and the
    head ranks the rows exactly as the CE head does (a positive scale and a shift keep every
    ranking): against a fresh head only the direction differs."""
    head = _classifier(model)
    norm = float(head.weight.norm())
    if not math.isfinite(norm) or norm == 0.0:
        raise ValueError(f"the trained head's weights have norm {norm}: no direction to keep")
    head.weight.mul_(std * math.sqrt(head.weight.numel()) / norm)
    if head.bias is not None:
        head.bias.zero_()
    return model


def fresh_head(model: nn.Module, init: str) -> nn.Module:
    """The head for a second training stage: ``torch_default`` redraws it in place as
    ``nn.Linear.reset_parameters`` does (uniform weights and bias), ``pipeline`` replaces it
    through the pipeline's :func:`deepauc.models.reset_head` (N(0, 0.01²) weights, zero
    bias), ``ce_direction`` keeps the trained head's direction (:func:`ce_direction_head`)."""
    if init == "torch_default":
        _classifier(model).reset_parameters()
        return model
    if init == "pipeline":
        return reset_head(model)
    if init == "ce_direction":
        return ce_direction_head(model)
    raise ValueError(f"head_init must be one of {list(HEAD_INITS)}, got {init!r}")


def first_head(model: nn.Module, init: str) -> nn.Module:
    """The head of a network as built: torch's draw kept for ``torch_default``, the
    pipeline's otherwise (there is no trained head to take a direction from yet)."""
    if init not in HEAD_INITS:
        raise ValueError(f"head_init must be one of {list(HEAD_INITS)}, got {init!r}")
    return model if init == "torch_default" else reset_head(model)
