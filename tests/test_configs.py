"""Every shipped YAML loads against its schema, and its name matches what the Makefile expects."""

from pathlib import Path

import pytest

from deepauc.config import ConfigError, load_config
from deepauc.pipeline.ensemble import EnsembleConfig
from deepauc.pipeline.experiment import load_experiment
from deepauc.pipeline.metadata_model import MetaConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted(
    p
    for p in CONFIGS.glob("*/*.yaml")
    if p.parent.name in ("demo", "siim")
    and p.stem not in ("ensemble",)
    and not p.stem.startswith("meta")
)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_experiment_configs_load_and_are_named_after_their_file(path):
    cfg = load_experiment(path)
    assert cfg.name == f"{path.parent.name}_{path.stem}"
    if cfg.model.init_from:
        assert Path(cfg.model.init_from).name.startswith(f"{path.parent.name}_ce_")
        assert cfg.loss.name.startswith("auc") and cfg.optim.name == "pesg"


@pytest.mark.parametrize("exp", ["demo", "siim"])
def test_meta_and_ensemble_configs_load(exp):
    meta = load_config(CONFIGS / exp / "meta_mlp.yaml", MetaConfig)
    assert meta.name == f"{exp}_meta_mlp" and meta.hidden == [256, 128]
    ens = load_config(CONFIGS / exp / "ensemble.yaml", EnsembleConfig)
    assert ens.name == f"{exp}_ensemble"
    for member in ens.members:
        stem = Path(member).name.removeprefix(f"{exp}_").removesuffix("+meta")
        assert (CONFIGS / exp / f"{stem}.yaml").is_file(), member


def test_siim_configs_follow_the_paper_recipe():
    ce = load_experiment(CONFIGS / "siim/ce_b5_384.yaml")
    assert (ce.schedule.name, ce.schedule.min_lr, ce.optim.lr, ce.schedule.cycle_epochs) == (
        "cyclic",
        3e-5,
        2.4e-4,
        8,
    )
    assert ce.schedule.epochs == 16 and ce.optim.weight_decay == 1e-5
    aucm = load_experiment(CONFIGS / "siim/aucm_b5_384.yaml")
    assert aucm.optim.epoch_decay == pytest.approx(1 / 500) and aucm.optim.lr == 0.01
    assert aucm.schedule.epochs == 35 and aucm.schedule.decay_epochs == [10, 20, 30]
    assert aucm.loss.margin in (0.3, 0.5, 0.7, 1.0)
    assert aucm.tta.dihedral + aucm.tta.n_random == 30


@pytest.mark.parametrize(
    "value, expected", [("true", True), ("logits", "logits"), ("sigmoid", "sigmoid")]
)
def test_batch_score_norm_takes_the_loss_settings(value, expected):
    cfg = load_experiment("configs/demo/aucm_lite0_64.yaml", [f"loss.batch_score_norm={value}"])
    assert cfg.loss.batch_score_norm == expected


def test_batch_score_norm_refuses_an_unknown_setting():
    with pytest.raises(ConfigError, match="loss.batch_score_norm"):
        load_experiment("configs/demo/aucm_lite0_64.yaml", ["loss.batch_score_norm=l2"])
