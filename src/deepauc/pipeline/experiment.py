"""The experiment YAML schema shared by ``deepauc train`` and ``deepauc predict``."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from deepauc.config import check_dir_name, load_config, to_dict
from deepauc.data.augment import AugmentConfig


@dataclass
class DataConfig:
    train_csv: str  # the folds table (``deepauc folds`` output)
    test_csv: str = ""  # empty: no test predictions
    cache_dir: str = "data/cache"
    image_size: int = 64
    use_external: bool = True  # train on fold == -1 rows (external data) too

    def validate(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"data.image_size must be >= 16, got {self.image_size}")


@dataclass
class ModelConfig:
    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool | str = False  # false | true (timm hub) | "lite0-package" | weights path
    drop_rate: float = 0.2
    drop_path_rate: float = 0.0
    init_from: str | None = None  # stage-2: a models/<name> dir whose fold weights start this run

    def validate(self) -> None:
        from deepauc.models.factory import check_backbone

        check_backbone(self.backbone)
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

    def validate(self) -> None:
        if self.margin <= 0:
            raise ValueError(f"loss.margin must be > 0, got {self.margin}")
        if self.imratio is not None and not 0 < self.imratio < 1:
            raise ValueError(f"loss.imratio must lie in (0, 1), got {self.imratio}")
        if not 0 < self.focal_alpha < 1 or self.focal_gamma < 0:
            raise ValueError("loss.focal_alpha must lie in (0, 1) and loss.focal_gamma be >= 0")


@dataclass
class OptimConfig:
    name: Literal["adam", "adamw", "sgd", "pesg"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0
    epoch_decay: float = 2e-3  # PESG's γ
    dual: Literal["normalized", "paper"] = "normalized"  # PESG's dual step

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

    def validate(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"schedule.epochs must be >= 1, got {self.epochs}")
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


@dataclass
class LoopConfig:
    batch_size: int = 64
    num_workers: int = 0
    seed: int = 0
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"  # auto: bf16/fp16 on CUDA, off on CPU
    channels_last: bool = True
    compile: bool = False
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    max_steps_per_epoch: int = 0  # 0 = full epochs (tests use a few steps)
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    checkpoint: Literal["last", "best"] = "last"  # which epoch's weights predict uses
    eval_every: int = 1  # validate every N epochs (and always at the end)

    def validate(self) -> None:
        if self.batch_size < 2:
            raise ValueError(f"train.batch_size must be >= 2, got {self.batch_size}")
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

    def fold_ids(self) -> list[int]:
        return list(range(self.n_folds)) if self.folds is None else list(self.folds)

    def run_dir(self, fold: int) -> Path:
        return Path(self.models_dir) / self.name / f"fold{fold}"

    def fingerprint(self) -> str:
        """Hash of everything that changes the trained weights (not paths or worker counts).

        No path enters it: the tables, the cached images and the stage-1 weights are keyed
        by content in the training record (deepauc.provenance.training_record), so
        ``./data/x.csv`` against ``data/x.csv`` or a moved data root changes nothing. A
        pretrained-weights file counts by its bytes.
        """
        d = to_dict(self)
        for key in ["models_dir", "preds_dir", "tta", "folds"]:
            d.pop(key)
        for key in ["cache_dir", "train_csv", "test_csv"]:
            d["data"].pop(key)
        d["model"]["init_from"] = d["model"]["init_from"] is not None  # stage 2 or not
        weights = d["model"]["pretrained"]
        if isinstance(weights, str) and Path(weights).is_file():
            digest = hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:16]
            d["model"]["pretrained"] = f"file sha256 {digest}"
        d["train"] = {
            k: v for k, v in d["train"].items() if k not in ("num_workers", "threads", "eval_every")
        }
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def load_experiment(path: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load and validate an experiment YAML (see :class:`ExperimentConfig`)."""
    return load_config(path, ExperimentConfig, overrides)
