"""The auxiliary diagnosis targets in train and predict: the head's size, each row's label,
the multi-class loss, and the melanoma score (softmax[mel], or the melanoma column's sigmoid)
that validation, OOF and test predictions use whatever the head."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from torch import nn

from deepauc.data.diagnosis import MELANOMA, class_ratios, diagnosis_classes, one_vs_rest, unmapped
from deepauc.losses import SoftmaxCELoss, build_loss
from deepauc.pipeline.experiment import ExperimentConfig

log = logging.getLogger("deepauc.pipeline.train")

AUX_COLUMN = "aux_class"  # the class index train adds to the folds table


def head_kind(cfg: ExperimentConfig) -> str:
    """``binary`` (one logit), ``softmax`` (CE over the classes) or ``multilabel`` (one
    logit per class, one-vs-rest)."""
    if not cfg.model.aux_classes:
        return "binary"
    if cfg.loss.name == "ce":
        return "softmax"
    return "multilabel" if cfg.loss.aux_mode == "multilabel" else "binary"


def head_outputs(cfg: ExperimentConfig) -> int:
    """The number of logits of the run's head."""
    return 1 if head_kind(cfg) == "binary" else cfg.model.aux_classes


class MelanomaLogit(nn.Module):
    """A network with a K-logit head seen as one logit whose sigmoid is the melanoma score.

    ``softmax``: ``z_mel - logsumexp(z_others)``, whose sigmoid is ``softmax(z)[mel]``
    exactly; ``multilabel``: the melanoma column's logit. The scoring loops (validation,
    TTA) then average sigmoid scores as they do for the binary head.
    """

    def __init__(self, net: nn.Module, kind: str) -> None:
        super().__init__()
        if kind not in ("softmax", "multilabel"):
            raise ValueError(f"no melanoma logit for a {kind} head")
        self.net, self.kind = net, kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x).float()
        mel = z[:, MELANOMA : MELANOMA + 1]
        if self.kind == "multilabel":
            return mel
        others = torch.cat([z[:, :MELANOMA], z[:, MELANOMA + 1 :]], dim=1)
        return mel - torch.logsumexp(others, dim=1, keepdim=True)


def melanoma_model(model: nn.Module, cfg: ExperimentConfig) -> nn.Module:
    """``model`` as a one-logit melanoma scorer (itself for a binary head)."""
    kind = head_kind(cfg)
    return model if kind == "binary" else MelanomaLogit(model, kind)


def add_aux_classes(cfg: ExperimentConfig, table: pd.DataFrame) -> pd.DataFrame:
    """The folds table with each row's class index in ``aux_class`` when the run uses the
    diagnosis classes (checked on every row, so a contradiction anywhere stops the run)."""
    if not cfg.model.aux_classes:
        return table
    classes = diagnosis_classes(table, cfg.model.aux_classes, cfg.data.train_csv)
    strange = unmapped(table)
    if strange:
        log.warning(
            "%s: diagnoses outside the class map count as unknown (melanoma when target 1): %s",
            *(cfg.data.train_csv, strange[:10]),
        )
    return table.assign(**{AUX_COLUMN: classes})


def training_labels(cfg: ExperimentConfig, train_df: pd.DataFrame) -> np.ndarray | None:
    """What the loader yields as the label of each training row, when not the 0/1 target:
    the class index (softmax CE) or the one-vs-rest rows (multi-label AUC loss)."""
    kind = head_kind(cfg)
    if kind == "softmax":
        return train_df[AUX_COLUMN].to_numpy(np.float32)
    if kind == "multilabel":
        return one_vs_rest(train_df[AUX_COLUMN].to_numpy(), cfg.model.aux_classes)
    return None


def loss_ratio(
    cfg: ExperimentConfig, train_df: pd.DataFrame, ratio: float
) -> float | list[float] | None:
    """p of the AUC loss: ``ratio`` (the melanoma share) for one label; for one label per
    class the training rows' class shares, or None (the loss's running estimate) when
    ``train.pos_fraction`` sets the melanoma share of the batches and so moves the others."""
    if head_kind(cfg) != "multilabel":
        return ratio
    if cfg.train.pos_fraction is not None:
        return None
    return class_ratios(train_df[AUX_COLUMN].to_numpy(), cfg.model.aux_classes)


def aux_loss(cfg: ExperimentConfig, ratio: float | list[float] | None) -> nn.Module | None:
    """The multi-class loss of the run, or None where the binary loss applies."""
    kind, c = head_kind(cfg), cfg.loss
    if kind == "softmax":
        return SoftmaxCELoss()
    if kind == "binary":
        return None
    # summed over the classes: each class's a, b, α move as in a one-label run (docs/pipeline.md)
    settings: dict = dict(
        imratio=ratio,
        num_labels=cfg.model.aux_classes,
        batch_score_norm=c.batch_score_norm,
        label_reduction="sum",
    )
    if c.name == "auc_m":
        settings["margin"] = c.margin
    return build_loss(c.name, **settings)
