"""The study's runs: one ``Job`` per training run, the tuning grids, the final and ablation runs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from deepauc.research.study.config import DatasetSpec, StudyConfig
from deepauc.research.study.variants import import_libauc

__all__ = [
    "ATTRIBUTION_TWEAKS",
    "Job",
    "ablation_jobs",
    "ablation_ratio",
    "final_jobs",
    "job_params",
    "loss_grid",
    "tuning_jobs",
    "unique",
]

# ours with one LibAUC 2.0.1 design choice switched on at a time (LibAUC side by side)
ATTRIBUTION_TWEAKS = (
    ("vref_noise", "+ v_ref ~ N(0, 0.01)"),
    ("batch_p", "+ per-batch p"),
    ("clip", "+ grad clip ±1"),
    ("libauc_alpha", "+ LibAUC α step"),
    ("ema_momentum", "+ LibAUC EMA momentum"),
)


@dataclass(frozen=True)
class Job:
    """One training run: a data set at a ratio, a seed, a method and its parameters."""

    dataset: str
    imratio: float  # requested ratio (the achieved one is in the result)
    seed: int
    method: str  # ce | focal | auc_s | auc_m | auc_m_noproj | two_stage | libauc
    params: tuple = ()  # sorted (name, value) pairs
    variant: str = "clean"  # clean | easy | noisy
    tweak: str = ""  # "" or a key of deepauc.research.study.training.TWEAKS

    def param(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)


def job_params(**kw: float) -> tuple:
    """Hyper-parameters as the sorted ``(name, value)`` pairs a :class:`Job` carries."""
    return tuple(sorted(kw.items()))


def loss_grid(cfg: StudyConfig, spec: DatasetSpec, loss: str) -> list[tuple]:
    """The candidate hyper-parameters of ``loss`` on ``spec`` (one empty tuple for CE)."""
    g = spec.grids or cfg.grids
    if loss == "ce":
        return [()]
    if loss == "focal":
        return [job_params(alpha=a, gamma=c) for a in g.focal_alpha for c in g.focal_gamma]
    if loss == "auc_s":
        return [job_params(epoch_decay=e) for e in g.epoch_decay]
    return [job_params(epoch_decay=e, margin=m) for e in g.epoch_decay for m in g.margin]


def tuning_jobs(
    cfg: StudyConfig, available: list[DatasetSpec]
) -> dict[tuple, dict[tuple, list[Job]]]:
    """Per (data set, ratio, loss) with more than one candidate: each candidate's runs."""
    jobs: dict[tuple, dict[tuple, list[Job]]] = {}
    for spec in available:
        tseeds = spec.tune_seeds or cfg.seeds[:1]
        for r in spec.imratios:
            for loss in cfg.losses:
                grid = loss_grid(cfg, spec, loss)
                if len(grid) > 1:
                    jobs[spec.name, r, loss] = {
                        prm: [Job(spec.name, r, s, loss, prm) for s in tseeds] for prm in grid
                    }
    return jobs


def final_jobs(
    cfg: StudyConfig, available: list[DatasetSpec], chosen: dict[tuple, tuple]
) -> dict[tuple, Job]:
    """The Table-1 runs keyed (data set, ratio, loss, seed), with the chosen hyper-parameters."""
    return {
        (spec.name, r, loss, s): Job(spec.name, r, s, loss, chosen[spec.name, r, loss])
        for spec in available
        for r in spec.imratios
        for loss in cfg.losses
        for s in cfg.seeds
    }


def unique(names: list[str]) -> list[str]:
    """``names`` without repeats, first occurrence kept."""
    return list(dict.fromkeys(names))


def _nearest(values: list[float], target: float) -> float:
    return min(values, key=lambda v: (abs(math.log(v) - math.log(target)), v))


def ablation_ratio(cfg: StudyConfig, spec: DatasetSpec) -> float:
    """The data set's ratio the ablations run at: the one nearest ``ablations.imratio``."""
    return _nearest(spec.imratios, cfg.ablations.imratio)


def _over_seeds(
    cfg: StudyConfig,
    name: str,
    r: float,
    method: str,
    params: tuple,
    variant: str = "clean",
    tweak: str = "",
) -> list[Job]:
    return [Job(name, r, s, method, params, variant, tweak) for s in cfg.seeds]


def ablation_jobs(
    cfg: StudyConfig, available: list[DatasetSpec], chosen: dict[tuple, tuple]
) -> tuple[dict[str, list[Job]], list[str]]:
    """The ablation runs keyed ``<ablation>/<data set>/<ratio>/<row>``, and notes for the report."""
    abl = cfg.ablations
    jobs: dict[str, list[Job]] = {}
    notes: list[str] = []
    specs = {s.name: s for s in available}
    if "auc_m" not in cfg.losses:
        return jobs, ["Ablations skipped: they need `auc_m` among the losses."]
    lib_ok = True
    if abl.libauc:
        mods, why = import_libauc()
        if mods is None:
            lib_ok = False
            notes.append(f"LibAUC side by side skipped: {why}.")
    if abl.two_stage:
        for name in unique(abl.datasets + abl.two_stage_datasets):
            if name in specs:
                for r in specs[name].imratios:
                    jobs[f"two_stage/{name}/{r}/two_stage"] = _over_seeds(
                        cfg, name, r, "two_stage", chosen[name, r, "auc_m"]
                    )
    for name in unique(abl.datasets + abl.libauc_datasets):
        if name not in specs:
            continue
        r = ablation_ratio(cfg, specs[name])
        if abl.libauc and lib_ok:
            jobs[f"libauc/{name}/{r}/libauc"] = _over_seeds(
                cfg, name, r, "libauc", chosen[name, r, "auc_m"]
            )
        if name in abl.datasets:
            jobs.update(_dataset_ablation_jobs(cfg, name, r, chosen, lib_ok))
    return jobs, notes


def _dataset_ablation_jobs(
    cfg: StudyConfig, name: str, r: float, chosen: dict[tuple, tuple], lib_ok: bool
) -> dict[str, list[Job]]:
    """Robustness, α projection, dual step, BSN, attribution and no-momentum runs of one data set."""
    abl = cfg.ablations
    jobs: dict[str, list[Job]] = {}
    pm = chosen[name, r, "auc_m"]
    gamma = dict(pm)["epoch_decay"]
    ps = chosen.get((name, r, "auc_s"), job_params(epoch_decay=gamma))
    small = job_params(epoch_decay=gamma, margin=abl.small_margin) if abl.small_margin else None
    if abl.robustness:
        for v in ("easy", "noisy"):
            jobs[f"robust/{name}/{r}/{v}/auc_s"] = _over_seeds(cfg, name, r, "auc_s", ps, v)
            jobs[f"robust/{name}/{r}/{v}/auc_m"] = _over_seeds(cfg, name, r, "auc_m", pm, v)
        if small:
            for v in ("clean", "easy", "noisy"):
                jobs[f"robust/{name}/{r}/{v}/auc_m_small"] = _over_seeds(
                    cfg, name, r, "auc_m", small, v
                )
    if abl.alpha_projection:
        for v in ("clean", "easy") if abl.robustness else ("clean",):
            jobs[f"alpha/{name}/{r}/{v}/noproj"] = _over_seeds(cfg, name, r, "auc_m_noproj", pm, v)
            if small:
                jobs[f"alpha/{name}/{r}/{v}/small"] = _over_seeds(cfg, name, r, "auc_m", small, v)
                jobs[f"alpha/{name}/{r}/{v}/small_noproj"] = _over_seeds(
                    cfg, name, r, "auc_m_noproj", small, v
                )
    if abl.dual_step:
        jobs[f"dual/{name}/{r}/paper"] = _over_seeds(cfg, name, r, "auc_m", pm, tweak="dual_paper")
    if abl.bsn:
        jobs[f"bsn/{name}/{r}/flip"] = _over_seeds(cfg, name, r, "auc_m", pm, tweak="bsn_flip")
    if abl.attribution:
        for tw, _ in ATTRIBUTION_TWEAKS:
            jobs[f"attr/{name}/{r}/{tw}"] = _over_seeds(cfg, name, r, "auc_m", pm, tweak=tw)
    momentum = cfg.train.pesg_momentum or cfg.train.libauc_or_pesg_momentum
    if abl.libauc and lib_ok and abl.libauc_no_momentum and momentum:
        jobs[f"nomom/{name}/{r}/ours"] = _over_seeds(cfg, name, r, "auc_m", pm, tweak="no_momentum")
        jobs[f"nomom/{name}/{r}/libauc"] = _over_seeds(
            cfg, name, r, "libauc", pm, tweak="no_momentum"
        )
    return jobs
