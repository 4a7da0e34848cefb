"""The experiment YAML schema shared by ``deepauc train`` and ``deepauc predict``."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from deepauc.config import check_dir_name, load_config, to_dict
from deepauc.data.augment import EXTRA_AUGMENTATIONS, AugmentConfig
from deepauc.data.source_stamps import file_sha256


@dataclass
class DataConfig:
    train_csv: str  # the folds table (``deepauc folds`` output)
    test_csv: str = ""  # empty: no test predictions
    cache_dir: str = "data/cache"
    image_size: int = 64
    use_external: bool = True  # train on fold == -1 rows (external data) too
    # a `deepauc pseudo` table: fold k also trains on the test images its fold<k> column
    # labels (docs/pipeline.md, "Pseudo-labelling"); None = off
    pseudo_csv: str | None = None

    def validate(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"data.image_size must be >= 16, got {self.image_size}")
        if self.pseudo_csv is not None and not (self.pseudo_csv.strip() and self.test_csv):
            raise ValueError(
                "data.pseudo_csv needs a table path and data.test_csv (its rows are test "
                f"images), got pseudo_csv={self.pseudo_csv!r}, test_csv={self.test_csv!r}"
            )


@dataclass
class ModelConfig:
    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool | str = False  # false | true (timm hub) | "lite0-package" | weights path
    drop_rate: float = 0.2
    drop_path_rate: float = 0.0
    init_from: str | None = None  # stage-2: a models/<name> dir whose fold weights start this run
    grad_checkpointing: bool = False  # recompute activations in backward (timm backbones)
    # auxiliary diagnosis classes (deepauc.data.diagnosis): 0 = the binary melanoma head;
    # 9 or 4 = a softmax over the classes in a CE stage, the score softmax[melanoma]
    aux_classes: int = 0

    def validate(self) -> None:
        from deepauc.models.factory import check_backbone, check_grad_checkpointing

        if self.aux_classes not in AUX_CLASS_SETS:
            raise ValueError(
                f"model.aux_classes must be one of {list(AUX_CLASS_SETS)}, got {self.aux_classes}"
            )

        check_backbone(self.backbone)
        if self.grad_checkpointing:
            check_grad_checkpointing(self.backbone)
        if not 0 <= self.drop_rate < 1 or not 0 <= self.drop_path_rate < 1:
            raise ValueError("model.drop_rate and model.drop_path_rate must lie in [0, 1)")


@dataclass
class LossConfig:
    name: Literal["ce", "bce", "focal", "auc_m", "auc_s"] = "ce"
    margin: float = 1.0  # AUC-M's m
    imratio: float | None = None  # None: the training rows' positive ratio
    # True = "logits" (the reference's BSN); "sigmoid" normalises sigmoid scores instead
    batch_score_norm: bool | Literal["none", "logits", "sigmoid"] = False
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    # with model.aux_classes and an AUC loss: "melanoma" (the default then) = a one-output
    # head on the melanoma target; "multilabel" = one AUC-M per class, one-vs-rest
    aux_mode: Literal["melanoma", "multilabel"] | None = None

    def validate(self) -> None:
        if self.margin <= 0:
            raise ValueError(f"loss.margin must be > 0, got {self.margin}")
        if self.imratio is not None and not 0 < self.imratio < 1:
            raise ValueError(f"loss.imratio must lie in (0, 1), got {self.imratio}")
        if not 0 < self.focal_alpha < 1 or self.focal_gamma < 0:
            raise ValueError("loss.focal_alpha must lie in (0, 1) and loss.focal_gamma be >= 0")


AUX_CLASS_SETS = (0, 4, 9)
AUX_LOSSES = ("ce", "auc_m", "auc_s")  # the losses with a multi-class form


def check_aux_targets(model: ModelConfig, loss: LossConfig) -> None:
    """The auxiliary-target keys together: ``loss.aux_mode`` only with ``model.aux_classes``
    and an AUC loss (None there becomes "melanoma"); the classes only with a loss that
    uses them, and in "melanoma" mode only through the stage-1 weights."""
    if not model.aux_classes:
        if loss.aux_mode is not None:
            raise ValueError(f"loss.aux_mode {loss.aux_mode!r} needs model.aux_classes 4 or 9")
        return
    if loss.name not in AUX_LOSSES:
        raise ValueError(
            f"model.aux_classes {model.aux_classes}: loss {loss.name} has no multi-class form; "
            f"use one of {list(AUX_LOSSES)}"
        )
    if loss.name == "ce":
        if loss.aux_mode is not None:
            raise ValueError(
                "loss.aux_mode is for the AUC losses (stage 2); with loss ce, "
                "model.aux_classes trains a softmax over the classes"
            )
        return
    loss.aux_mode = loss.aux_mode or "melanoma"
    if loss.aux_mode == "melanoma" and not model.init_from:
        raise ValueError(
            "loss.aux_mode melanoma: model.aux_classes acts only through the stage-1 "
            "weights; set model.init_from, or model.aux_classes 0"
        )
    if loss.aux_mode == "multilabel" and loss.imratio is not None:
        raise ValueError(
            "loss.imratio: loss.aux_mode multilabel takes each class's ratio from the "
            "training rows; leave it null"
        )


@dataclass
class OptimConfig:
    name: Literal["adam", "adamw", "sgd", "pesg"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0
    epoch_decay: float = 2e-3  # PESG's γ
    dual: Literal["normalized", "paper", "closed_form"] = "normalized"  # PESG's dual step

    def validate(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.epoch_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError("optim.weight_decay/epoch_decay must be >= 0 and momentum in [0, 1)")


@dataclass
class ScheduleConfig:
    name: Literal["constant", "cyclic", "stagewise", "cosine"] = "constant"
    epochs: int = 1
    min_lr: float = 0.0  # cyclic: the low end of the cycle
    cycle_epochs: float = 8.0  # cyclic: one up-and-down cycle
    decay_epochs: list[int] = field(
        default_factory=list
    )  # stagewise: epochs where lr /= decay_factor
    decay_factor: float = 2.0
    # linear warmup from 0 to the schedule's lr over the first warmup_epochs (fractional)
    warmup_epochs: float = 0.0

    def validate(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"schedule.epochs must be >= 1, got {self.epochs}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(
                f"schedule.warmup_epochs must lie in [0, epochs {self.epochs}), got {self.warmup_epochs}"
            )
        if self.warmup_epochs > min(self.decay_epochs, default=float("inf")):
            raise ValueError(
                f"schedule.warmup_epochs {self.warmup_epochs} runs past the first decay epoch "
                f"{min(self.decay_epochs)}: a PESG stage would end inside the warmup"
            )
        if self.decay_factor <= 0 or self.cycle_epochs <= 0 or self.min_lr < 0:
            raise ValueError("schedule.decay_factor and cycle_epochs must be > 0, min_lr >= 0")
        if any(e < 1 for e in self.decay_epochs):
            raise ValueError(f"schedule.decay_epochs must be >= 1, got {self.decay_epochs}")
        past = [e for e in self.decay_epochs if e >= self.epochs]
        if past:
            # a shortened run (e.g. epochs: 1 for a smoke test) keeps the YAML's decays
            # that still fall inside it
            self.decay_epochs = [e for e in self.decay_epochs if e < self.epochs]
            print(
                f"note: schedule.decay_epochs {past} at or past the end "
                f"(epochs: {self.epochs}) dropped",
                file=sys.stderr,
            )


def auto_workers() -> int:
    """Loader workers for ``num_workers: auto``: the CPUs this process may use, shared with
    the other ranks on the machine, less one for the training process, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    per_process = cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(per_process - 1, 8))


def resolve_workers(value: int | str) -> int:
    return auto_workers() if value == "auto" else int(value)


@dataclass
class MemorySetting:
    """How one recipe batch fits a card: micro-batches and activation recomputation."""

    accumulate: int = 1
    grad_checkpointing: bool = False


@dataclass
class LoopConfig:
    batch_size: int = 64  # the effective batch: one optimizer step per batch
    num_workers: int | Literal["auto"] = 0  # auto: see auto_workers
    seed: int = 0
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"  # auto: bf16/fp16 on CUDA, off on CPU
    channels_last: bool = True
    compile: bool = False
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    max_steps_per_epoch: int = 0  # 0 = full epochs (tests use a few steps)
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    checkpoint: Literal["last", "best"] = "last"  # which epoch's weights predict uses
    eval_every: int = 1  # validate every N epochs (and always at the end)
    accumulate: int = 1  # micro-batches per batch (gradient accumulation)
    pos_fraction: float | None = None  # positives' share of every batch; None = plain shuffle
    recovery_minutes: float | None = None  # mid-epoch recovery checkpoint cadence; None = off
    gpu_memory_gb: int | None = None  # picks the train.memory entry for this card size
    memory: dict[int, MemorySetting] = field(default_factory=dict)  # card GB -> settings
    # decay of an exponential moving average of the weights (timm's ModelEmaV3), which then
    # validates and is saved; None = off
    ema_decay: float | None = None
    tensorboard: bool = False  # each epoch's log.csv row as TensorBoard scalars (rank 0)

    def validate(self) -> None:
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"train.ema_decay must be null or lie in (0, 1), got {self.ema_decay}")
        if self.batch_size < 2:
            raise ValueError(f"train.batch_size must be >= 2, got {self.batch_size}")
        self.num_workers = resolve_workers(self.num_workers)
        if self.accumulate < 1 or self.batch_size % self.accumulate:
            raise ValueError(
                f"train.accumulate must be >= 1 and divide train.batch_size {self.batch_size}, "
                f"got {self.accumulate}"
            )
        if self.pos_fraction is not None and not 0 < self.pos_fraction < 1:
            raise ValueError(
                f"train.pos_fraction must be null or lie in (0, 1), got {self.pos_fraction}"
            )
        if self.recovery_minutes is not None and self.recovery_minutes <= 0:
            raise ValueError(f"train.recovery_minutes must be > 0, got {self.recovery_minutes}")
        if any(not isinstance(k, int) or k <= 0 for k in self.memory):
            raise ValueError(f"train.memory keys must be card sizes in GB, got {list(self.memory)}")
        if (
            self.num_workers < 0
            or self.max_steps_per_epoch < 0
            or self.threads < 0
            or self.eval_every < 1
        ):
            raise ValueError(
                "train.num_workers/max_steps_per_epoch/threads must be >= 0, eval_every >= 1"
            )


@dataclass
class TTAConfig:
    dihedral: int = 8  # number of the 8 flips/rotations averaged (1 = no TTA)
    n_random: int = 0  # extra randomly augmented copies (the paper used 30)
    batch_size: int = 128

    def validate(self) -> None:
        if not 1 <= self.dihedral <= 8 or self.n_random < 0:
            raise ValueError("tta.dihedral must be in 1..8 and tta.n_random >= 0")


_LATER_KEYS: list[tuple[str, str, object]] = [("train", "accumulate", 1)]
_LATER_KEYS += [("train", "pos_fraction", None)]
_LATER_KEYS += [("model", "grad_checkpointing", False)]
_LATER_KEYS += [("augment", key, 0.0) for key in EXTRA_AUGMENTATIONS]
_LATER_KEYS += [("augment", "hair_count", 6), ("schedule", "warmup_epochs", 0.0)]
_LATER_KEYS += [("train", "ema_decay", None)]
_LATER_KEYS += [("model", "aux_classes", 0), ("loss", "aux_mode", None)]
_LATER_KEYS += [("data", "pseudo_csv", False)]


@dataclass
class ExperimentConfig:
    name: str
    n_folds: int = 5
    folds: list[int] | None = None  # None: all of 0..n_folds-1
    data: DataConfig = None  # type: ignore[assignment]
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    tta: TTAConfig = field(default_factory=TTAConfig)
    models_dir: str = "models"
    preds_dir: str = "preds"

    def validate(self) -> None:
        if self.data is None:
            raise ValueError("missing required key data (with data.train_csv)")
        check_dir_name(self.name)
        if self.n_folds < 2:
            raise ValueError(f"n_folds must be >= 2, got {self.n_folds}")
        bad = [f for f in self.fold_ids() if not 0 <= f < self.n_folds]
        if bad:
            raise ValueError(f"folds {bad} outside 0..{self.n_folds - 1}")
        check_aux_targets(self.model, self.loss)
        self.apply_memory_setting()

    def apply_memory_setting(self) -> None:
        """``train.gpu_memory_gb`` picks the largest ``train.memory`` entry that fits the card
        and sets ``train.accumulate`` and ``model.grad_checkpointing`` from it; the batch
        (the recipe's) is kept. A config without a ``train.memory`` table fits any card."""
        t = self.train
        if t.gpu_memory_gb is None or not t.memory:
            return
        fitting = [gb for gb in t.memory if gb <= t.gpu_memory_gb]
        if not fitting:
            raise ValueError(
                f"train.gpu_memory_gb={t.gpu_memory_gb}: {self.name} has settings for "
                f"{sorted(t.memory)} GB cards only (train.memory)"
            )
        chosen = t.memory[max(fitting)]
        t.accumulate, self.model.grad_checkpointing = chosen.accumulate, chosen.grad_checkpointing
        if t.batch_size % t.accumulate:
            raise ValueError(
                f"train.memory.{max(fitting)}.accumulate {t.accumulate} does not divide "
                f"train.batch_size {t.batch_size}"
            )
        if t.accumulate > 1 or chosen.grad_checkpointing:
            self.model.validate()

    def fold_ids(self) -> list[int]:
        return list(range(self.n_folds)) if self.folds is None else list(self.folds)

    def run_dir(self, fold: int) -> Path:
        return Path(self.models_dir) / self.name / f"fold{fold}"

    def fingerprint(self) -> str:
        """Hash of everything that changes the trained weights (not paths or worker counts).

        No path enters it: the tables, the cached images and the stage-1 weights are keyed
        by content in the training record (deepauc.pipeline.provenance.training_record), so
        ``./data/x.csv`` against ``data/x.csv`` or a moved data root changes nothing. A
        pretrained-weights file counts by its bytes.
        """
        d = to_dict(self)
        for key in ["models_dir", "preds_dir", "tta", "folds"]:
            d.pop(key)
        for key in ["cache_dir", "train_csv", "test_csv"]:
            d["data"].pop(key)
        d["model"]["init_from"] = d["model"]["init_from"] is not None  # stage 2 or not
        # with pseudo rows or not; their content is in the training record (key ``pseudo``)
        d["data"]["pseudo_csv"] = d["data"]["pseudo_csv"] is not None
        weights = d["model"]["pretrained"]
        if isinstance(weights, str) and Path(weights).is_file():
            d["model"]["pretrained"] = f"file sha256 {file_sha256(weights)[:16]}"
        # how the card fits the batch is kept as its effect (accumulate, grad_checkpointing)
        ignored = ["num_workers", "threads", "eval_every", "recovery_minutes", "gpu_memory_gb"]
        ignored += ["tensorboard", "memory"]
        d["train"] = {k: v for k, v in d["train"].items() if k not in ignored}
        # keys added later count only when set, so runs without them share one fingerprint
        for section, key, default in _LATER_KEYS:
            if d[section].get(key) == default:
                d[section].pop(key)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def load_experiment(path: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load and validate an experiment YAML (see :class:`ExperimentConfig`)."""
    return load_config(path, ExperimentConfig, overrides)
