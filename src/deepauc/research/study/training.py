"""One study run: its loss and optimiser (with an ablation's tweak), the training loop, test AUC."""

from __future__ import annotations

import dataclasses
import functools
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import nn

from deepauc.losses import batch_score_norm, create_loss, loss_input
from deepauc.optim import PESG, create_optimizer, end_stage
from deepauc.research.datasets import ImbalancedSplit
from deepauc.research.heads import fresh_head
from deepauc.research.study.compositional import compositional_loss
from deepauc.research.study.config import AblationSpec, DatasetSpec, StudyConfig, TrainSpec
from deepauc.research.study.evaluation import EpochTracker, scores_row
from deepauc.research.study.jobs import Job, ablation_ratio, unique
from deepauc.research.study.nets import build_model, model_title
from deepauc.research.study.sampling import epoch_batches
from deepauc.research.study.splits import make_split, standardize
from deepauc.research.study.stage_store import load_stage, save_stage, stage_path
from deepauc.research.study.variants import (
    AUCMLossBatchP,
    AUCMLossNoProjection,
    PESGEMAMomentum,
    import_libauc,
)

__all__ = [
    "TWEAKS",
    "RunContext",
    "Tweak",
    "make_loss_and_optimizer",
    "run_job",
    "step_timing",
]


@dataclass(frozen=True)
class Tweak:
    """What an ablation tweak changes in a run's AUC loss and PESG (by default nothing)."""

    auc_m_loss: type[AUCMLossBatchP] | None = None  # replaces the AUC-M loss of the factory
    optimizer: type[PESG] | None = None  # replaces the PESG of the factory
    dual: Literal["normalized", "paper", "closed_form"] | None = None  # None = train.dual
    momentum: Literal["pesg", "libauc", "zero"] = "pesg"  # which config momentum PESG gets
    bsn: Literal["none", "logits", "sigmoid"] | None = None  # None = train.batch_score_norm
    vref_noise_std: float = 0.0  # > 0: v_ref starts at N(0, std²) noise, not at the weights
    grad_clip: float | None = None  # clamp every primal gradient element to ±grad_clip
    head_init: str | None = None  # None = train.head_init (the second stage's fresh head)


TWEAKS: dict[str, Tweak] = {
    "": Tweak(),
    "dual_paper": Tweak(dual="paper"),
    # the dual steps at momentum 0 and at the config's momentum (dual_paper above)
    "dual_normalized": Tweak(dual="normalized"),
    "dual_closed_form": Tweak(dual="closed_form"),
    "dual_normalized_m0": Tweak(dual="normalized", momentum="zero"),
    "dual_paper_m0": Tweak(dual="paper", momentum="zero"),
    "dual_closed_form_m0": Tweak(dual="closed_form", momentum="zero"),
    "head_ce_direction": Tweak(head_init="ce_direction"),
    "head_torch_default": Tweak(head_init="torch_default"),  # nn.Linear's own draw
    "bsn_none": Tweak(bsn="none"),
    "bsn_logits": Tweak(bsn="logits"),
    "bsn_sigmoid": Tweak(bsn="sigmoid"),
    "no_momentum": Tweak(momentum="zero"),
    # LibAUC 2.0.1's design choices, one at a time
    "vref_noise": Tweak(vref_noise_std=0.01),
    "batch_p": Tweak(auc_m_loss=AUCMLossBatchP),
    "clip": Tweak(grad_clip=1.0),
    "libauc_alpha": Tweak(dual="closed_form"),  # = LibAUC's α step at a_t, b_t (docs/method.md)
    "ema_momentum": Tweak(optimizer=PESGEMAMomentum, momentum="libauc"),
}


@dataclass(frozen=True)
class RunContext:
    """What every training stage of one run reads: the data set, training and ablation settings
    (with the job's overrides), the standardised tensors, p of the AUC losses and the generator
    that orders the batches. The job and the model stay arguments: a two-stage run trains two
    jobs on one model, and the model is what a stage changes."""

    spec: DatasetSpec
    tspec: TrainSpec
    abl: AblationSpec
    data: dict[str, torch.Tensor]
    p: float
    gen: torch.Generator
    tracker: EpochTracker | None = None  # evaluates every epoch (train.eval_epochs)
    stage_dir: Path | None = None  # where the paper two-stage's CE stages are kept


class TrainingSetup(NamedTuple):
    """A run's loss, optimiser, hook called between backward and step, optimiser kind, and
    what the loss is fed from the network's logits."""

    loss: nn.Module
    optimizer: Any  # a torch optimizer, or LibAUC's PESG
    pre_step: Callable[[], None] | None
    kind: Literal["sgd", "pesg", "libauc"]
    scores: Callable[[torch.Tensor], torch.Tensor]
    # (model, x, y) -> the batch's loss, where it is not loss(scores(model(x)), y)
    batch_loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None


def _momentum(source: str, tspec: TrainSpec) -> float:
    values = {"pesg": tspec.pesg_momentum, "libauc": tspec.libauc_or_pesg_momentum, "zero": 0.0}
    return values[source]


def _tweak(name: str) -> Tweak:
    if name not in TWEAKS:
        raise ValueError(f"unknown tweak {name!r}; choose one of {sorted(TWEAKS)}")
    return TWEAKS[name]


def make_loss_and_optimizer(
    job: Job, model: nn.Module, p: float, lr: float, tspec: TrainSpec
) -> TrainingSetup:
    """The loss and optimiser of ``job``'s method (training split ratio ``p``) and tweak."""
    tweak = _tweak(job.tweak)
    wd = tspec.weight_decay
    if job.method in ("ce", "focal", "ce_weighted"):
        focal = {"focal_alpha": job.param("alpha"), "focal_gamma": job.param("gamma")}
        extra = {"focal": focal, "ce_weighted": {"imratio": p}}.get(job.method, {})
        loss = create_loss(job.method, **extra)
        sgd = create_optimizer(
            "sgd", model.parameters(), loss, lr=lr, momentum=tspec.sgd_momentum, weight_decay=wd
        )
        return TrainingSetup(loss, sgd, None, "sgd", functools.partial(loss_input, loss))
    if job.method == "libauc":
        return _libauc_setup(job, model, p, lr, tspec)
    loss = _auc_loss(job, tweak, p, _bsn(tweak, tspec))
    gamma, momentum = job.param("epoch_decay"), _momentum(tweak.momentum, tspec)
    dual = tweak.dual or tspec.dual
    settings = dict(lr=lr, epoch_decay=gamma, weight_decay=wd, momentum=momentum, dual=dual)
    if tweak.optimizer is None:
        pesg = create_optimizer("pesg", model.parameters(), loss, **settings)
    else:  # an ablation's PESG variant
        pesg = tweak.optimizer(model.parameters(), loss, **settings)
    if tweak.vref_noise_std:
        _noise_vref(pesg, tweak.vref_noise_std)
    pre_step = None
    if tweak.grad_clip is not None:
        primal = [prm for g in pesg.param_groups if g["role"] == "primal" for prm in g["params"]]
        pre_step = functools.partial(_clamp_grads, primal, tweak.grad_clip)
    scores = functools.partial(loss_input, loss)
    batch_loss = None
    if job.method == "compositional":  # inner CE step of θ = CE's tuned lr
        batch_loss = functools.partial(
            compositional_loss, auc_loss=loss, inner_lr=job.param("ce_lr"), scores=scores
        )
    return TrainingSetup(loss, pesg, pre_step, "pesg", scores, batch_loss)


def _bsn(tweak: Tweak, tspec: TrainSpec) -> str:
    """The batch score normalisation a run trains with: its tweak's, else the config's."""
    return tweak.bsn or tspec.bsn


def _auc_loss(job: Job, tweak: Tweak, p: float, bsn: bool | str) -> nn.Module:
    """The AUC loss of ``job`` with batch score normalisation ``bsn``."""
    if job.method == "auc_s":
        return create_loss("auc_s", imratio=p, batch_score_norm=bsn)
    if job.method == "auc_m_noproj":
        return AUCMLossNoProjection(margin=job.param("margin"), imratio=p, batch_score_norm=bsn)
    if job.method not in ("auc_m", "two_stage", "two_stage_paper", "compositional"):
        raise ValueError(f"unknown method {job.method!r}")
    if tweak.auc_m_loss is not None:
        return tweak.auc_m_loss(margin=job.param("margin"), batch_score_norm=bsn)
    return create_loss("auc_m", margin=job.param("margin"), imratio=p, batch_score_norm=bsn)


def _noise_vref(pesg: PESG, std: float) -> None:
    with torch.no_grad():
        for group in pesg.param_groups:
            if group["role"] == "primal":
                for prm in group["params"]:
                    pesg.state[prm]["v_ref"].normal_(0.0, std)


def _clamp_grads(params: list[torch.Tensor], limit: float) -> None:
    for prm in params:
        if prm.grad is not None:
            prm.grad.clamp_(-limit, limit)


def libauc_scores(bsn: str, logits: torch.Tensor) -> torch.Tensor:
    """The scores LibAUC's examples feed its AUCMLoss: under BSN its l2 head (the logits,
    normalised over the batch), else the sigmoid; ``sigmoid`` normalises the sigmoid scores."""
    if bsn == "logits":
        return batch_score_norm(logits)
    h = torch.sigmoid(logits)
    return batch_score_norm(h) if bsn == "sigmoid" else h


def _libauc_setup(
    job: Job, model: nn.Module, p: float, lr: float, tspec: TrainSpec
) -> TrainingSetup:
    """LibAUC 2.0.1's AUCMLoss and PESG, called as its documentation shows."""
    tweak = _tweak(job.tweak)
    mods, why = import_libauc()
    if mods is None:
        raise RuntimeError(why)
    lib_loss_cls, lib_pesg_cls = mods
    warnings.filterwarnings("ignore", message="Input data has no positive sample")
    loss = lib_loss_cls(margin=job.param("margin"), imratio=p, device=torch.device("cpu"))
    opt = lib_pesg_cls(
        model.parameters(),
        loss_fn=loss,
        lr=lr,
        epoch_decay=job.param("epoch_decay"),
        weight_decay=tspec.weight_decay,
        momentum=_momentum("zero" if tweak.momentum == "zero" else "libauc", tspec),
        verbose=False,
        device=torch.device("cpu"),
    )
    scores = functools.partial(libauc_scores, _bsn(tweak, tspec))
    return TrainingSetup(loss, opt, None, "libauc", scores)


def _decay_epochs(epochs: int, fractions: list[float]) -> set[int]:
    """Epochs (1-based, counted as finished) after which the lr decays."""
    return {e for e in (int(round(f * epochs)) for f in fractions) if 0 < e < epochs}


def _end_stage(setup: TrainingSetup, decay_factor: float) -> None:
    """Decay the lr; for PESG this also ends a stage (v_ref ← the stage's average)."""
    if setup.kind in ("pesg", "libauc"):
        end_stage(setup.optimizer, decay_factor)
    else:
        for g in setup.optimizer.param_groups:
            g["lr"] /= decay_factor


@dataclass
class _Progress:
    steps: int = 0
    opt_s: float = 0.0
    finite: bool = True


def _train_epoch(
    setup: TrainingSetup, model: nn.Module, ctx: RunContext, progress: _Progress
) -> None:
    """One pass over the training rows in batches; stops at the first non-finite loss."""
    x, y = ctx.data["x_train"], ctx.data["y_train"]
    for idx in epoch_batches(y, ctx.spec.batch_size, ctx.tspec.pos_fraction, ctx.gen):
        xb, yb = x[idx], y[idx]
        if ctx.spec.flip:
            m = torch.rand(len(idx), generator=ctx.gen) < 0.5
            xb = torch.where(m[:, None, None, None], xb.flip(3), xb)
        if setup.batch_loss is not None:
            loss = setup.batch_loss(model, xb, yb)
        else:
            loss = setup.loss(setup.scores(model(xb)), yb)
        if not torch.isfinite(loss):
            progress.finite = False
            return
        setup.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if setup.pre_step is not None:
            setup.pre_step()
        t1 = time.perf_counter()
        setup.optimizer.step()
        progress.opt_s += time.perf_counter() - t1
        progress.steps += 1


def train_stage(
    job: Job, model: nn.Module, ctx: RunContext, *, epochs: int, lr: float
) -> dict[str, Any]:
    """Train ``model`` in place; returns timing stats and whether the loss stayed finite
    (``stored_s``: the part of ``train_s`` spent by an earlier run, here none)."""
    setup = make_loss_and_optimizer(job, model, ctx.p, lr, ctx.tspec)
    decays = _decay_epochs(epochs, ctx.tspec.decay_at)
    model.train()
    progress = _Progress()
    t0 = time.perf_counter()
    for epoch in range(epochs):
        _train_epoch(setup, model, ctx, progress)
        if not progress.finite:
            break
        if ctx.tracker is not None:
            ctx.tracker.after_epoch(model)
        if epoch + 1 in decays:
            _end_stage(setup, ctx.tspec.decay_factor)
    total = time.perf_counter() - t0
    return {
        "steps": progress.steps,
        "train_s": total,
        "stored_s": 0.0,
        "ms_per_step": 1000 * total / max(progress.steps, 1),
        "opt_ms_per_step": 1000 * progress.opt_s / max(progress.steps, 1),
        "finite": progress.finite,
    }


def _joined(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """The stats of two stages trained one after the other (optimiser time of the second)."""
    steps, train_s = first["steps"] + second["steps"], first["train_s"] + second["train_s"]
    return {
        "steps": steps,
        "train_s": train_s,
        "stored_s": first["stored_s"] + second["stored_s"],
        "ms_per_step": 1000 * train_s / max(1, steps),
        "opt_ms_per_step": second["opt_ms_per_step"],
        "finite": first["finite"] and second["finite"],
    }


def _train_two_stage(job: Job, model: nn.Module, ctx: RunContext) -> dict[str, Any]:
    """CE for a share of the epochs, then AUC-M by PESG with a freshly initialised head."""
    lr = job.param("lr", ctx.spec.lr or ctx.tspec.lr)
    e1 = max(1, int(round(ctx.spec.epochs * ctx.abl.two_stage_ce_fraction)))
    e2 = max(1, ctx.spec.epochs - e1)
    ce_job = dataclasses.replace(job, method="ce")
    s1 = train_stage(ce_job, model, ctx, epochs=e1, lr=lr)
    _fresh_head(job, model, ctx)  # fresh classifier layer for the AUC stage
    auc_job = dataclasses.replace(job, method="auc_m")
    s2 = train_stage(auc_job, model, ctx, epochs=e2, lr=ctx.abl.stage2_lr or lr)
    return _joined(s1, s2)


def _fresh_head(job: Job, model: nn.Module, ctx: RunContext) -> None:
    """The second stage's head, drawn as the job's tweak or ``train.head_init`` says."""
    fresh_head(model, _tweak(job.tweak).head_init or ctx.tspec.head_init)


def finetune_epochs(spec: DatasetSpec, abl: AblationSpec) -> int:
    """Epochs of the second stage of the paper's two-stage runs (and of CE continued)."""
    return max(1, int(round(spec.epochs * abl.finetune_epochs_fraction)))


def train_then_finetune(
    job: Job, model: nn.Module, ctx: RunContext, observe: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """A whole CE run at ``ce_lr`` (``lr`` for CE continued), then a second stage of
    :func:`finetune_epochs` at ``finetune_lr_factor`` times the stage's lr: AUC-M by PESG with
    a freshly initialised head (``two_stage_paper``), or more CE, head kept (``ce_continued``).
    ``observe``, if given, is called with ``"CE"`` after the CE run and with ``"fresh head"``
    after the head's re-initialisation."""
    ce_lr = job.param("ce_lr", job.param("lr"))
    ce_job = Job(job.dataset, job.imratio, job.seed, "ce", (("lr", ce_lr),), job.variant)
    s1 = _whole_ce_stage(ce_job, model, ctx, ce_lr)
    if observe:
        observe("CE")
    if job.method == "two_stage_paper":
        _fresh_head(job, model, ctx)  # fresh classifier layer for AUC-M
        if observe:
            observe("fresh head")
        stage2 = dataclasses.replace(job, method="auc_m")
    else:
        stage2 = ce_job
    lr2 = stage2.param("lr") * job.param("lr2_factor", ctx.abl.finetune_lr_factor)
    s2 = train_stage(stage2, model, ctx, epochs=finetune_epochs(ctx.spec, ctx.abl), lr=lr2)
    return _joined(s1, s2)


def _whole_ce_stage(ce_job: Job, model: nn.Module, ctx: RunContext, lr: float) -> dict[str, Any]:
    """The paper two-stage's first stage, from ``ctx.stage_dir`` when a run of the same seed
    trained it already (the same model, random states and tracker as training it again)."""
    epochs = ctx.spec.epochs
    if ctx.stage_dir is None:
        return train_stage(ce_job, model, ctx, epochs=epochs, lr=lr)
    path = stage_path(ctx.stage_dir, ce_job, ctx, epochs)
    stats = load_stage(path, model, ctx) if path.exists() else None
    if stats is None:
        stats = train_stage(ce_job, model, ctx, epochs=epochs, lr=lr)
        save_stage(path, model, ctx, stats)
        return stats
    # the row keeps the time the stage took, as if trained here; the study's CPU total must not
    return stats | {"stored_s": stats["train_s"]}


def with_setting(
    job: Job, spec: DatasetSpec, tspec: TrainSpec, abl: AblationSpec
) -> tuple[DatasetSpec, TrainSpec, AblationSpec]:
    """The data set, training and ablation settings with ``job.setting``'s overrides."""
    over = dict(job.setting)
    unknown = set(over) - {"epochs", "min_positives", "noise_frac", "pos_fraction"}
    if unknown:
        raise ValueError(f"unknown run setting(s) {sorted(unknown)}")
    spec = dataclasses.replace(
        spec,
        epochs=int(over.get("epochs", spec.epochs)),
        min_positives=int(over.get("min_positives", spec.min_positives)),
    )
    tspec = dataclasses.replace(tspec, pos_fraction=over.get("pos_fraction", tspec.pos_fraction))
    abl = dataclasses.replace(abl, noise_frac=over.get("noise_frac", abl.noise_frac))
    return spec, tspec, abl


class PreparedRun(NamedTuple):
    """A run's context (settings with its overrides, standardised tensors, p, batch-order
    generator), its split and its initial model."""

    ctx: RunContext
    split: ImbalancedSplit
    model: nn.Module


def prepare_run(
    job: Job, spec: DatasetSpec, tspec: TrainSpec, abl: AblationSpec, cache_dir: str | None
) -> PreparedRun:
    """Everything a run starts from, seeded by ``job.seed``."""
    spec, tspec, abl = with_setting(job, spec, tspec, abl)
    split = make_split(spec, job.imratio, job.seed, cache_dir, job.variant, abl)
    data = standardize(split)
    # p of the AUC losses: the positives' share of the batches the loss sees
    p = tspec.pos_fraction or float(split.y_train.mean())
    torch.manual_seed(job.seed)
    model = build_model(spec, tuple(data["x_train"].shape[1:]), tspec.head_init)
    gen = torch.Generator().manual_seed(job.seed * 7919 + 17)
    tracker = EpochTracker(data) if tspec.eval_epochs else None
    stage_dir = Path(cache_dir) / "stages" if cache_dir else None
    ctx = RunContext(spec, tspec, abl, data, p, gen, tracker, stage_dir)
    return PreparedRun(ctx, split, model)


def run_job(
    job: Job, spec: DatasetSpec, tspec: TrainSpec, abl: AblationSpec, cache_dir: str | None
) -> dict[str, Any]:
    """Train and evaluate one run; returns a flat result row."""
    ctx, split, model = prepare_run(job, spec, tspec, abl, cache_dir)
    if job.method == "two_stage":
        stats = _train_two_stage(job, model, ctx)
    elif job.method in ("two_stage_paper", "ce_continued"):
        stats = train_then_finetune(job, model, ctx)
    else:
        lr = job.param("lr", ctx.spec.lr or ctx.tspec.lr)
        stats = train_stage(job, model, ctx, epochs=ctx.spec.epochs, lr=lr)
    return {
        "dataset": job.dataset,
        "requested_imratio": job.imratio,
        "imratio": split.imratio,
        "seed": job.seed,
        "method": job.method,
        "params": json.dumps(dict(job.params), sort_keys=True),
        "variant": job.variant,
        "tweak": job.tweak,
        "setting": json.dumps(dict(job.setting), sort_keys=True),
        **scores_row(model, ctx.data),
        "n_train": len(split.y_train),
        "pos_train": int(split.y_train.sum()),
        **stats,
        **(ctx.tracker.row() if ctx.tracker is not None else {}),
    }


def _time_steps(
    setup: TrainingSetup,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
) -> tuple[float, float]:
    """Median ms of a whole step and of the optimiser step alone, after 5 warm-up steps."""
    tot, t_opt = [], []
    for i in range(steps + 5):
        t0 = time.perf_counter()
        loss = setup.loss(setup.scores(model(x)), y)
        setup.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t1 = time.perf_counter()
        setup.optimizer.step()
        t2 = time.perf_counter()
        if i >= 5:
            tot.append(t2 - t0)
            t_opt.append(t2 - t1)
    return 1000 * float(np.median(tot)), 1000 * float(np.median(t_opt))


def step_timing(
    cfg: StudyConfig, available: list[DatasetSpec], chosen: dict[tuple, tuple]
) -> list[dict[str, Any]] | None:
    """Time ``timing_steps`` training steps (forward, backward, step) of ours and LibAUC's
    AUC-M + PESG on each ablation data set's network, in this process, one after the other."""
    if import_libauc()[0] is None:
        return None
    out = []
    abl = cfg.ablations
    for name in unique(abl.datasets + abl.libauc_datasets):
        spec = next((s for s in available if s.name == name), None)
        if spec is None:
            continue
        r = ablation_ratio(cfg, spec)
        data = standardize(make_split(spec, r, cfg.seeds[0], cfg.cache_dir))
        p = float(data["y_train"].mean())
        row: dict[str, Any] = {
            "dataset": name,
            "model": model_title(spec),
            "batch": spec.batch_size,
        }
        x = data["x_train"][: spec.batch_size]
        y = data["y_train"][: spec.batch_size].clone()
        y[0] = 1.0
        for method in ("auc_m", "libauc"):
            job = Job(name, r, cfg.seeds[0], method, chosen[name, r, "auc_m"])
            torch.manual_seed(0)
            model = build_model(spec, tuple(data["x_train"].shape[1:]))
            lr = job.param("lr", spec.lr or cfg.train.lr)
            setup = make_loss_and_optimizer(job, model, p, lr, cfg.train)
            step_ms, opt_ms = _time_steps(setup, model, x, y, abl.timing_steps)
            row[f"{method}_step_ms"], row[f"{method}_opt_ms"] = step_ms, opt_ms
        out.append(row)
    return out
