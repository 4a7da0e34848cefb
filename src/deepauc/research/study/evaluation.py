"""A study run's scores: logits in eval mode, training / validation / test AUC, test partial
AUCs, and the test AUC at the epoch of best validation AUC when every epoch is evaluated."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from deepauc.metrics import partial_auc, pauc_above_tpr, roc_auc

__all__ = ["MAX_FPR", "MIN_TPR", "EpochTracker", "predict_logits", "scores_row"]

MAX_FPR = 0.1  # test_pauc_fpr: McClish-standardised ROC area for FPR ≤ 0.1
MIN_TPR = 0.8  # test_pauc_tpr: ROC area above TPR 0.8, as the ISIC 2024 challenge scores


def predict_logits(model: nn.Module, x: torch.Tensor, chunk: int = 2048) -> np.ndarray:
    """The model's logits for ``x`` in eval mode (train mode restored), as float64."""
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(x[i : i + chunk]) for i in range(0, len(x), chunk)])
    model.train()
    return out.numpy().astype(np.float64)


def scores_row(model: nn.Module, data: dict[str, torch.Tensor]) -> dict[str, float]:
    """Training, validation and test AUC, test partial AUCs and the validation positives."""
    y_val, y_test = data["y_val"].numpy(), data["y_test"].numpy()
    test = predict_logits(model, data["x_test"])
    train = predict_logits(model, data["x_train"])
    return {
        "train_auc": roc_auc(data["y_train"].numpy(), train, undefined="nan"),
        "val_auc": roc_auc(y_val, predict_logits(model, data["x_val"]), undefined="nan"),
        "test_auc": roc_auc(y_test, test, undefined="nan"),
        "test_pauc_fpr": partial_auc(y_test, test, max_fpr=MAX_FPR, undefined="nan"),
        "test_pauc_tpr": pauc_above_tpr(y_test, test, min_tpr=MIN_TPR, undefined="nan"),
        "pos_val": int(y_val.sum()),
    }


@dataclass
class EpochTracker:
    """Counts the epochs of a run over all its stages and keeps the test AUC of the epoch
    with the best validation AUC (the first of equals; NaN validation AUCs never count)."""

    data: dict[str, torch.Tensor]
    epoch: int = 0
    best_epoch: int = 0
    best_val: float = -math.inf
    best_test: float = math.nan

    def after_epoch(self, model: nn.Module) -> None:
        self.epoch += 1
        val = roc_auc(
            self.data["y_val"].numpy(), predict_logits(model, self.data["x_val"]), undefined="nan"
        )
        if math.isfinite(val) and val > self.best_val:
            test = predict_logits(model, self.data["x_test"])
            self.best_val, self.best_epoch = val, self.epoch
            self.best_test = roc_auc(self.data["y_test"].numpy(), test, undefined="nan")

    def row(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "best_val_auc": self.best_val if self.best_epoch else math.nan,
            "best_test_auc": self.best_test,
        }
