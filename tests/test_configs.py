"""Every shipped YAML loads against its schema, and its name matches what the Makefile expects."""

from pathlib import Path

import pytest

from deepauc.config import ConfigError, load_config
from deepauc.pipeline.ensemble import EnsembleConfig
from deepauc.pipeline.experiment import load_experiment
from deepauc.pipeline.metadata_model import MetaConfig
from helpers import make_dry_run, make_workdir

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted(
    p
    for p in CONFIGS.glob("*/*.yaml")
    if p.parent.name in ("demo", "siim")
    and p.stem not in ("ensemble",)
    and not p.stem.startswith("_")  # a base file, read through the model files
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


# ---- base: a config file on top of a base file beside it
def _write(folder, name, text):
    path = folder / name
    path.write_text(text)
    return path


def test_base_chain_merges_mappings_and_replaces_other_values(tmp_path):
    from deepauc.config import read_config_mapping

    _write(tmp_path, "_root.yaml", "a: 1\nsection: {x: 1, y: [1, 2], deep: {p: 1, q: 2}}\n")
    _write(tmp_path, "_mid.yaml", "base: _root.yaml\nsection: {y: [3], deep: {q: 5}}\nb: 2\n")
    top = _write(tmp_path, "top.yaml", "base: _mid.yaml\nsection: {x: 7}\nb: 9\n")
    assert read_config_mapping(top) == {
        "a": 1,
        "b": 9,
        "section": {"x": 7, "y": [3], "deep": {"p": 1, "q": 5}},
    }


def test_the_siim_model_files_resolve_to_their_whole_recipe():
    """The six model files set at most 8 keys each; their base files give the rest (30 more)."""
    from deepauc.config import read_config_mapping

    def leaves(d):
        return sum(leaves(v) if isinstance(v, dict) and k != "memory" else 1 for k, v in d.items())

    import yaml

    for path in sorted((CONFIGS / "siim").glob("[ac]*_*.yaml")):
        own = yaml.safe_load(path.read_text())
        assert own["base"] in ("_ce.yaml", "_aucm.yaml")
        assert leaves(own) - 1 <= 8 and leaves(read_config_mapping(path)) >= leaves(own) + 30, path
        cfg = load_experiment(path)
        assert cfg.data.cache_dir == "data/cache/siim" and cfg.augment.rotate == 180


@pytest.mark.parametrize(
    "files, message",
    [
        (
            {
                "top.yaml": "base: _a.yaml\n",
                "_a.yaml": "base: _b.yaml\n",
                "_b.yaml": "base: _a.yaml\n",
            },
            "base files form a loop",
        ),
        (
            {"top.yaml": "base: common.yaml\n", "common.yaml": "n_folds: 3\n"},
            "base: expected the name of a _*.yaml file in the same folder, got 'common.yaml'",
        ),
        ({"top.yaml": "base: ../_x.yaml\n"}, "expected the name of a _*.yaml file"),
        ({"top.yaml": "base: [_x.yaml]\n"}, "expected the name of a _*.yaml file"),
    ],
)
def test_a_bad_base_is_one_line_naming_the_file(tmp_path, files, message):
    for name, text in files.items():
        _write(tmp_path, name, text)
    with pytest.raises(ConfigError, match="top.yaml") as err:
        load_experiment(tmp_path / "top.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_missing_base_names_the_base_and_who_asked(tmp_path):
    _write(tmp_path, "top.yaml", "base: _gone.yaml\nname: x\n")
    with pytest.raises(FileNotFoundError) as err:
        load_experiment(tmp_path / "top.yaml")
    assert (
        str(err.value)
        == f"config file not found: {tmp_path / '_gone.yaml'} (base of {tmp_path / 'top.yaml'})"
    )


def test_make_redoes_a_model_when_its_base_file_changes(tmp_path):
    """The base files are prerequisites of every model, prediction and submission of the set."""
    make_workdir(tmp_path, configs="", inputs=())
    stdout = make_dry_run(
        tmp_path, "EXP=siim", "help", flags=("-p", "-q"), py="python", check=False
    )
    rules = {
        line.split(":", 1)[0]: line.split(":", 1)[1].split()
        for line in stdout.splitlines()
        if line.startswith(("models/siim_", "preds/siim_", "submissions/siim")) and ":" in line
    }
    bases = {f"configs/siim/{b}" for b in ("_common.yaml", "_ce.yaml", "_aucm.yaml")}
    for target in ("models/siim_aucm_b6_512/fold%/model.pt", "preds/siim_ce_b3_256/oof.csv"):
        assert bases <= set(rules[target]), (target, rules[target])


MINIMAL_DATA = "data:\n  train_csv: t.csv\n  test_csv: t.csv\n  cache_dir: c\n"


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("train:\n  amp: off\n", "off"),
        ("train:\n  amp: 'off'\n", "off"),
        ("train:\n  amp: fp16\n", "fp16"),
    ],
)
def test_a_bare_off_in_yaml_is_the_option_off(tmp_path, written, expected):
    # YAML 1.1 reads a bare `off` as False; the file and `--set train.amp=off` mean "off"
    path = tmp_path / "exp.yaml"
    path.write_text(f"name: exp\n{MINIMAL_DATA}{written}")
    assert load_experiment(str(path)).train.amp == expected
    assert load_experiment(str(path), ["train.amp=off"]).train.amp == "off"


def test_a_bare_on_is_still_refused_where_the_option_does_not_exist(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(f"name: exp\n{MINIMAL_DATA}train:\n  amp: on\n")
    with pytest.raises(ConfigError, match=r"train.amp: 'on' is not one of"):
        load_experiment(str(path))
