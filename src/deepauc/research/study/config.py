"""The study's typed config: data sets, training, tuning grids and ablations, read from YAML."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from deepauc.config import load_config
from deepauc.losses import BSN_MODES
from deepauc.research.heads import HEAD_INITS, HeadInit

__all__ = [
    "BSN_SETTINGS",
    "MAIN_LOSSES",
    "STUDY_LOSSES",
    "ReportSpec",
    "AblationSpec",
    "DatasetSpec",
    "GridSpec",
    "SearchSpec",
    "StudyConfig",
    "TrainSpec",
    "bsn_setting",
    "load_study_config",
]

MAIN_LOSSES = ("ce", "focal", "auc_s", "auc_m")
# the losses a study may list: the paper's four and class-weighted CE
STUDY_LOSSES = (*MAIN_LOSSES, "ce_weighted")
# the named batch score normalisation settings of the study, as the report names them
BSN_SETTINGS = ("none", "logits", "sigmoid")


def bsn_setting(value: bool | str) -> str:
    """``"none"``, ``"logits"`` or ``"sigmoid"`` for a ``batch_score_norm`` value (True = logits)."""
    mode = BSN_MODES.get(value) if isinstance(value, (bool, str)) else None
    if mode is None:
        raise ValueError(
            f"batch_score_norm must be false, true, {list(BSN_SETTINGS)}; got {value!r}"
        )
    return mode if isinstance(mode, str) else "none"


@dataclass
class GridSpec:
    """Hyper-parameter grids tuned on validation (the paper's, by default)."""

    focal_alpha: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    focal_gamma: list[float] = field(default_factory=lambda: [1.0, 2.0, 5.0])
    epoch_decay: list[float] = field(
        default_factory=lambda: [1 / 100, 1 / 300, 1 / 500, 1 / 700, 1 / 1000]
    )
    margin: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 1.0])
    lr: list[float] | None = None  # tuned for every loss; None = the data set's lr only
    lr_by_loss: dict[str, list[float]] = field(default_factory=dict)  # a loss's own lr grid
    # every loss must have as many candidates as every other (checked before tuning)
    equal_candidates: bool = False

    def validate(self) -> None:
        for k in ("focal_alpha", "focal_gamma", "epoch_decay", "margin"):
            if not getattr(self, k):
                raise ValueError(f"grids.{k} must not be empty")
        if self.lr is not None and (not self.lr or min(self.lr) <= 0):
            raise ValueError("grids.lr must be null or a non-empty list of values > 0")
        for loss, lrs in self.lr_by_loss.items():
            if loss not in STUDY_LOSSES or not lrs or min(lrs) <= 0:
                raise ValueError(
                    f"grids.lr_by_loss.{loss}: a loss of {list(STUDY_LOSSES)} with values > 0"
                )


@dataclass
class DatasetSpec:
    """One data set of the study and how it is trained."""

    name: str
    root: str | None = None
    image_size: int | None = None  # area-average resize; None = native size
    imratios: list[float] = field(default_factory=lambda: [0.01, 0.1])
    min_positives: int = 20  # raise a ratio that would leave fewer training positives
    model: Literal["cnn", "resnet20", "mlp"] = "cnn"
    # cnn: channels of the first stage (doubled at each stride-2 stage); mlp: hidden units
    width: int = 16
    depth: int = 3  # cnn: number of conv stages
    epochs: int = 20
    batch_size: int = 128
    lr: float | None = None  # None = train.lr
    flip: bool = False  # random horizontal flips
    tune_seeds: list[int] | None = None  # None = the first of `seeds`
    grids: GridSpec | None = None  # None = the study's `grids`

    def validate(self) -> None:
        if not self.imratios or not all(0 < r <= 0.5 for r in self.imratios):
            raise ValueError(f"{self.name}: imratios must be non-empty values in (0, 0.5]")
        if self.epochs < 1 or self.batch_size < 2 or self.width < 1 or self.depth < 1:
            raise ValueError(f"{self.name}: epochs >= 1, batch_size >= 2, width >= 1, depth >= 1")


@dataclass
class TrainSpec:
    """Optimisation settings shared by every data set."""

    lr: float = 0.1
    weight_decay: float = 1e-4
    decay_at: list[float] = field(default_factory=lambda: [0.5, 0.75])
    decay_factor: float = 10.0
    sgd_momentum: float = 0.9  # CE / focal optimiser
    pesg_momentum: float = 0.0  # PESG heavy-ball momentum (0 = Algorithm 1)
    libauc_momentum: float | None = None  # LibAUC PESG's `momentum` (an EMA); None = pesg_momentum
    # BSN inside the AUC losses: false/none, logits (= true, the reference's) or sigmoid
    batch_score_norm: bool | Literal["none", "logits", "sigmoid"] = "logits"
    dual: Literal["normalized", "paper", "closed_form"] = "normalized"
    pos_fraction: float | None = None  # share of positives in every batch; None = plain shuffling
    # every head the study draws (built and stage-2): torch_default (nn.Linear's uniform),
    # pipeline (deepauc.models: N(0, 0.01²), bias 0), ce_direction (stage 2 keeps the CE
    # head's direction at the pipeline draw's norm; built heads as pipeline)
    head_init: HeadInit = "torch_default"
    # validation AUC after every epoch: the val-best epoch's test AUC is recorded too
    eval_epochs: bool = False

    def validate(self) -> None:
        if self.lr <= 0 or self.decay_factor <= 0 or not all(0 < f < 1 for f in self.decay_at):
            raise ValueError("train: lr > 0, decay_factor > 0, decay_at in (0, 1)")
        bsn_setting(self.batch_score_norm)
        if self.pos_fraction is not None and not 0 < self.pos_fraction < 1:
            raise ValueError("train.pos_fraction must be null or lie in (0, 1)")
        if self.head_init not in HEAD_INITS:
            raise ValueError(f"train.head_init must be one of {list(HEAD_INITS)}")

    @property
    def bsn(self) -> str:
        """The batch score normalisation setting by name: none, logits or sigmoid."""
        return bsn_setting(self.batch_score_norm)

    @property
    def libauc_or_pesg_momentum(self) -> float:
        """The momentum handed to LibAUC's PESG (``libauc_momentum``, else ``pesg_momentum``)."""
        return self.pesg_momentum if self.libauc_momentum is None else self.libauc_momentum


@dataclass
class SearchSpec:
    """One setting of the search for where AUC-M beats CE: a data set at a ratio, with label
    noise, fewer positives or more epochs; CE against AUC-M at each of ``margins``."""

    dataset: str
    imratio: float
    noise_frac: float = 0.0  # share of positive labels flipped (and as many negatives)
    min_positives: int | None = None  # None = the data set's
    epochs: int | None = None  # None = the data set's
    margins: list[float] = field(default_factory=list)  # empty = the tuned m

    def validate(self) -> None:
        if not 0 < self.imratio <= 0.5 or not 0 <= self.noise_frac < 1:
            raise ValueError(f"search {self.dataset}: imratio in (0, 0.5], noise_frac in [0, 1)")
        if (self.epochs is not None and self.epochs < 1) or min(self.margins, default=1) <= 0:
            raise ValueError(f"search {self.dataset}: epochs >= 1, margins > 0")
        if self.min_positives is not None and self.min_positives < 1:
            raise ValueError(f"search {self.dataset}: min_positives >= 1")


@dataclass
class AblationSpec:
    """Which ablations run, on which data sets, with which knobs."""

    datasets: list[str] = field(default_factory=list)  # names from `datasets`; empty = none
    # extra data sets for the LibAUC column only
    libauc_datasets: list[str] = field(default_factory=list)
    imratio: float = 0.1  # run at each data set's ratio nearest this
    two_stage: bool = True
    two_stage_datasets: list[str] = field(default_factory=list)  # extra data sets, two-stage only
    two_stage_ce_fraction: float = 0.5  # share of the epochs spent on CE before AUC-M
    stage2_lr: float | None = None  # None = the data set's lr
    # the paper's two-stage: a whole CE run, then AUC-M with a fresh head for a share of the
    # epochs at a fraction of the tuned lr, against CE continued the same way
    two_stage_paper: bool = True
    finetune_epochs_fraction: float = 0.5
    finetune_lr_factor: float = 0.1
    robustness: bool = True
    easy_frac: float = 0.5
    noise_frac: float = 0.1
    small_margin: float | None = 0.1  # also run AUC-M at this margin (None = only the tuned one)
    alpha_projection: bool = True
    dual_step: bool = True
    bsn: bool = True  # AUC-M with BSN none / logits / sigmoid, every data set at its lowest ratio
    bsn_tune: bool = True  # each BSN setting tuned on its own grid (else the main setting's choice)
    # positives' share of every batch in the oversampling row (CE and AUC-M); None = no row
    oversample: float | None = 0.5
    oversample_dataset: str | None = None  # None = the first data set, at its lowest ratio
    search: list[SearchSpec] = field(default_factory=list)
    libauc: bool = True  # needs `pip install libauc==2.0.1`; skipped with a message otherwise
    attribution: bool = True  # ours with one LibAUC design choice at a time
    libauc_no_momentum: bool = True  # also ours vs LibAUC with momentum 0 for both
    timing_steps: int = 100  # steps timed per optimiser for the per-step time table
    # AUC-M with dual normalized / paper / closed_form, each at momentum 0 and pesg_momentum,
    # on every data set at the ratio nearest `imratio`
    dual_grid: bool = False
    # the paper's two-stage with the AUC head started along the CE head's direction
    head_direction: bool = False
    # one-stage compositional CE∘AUC-M (PESG updates) on the two-stage data sets
    compositional: bool = False
    # tuned on validation over these multiples of the stage's lr; empty = finetune_lr_factor
    finetune_lr_factors: list[float] = field(default_factory=list)

    def validate(self) -> None:
        if not 0 < self.two_stage_ce_fraction < 1:
            raise ValueError("ablations.two_stage_ce_fraction must lie in (0, 1)")
        if self.easy_frac < 0 or not 0 <= self.noise_frac < 1:
            raise ValueError("ablations: easy_frac >= 0, noise_frac in [0, 1)")
        if not 0 < self.finetune_epochs_fraction or not 0 < self.finetune_lr_factor:
            raise ValueError("ablations: finetune_epochs_fraction and finetune_lr_factor > 0")
        if self.oversample is not None and not 0 < self.oversample < 1:
            raise ValueError("ablations.oversample must be null or lie in (0, 1)")
        if any(f <= 0 for f in self.finetune_lr_factors):
            raise ValueError("ablations.finetune_lr_factors must be values > 0")


@dataclass
class ReportSpec:
    """The report's statistics. Every call is a paired t test over seeds, Holm-adjusted over
    its table row, at ``level``; ``stats`` adds the verdict on the paper's own claim (AUC-M ≥
    each other loss, non-inferior by ``noninferiority_margin``) and the fit table."""

    stats: bool = False
    noninferiority_margin: float = 0.005  # AUC points AUC-M may trail and still count as ≥
    level: float = 0.05  # family-wise error rate of the Holm-corrected tests of a row
    min_val_positives: int = 7  # below this per seed a row is untunable: shown, not judged
    best_epoch: bool = False  # the val-best epoch's test AUC beside the final one
    partial_auc: bool = False  # test partial AUCs (FPR ≤ 0.1; TPR ≥ 0.8) per loss

    def validate(self) -> None:
        if self.noninferiority_margin < 0 or not 0 < self.level < 1:
            raise ValueError("report: noninferiority_margin >= 0, level in (0, 1)")
        if self.min_val_positives < 0:
            raise ValueError("report.min_val_positives must be >= 0")


@dataclass
class StudyConfig:
    """The whole study: data sets, seeds, losses, training, grids, ablations and workers."""

    name: str = "study"
    out_dir: str = "reports"
    cache_dir: str | None = "data/cache/study"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    workers: int = 2
    threads: int = 1  # torch threads per worker
    on_missing: Literal["error", "skip"] = "error"
    resume: bool = True
    losses: list[str] = field(default_factory=lambda: list(MAIN_LOSSES))
    datasets: list[DatasetSpec] = field(default_factory=list)
    train: TrainSpec = field(default_factory=TrainSpec)
    grids: GridSpec = field(default_factory=GridSpec)
    ablations: AblationSpec = field(default_factory=AblationSpec)
    report: ReportSpec = field(default_factory=ReportSpec)
    notes: str = ""  # free text appended to the report's caption
    # the runs CSV; None = <out_dir>/<name>_runs.csv. Studies whose data set and training
    # settings agree may share one file: a run either trained is reused by the other
    runs: str | None = None
    # every data set's and search setting's epochs × this, rounded, at least 1 (for pilots)
    epochs_scale: float = 1.0
    # at most this many of each data set's tuning seeds, the first ones (pilots); None = all
    tune_seeds_limit: int | None = None

    @property
    def runs_csv(self) -> Path:
        return Path(self.runs) if self.runs else Path(self.out_dir) / f"{self.name}_runs.csv"

    def validate(self) -> None:
        if not self.datasets:
            raise ValueError("at least one data set is needed under `datasets`")
        if not self.seeds or self.workers < 1 or self.threads < 1:
            raise ValueError("seeds must be non-empty; workers, threads >= 1")
        if self.epochs_scale <= 0:
            raise ValueError("epochs_scale must be > 0")
        if self.tune_seeds_limit is not None and self.tune_seeds_limit < 1:
            raise ValueError("tune_seeds_limit must be null or >= 1")
        bad = [loss for loss in self.losses if loss not in STUDY_LOSSES]
        if bad:
            raise ValueError(f"unknown losses {bad}; choose from {list(STUDY_LOSSES)}")
        if self.report.best_epoch and not self.train.eval_epochs:
            raise ValueError("report.best_epoch needs train.eval_epochs: true")
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"data set names repeat: {names}")
        a = self.ablations
        named = (
            a.datasets + a.libauc_datasets + a.two_stage_datasets + [s.dataset for s in a.search]
        )
        named += [a.oversample_dataset] if a.oversample_dataset else []
        missing = [d for d in named if d not in names]
        if missing:
            raise ValueError(f"ablations.datasets {missing} are not among the datasets {names}")


def load_study_config(path: str | Path, overrides: Sequence[str] = ()) -> StudyConfig:
    """The study config at ``path`` with ``key=value`` overrides applied, validated, its
    epochs scaled by ``epochs_scale`` and its tuning seeds cut to ``tune_seeds_limit``."""
    cfg = load_config(path, StudyConfig, list(overrides))
    if cfg.tune_seeds_limit is not None:
        for spec in cfg.datasets:
            spec.tune_seeds = (spec.tune_seeds or cfg.seeds[:1])[: cfg.tune_seeds_limit]
    if cfg.epochs_scale != 1:
        for spec in cfg.datasets:
            spec.epochs = _scaled(spec.epochs, cfg.epochs_scale)
        for search in cfg.ablations.search:
            if search.epochs is not None:
                search.epochs = _scaled(search.epochs, cfg.epochs_scale)
    return cfg


def _scaled(epochs: int, scale: float) -> int:
    return max(1, int(round(epochs * scale)))
