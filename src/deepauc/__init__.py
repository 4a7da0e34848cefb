"""Deep AUC Maximization for imbalanced image classification: the library (``losses``,
``optim``, ``metrics``), the melanoma pipeline (``data``, ``pipeline``) and the paper's studies
(``research``)."""

from deepauc.losses import AUCMLoss, AUCSLoss, BCELoss, FocalLoss
from deepauc.metrics import roc_auc
from deepauc.optim import PESG

__version__ = "0.1.0"

__all__ = ["PESG", "AUCMLoss", "AUCSLoss", "BCELoss", "FocalLoss", "__version__", "roc_auc"]
