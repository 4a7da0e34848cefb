"""Deep AUC Maximization for imbalanced medical image classification.

The library: :mod:`deepauc.losses` (AUC-M, AUC-S, focal, BCE), :mod:`deepauc.optim` (PESG)
and :mod:`deepauc.metrics` (ROC AUC). The melanoma pipeline lives in :mod:`deepauc.data`
and :mod:`deepauc.pipeline`, the paper's studies in :mod:`deepauc.research`.
"""

from deepauc.losses import AUCMLoss, AUCSLoss, BCELoss, FocalLoss
from deepauc.metrics import roc_auc
from deepauc.optim import PESG

__version__ = "0.1.0"

__all__ = ["PESG", "AUCMLoss", "AUCSLoss", "BCELoss", "FocalLoss", "__version__", "roc_auc"]
