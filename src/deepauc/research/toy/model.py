"""The toy network and its full-batch PESG training."""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from torch import nn

from deepauc.losses import create_loss
from deepauc.optim import create_optimizer, end_stage
from deepauc.research.toy.data import LOSS_NAMES, ToyConfig


class ToyNet(nn.Module):
    """2 → hidden → ELU → 1, the paper's two-layer ELU network; ``forward`` gives the logit.
    The output layer is its classifier under timm's protocol, so the pipeline's factory
    (:func:`deepauc.models.reset_head`) resets it as it resets a backbone's."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.ELU(), nn.Linear(hidden, 1))

    def get_classifier(self) -> nn.Linear:
        return cast(nn.Linear, self.net[2])

    def reset_classifier(self, num_classes: int = 1) -> None:
        old = self.get_classifier()
        self.net[2] = nn.Linear(old.in_features, num_classes, dtype=old.weight.dtype)

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
    bsn = "logits" if cfg.score == "bsn" else False
    return create_loss(losses[name], imratio=p, margin=cfg.margin, batch_score_norm=bsn)


def train_model(x: np.ndarray, y: np.ndarray, loss_name: str, cfg: ToyConfig, init: dict) -> ToyNet:
    """Full-batch PESG from the weights ``init`` for ``cfg.epochs`` steps.

    The loss's p is the training set's positive ratio; a, b, α start at 0. The lr is
    divided by 10 at 50% and 75% of the steps, each a new PESG stage. The loss gets
    σ(z) for ``cfg.score == "sigmoid"``, otherwise the logits (``bsn`` normalises them).
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
            end_stage(opt, 10.0)
        opt.zero_grad(set_to_none=True)
        logits = model(xt)
        h = torch.sigmoid(logits) if cfg.score == "sigmoid" else logits
        loss_fn(h, yt).backward()
        opt.step()
    model.eval()
    return model


def model_state(model: nn.Module) -> dict:
    """A detached copy of the model's weights."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
