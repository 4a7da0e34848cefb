"""``deepauc study``: the paper's benchmark study (§4.1, Table 1) of CE, focal, AUC-S and AUC-M
on imbalanced real data, with ablations; :mod:`deepauc.research.study.runner` describes it."""

from deepauc.research.study.runner import add_arguments, run

__all__ = ["add_arguments", "run"]
