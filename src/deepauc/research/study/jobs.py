"""The study's runs: one ``Job`` per training run, the tuning grids, the final and ablation runs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from deepauc.research.study.config import BSN_SETTINGS, DatasetSpec, StudyConfig
from deepauc.research.study.variants import import_libauc

__all__ = [
    "ATTRIBUTION_TWEAKS",
    "BSN_TWEAKS",
    "Job",
    "ablation_jobs",
    "ablation_ratio",
    "bsn_tweak",
    "final_jobs",
    "job_params",
    "loss_grid",
    "lowest_ratio",
    "tuning_jobs",
    "unique",
]

# the tweak that runs AUC-M under each named batch score normalisation setting
BSN_TWEAKS = {name: f"bsn_{name}" for name in BSN_SETTINGS}

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
    # ce | ce_weighted | focal | auc_s | auc_m | auc_m_noproj | two_stage | two_stage_paper |
    # ce_continued | compositional | libauc
    method: str
    params: tuple = ()  # sorted (name, value) pairs; lr2_factor: stage 2 at lr × this
    variant: str = "clean"  # clean | easy | noisy
    tweak: str = ""  # "" or a key of deepauc.research.study.training.TWEAKS
    # sorted (name, value) overrides of the run's settings: epochs, min_positives, noise_frac,
    # pos_fraction
    setting: tuple = ()

    def param(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.setting).get(name, default)


def job_params(**kw: float) -> tuple:
    """Hyper-parameters as the sorted ``(name, value)`` pairs a :class:`Job` carries."""
    return tuple(sorted(kw.items()))


def loss_grid(cfg: StudyConfig, spec: DatasetSpec, loss: str) -> list[tuple]:
    """The candidate hyper-parameters of ``loss`` on ``spec``, each with its learning rate."""
    g = spec.grids or cfg.grids
    lrs = g.lr_by_loss.get(loss) or g.lr or [spec.lr or cfg.train.lr]
    if loss in ("ce", "ce_weighted"):
        return [job_params(lr=lr) for lr in lrs]
    if loss == "focal":
        return [
            job_params(alpha=a, gamma=c, lr=lr)
            for lr in lrs
            for a in g.focal_alpha
            for c in g.focal_gamma
        ]
    if loss == "auc_s":
        return [job_params(epoch_decay=e, lr=lr) for lr in lrs for e in g.epoch_decay]
    return [
        job_params(epoch_decay=e, margin=m, lr=lr)
        for lr in lrs
        for e in g.epoch_decay
        for m in g.margin
    ]


def check_equal_effort(cfg: StudyConfig, available: list[DatasetSpec]) -> None:
    """With ``grids.equal_candidates``: every loss has as many candidates as every other."""
    for spec in available:
        if not (spec.grids or cfg.grids).equal_candidates:
            continue
        counts = {loss: len(loss_grid(cfg, spec, loss)) for loss in cfg.losses}
        if len(set(counts.values())) > 1:
            raise ValueError(
                f"grids.equal_candidates: {spec.name} has unequal candidates per loss {counts}"
            )


def bsn_tweak(cfg: StudyConfig, setting: str) -> str:
    """The tweak that runs BSN ``setting``: none for the study's own setting."""
    return "" if setting == cfg.train.bsn else BSN_TWEAKS[setting]


def lowest_ratio(spec: DatasetSpec) -> float:
    return min(spec.imratios)


def tuning_jobs(
    cfg: StudyConfig, available: list[DatasetSpec]
) -> dict[tuple, dict[tuple, list[Job]]]:
    """Per (data set, ratio, loss) with more than one candidate: each candidate's runs; and per
    (data set, lowest ratio, ``auc_m``, BSN tweak) when the BSN settings are tuned on their own."""
    jobs: dict[tuple, dict[tuple, list[Job]]] = {}
    abl = cfg.ablations
    check_equal_effort(cfg, available)
    for spec in available:
        tseeds = spec.tune_seeds or cfg.seeds[:1]
        for r in spec.imratios:
            for loss in cfg.losses:
                grid = loss_grid(cfg, spec, loss)
                if len(grid) > 1:
                    jobs[spec.name, r, loss] = {
                        prm: [Job(spec.name, r, s, loss, prm) for s in tseeds] for prm in grid
                    }
        grid = loss_grid(cfg, spec, "auc_m")
        if abl.bsn and abl.bsn_tune and "auc_m" in cfg.losses and len(grid) > 1:
            r = lowest_ratio(spec)
            for setting in BSN_SETTINGS:
                tw = bsn_tweak(cfg, setting)
                if tw:
                    jobs[spec.name, r, "auc_m", tw] = {
                        prm: [Job(spec.name, r, s, "auc_m", prm, tweak=tw) for s in tseeds]
                        for prm in grid
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
    cfg: StudyConfig, name: str, r: float, method: str, params: tuple, **fields: Any
) -> list[Job]:
    """The run at every seed of the study; ``fields`` are the :class:`Job`'s ``variant``,
    ``tweak`` and ``setting`` by name."""
    return [Job(name, r, s, method, params, **fields) for s in cfg.seeds]


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
                    jobs.update(_two_stage_jobs(cfg, name, r, chosen))
    jobs.update(fairness_jobs(cfg, available, chosen))
    if abl.dual_grid:
        for spec in available:
            jobs.update(dual_grid_jobs(cfg, spec.name, ablation_ratio(cfg, spec), chosen))
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
            jobs[f"robust/{name}/{r}/{v}/auc_s"] = _over_seeds(cfg, name, r, "auc_s", ps, variant=v)
            jobs[f"robust/{name}/{r}/{v}/auc_m"] = _over_seeds(cfg, name, r, "auc_m", pm, variant=v)
        if small:
            for v in ("clean", "easy", "noisy"):
                jobs[f"robust/{name}/{r}/{v}/auc_m_small"] = _over_seeds(
                    cfg, name, r, "auc_m", small, variant=v
                )
    if abl.alpha_projection:
        for v in ("clean", "easy") if abl.robustness else ("clean",):
            jobs[f"alpha/{name}/{r}/{v}/noproj"] = _over_seeds(
                cfg, name, r, "auc_m_noproj", pm, variant=v
            )
            if small:
                jobs[f"alpha/{name}/{r}/{v}/small"] = _over_seeds(
                    cfg, name, r, "auc_m", small, variant=v
                )
                jobs[f"alpha/{name}/{r}/{v}/small_noproj"] = _over_seeds(
                    cfg, name, r, "auc_m_noproj", small, variant=v
                )
    if abl.dual_step and not abl.dual_grid:
        jobs[f"dual/{name}/{r}/paper"] = _over_seeds(cfg, name, r, "auc_m", pm, tweak="dual_paper")
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


def _two_stage_jobs(
    cfg: StudyConfig, name: str, r: float, chosen: dict[tuple, tuple]
) -> dict[str, list[Job]]:
    """The 50/50 two-stage runs and, with ``two_stage_paper``, the paper's two-stage runs
    (whole CE run, then AUC-M) and CE continued for the same extra epochs."""
    pm, pc = chosen[name, r, "auc_m"], chosen[name, r, "ce"] if "ce" in cfg.losses else ()
    ce_lr: float = (dict(pc) or dict(pm))["lr"]
    abl = cfg.ablations
    out = {f"two_stage/{name}/{r}/two_stage": _over_seeds(cfg, name, r, "two_stage", pm)}
    if abl.compositional:
        comp = job_params(ce_lr=ce_lr, **dict(pm))
        out[f"two_stage/{name}/{r}/compositional"] = _over_seeds(
            cfg, name, r, "compositional", comp
        )
    if not abl.two_stage_paper:
        return out
    # the second stage's lr factor: fixed, or one run per factor, chosen later on validation
    factors: list[float | None] = [*abl.finetune_lr_factors] or [None]
    for f in factors:
        tag, extra = ("", {}) if f is None else (f"~{f:g}", {"lr2_factor": f})
        paper = job_params(ce_lr=ce_lr, **dict(pm), **extra)
        out[f"two_stage/{name}/{r}/paper{tag}"] = _over_seeds(
            cfg, name, r, "two_stage_paper", paper
        )
        if abl.head_direction:
            out[f"two_stage/{name}/{r}/paper_ce_direction{tag}"] = _over_seeds(
                cfg, name, r, "two_stage_paper", paper, tweak="head_ce_direction"
            )
        out[f"two_stage/{name}/{r}/ce_continued{tag}"] = _over_seeds(
            cfg, name, r, "ce_continued", job_params(lr=ce_lr, **extra)
        )
    return out


# (tweak, dual step, momentum 0?) of the dual-step grid
DUAL_GRID = tuple(
    (f"dual_{dual}{'_m0' if zero else ''}", dual, zero)
    for zero in (True, False)
    for dual in ("normalized", "paper", "closed_form")
)


def dual_grid_jobs(
    cfg: StudyConfig, name: str, r: float, chosen: dict[tuple, tuple]
) -> dict[str, list[Job]]:
    """AUC-M with each dual step at momentum 0 and at ``pesg_momentum`` (unless that is 0 too);
    the row equal to the config's own setting is the Table-1 run (no tweak), trained once."""
    out = {}
    for tweak, dual, zero in DUAL_GRID:
        if not zero and cfg.train.pesg_momentum == 0:
            continue
        same = dual == cfg.train.dual and (zero == (cfg.train.pesg_momentum == 0))
        out[f"dualgrid/{name}/{r}/{tweak}"] = _over_seeds(
            cfg, name, r, "auc_m", chosen[name, r, "auc_m"], tweak="" if same else tweak
        )
    return out


def fairness_jobs(
    cfg: StudyConfig, available: list[DatasetSpec], chosen: dict[tuple, tuple]
) -> dict[str, list[Job]]:
    """BSN none / logits / sigmoid on every data set at its lowest ratio, the oversampling
    row, and the search settings."""
    abl, jobs = cfg.ablations, {}
    specs = {s.name: s for s in available}
    if abl.bsn:
        for spec in available:
            r = lowest_ratio(spec)
            for bsn_name in BSN_SETTINGS:
                tw = bsn_tweak(cfg, bsn_name)
                prm = chosen.get((spec.name, r, "auc_m", tw), chosen[spec.name, r, "auc_m"])
                jobs[f"bsn/{spec.name}/{r}/{bsn_name}"] = _over_seeds(
                    cfg, spec.name, r, "auc_m", prm, tweak=tw
                )
    over_name = abl.oversample_dataset or available[0].name
    if abl.oversample is not None and over_name in specs:
        r = lowest_ratio(specs[over_name])
        setting = job_params(pos_fraction=abl.oversample)
        for loss in ("ce", "auc_m"):
            if loss in cfg.losses:
                jobs[f"oversample/{over_name}/{r}/{loss}"] = _over_seeds(
                    cfg, over_name, r, loss, chosen[over_name, r, loss], setting=setting
                )
    for i, search in enumerate(abl.search):
        if search.dataset in specs:
            jobs.update(_search_jobs(cfg, i, specs[search.dataset], chosen))
    return jobs


def _search_jobs(
    cfg: StudyConfig, index: int, spec: DatasetSpec, chosen: dict[tuple, tuple]
) -> dict[str, list[Job]]:
    """CE and AUC-M at each margin of search setting ``index``, with the hyper-parameters tuned
    at the data set's ratio nearest the setting's."""
    search = cfg.ablations.search[index]
    tuned = _nearest(spec.imratios, search.imratio)
    options = {"noise_frac": search.noise_frac} if search.noise_frac else {}
    if search.min_positives is not None:
        options["min_positives"] = search.min_positives
    if search.epochs is not None:
        options["epochs"] = search.epochs
    setting, variant = job_params(**options), "noisy" if search.noise_frac else "clean"
    pm = dict(chosen[spec.name, tuned, "auc_m"])
    out = {}
    if "ce" in cfg.losses:
        out[f"search/{spec.name}/{search.imratio}/{index}/ce"] = _over_seeds(
            cfg,
            spec.name,
            search.imratio,
            "ce",
            chosen[spec.name, tuned, "ce"],
            variant=variant,
            setting=setting,
        )
    for m in search.margins or [pm["margin"]]:
        out[f"search/{spec.name}/{search.imratio}/{index}/auc_m={m:g}"] = _over_seeds(
            cfg,
            spec.name,
            search.imratio,
            "auc_m",
            job_params(**{**pm, "margin": m}),
            variant=variant,
            setting=setting,
        )
    return out
