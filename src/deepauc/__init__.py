"""Deep AUC Maximization for imbalanced medical image classification.

The DAM core lives in :mod:`deepauc.losses` (AUC-M, AUC-S, focal, BCE),
:mod:`deepauc.optim` (PESG) and :mod:`deepauc.metrics` (ROC AUC). The melanoma
pipeline stages are modules under :mod:`deepauc.data` and beside it, each one a
``deepauc`` subcommand (see :mod:`deepauc.cli`).
"""

__version__ = "0.1.0"
