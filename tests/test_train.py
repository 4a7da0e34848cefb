"""Training and prediction stages on a tiny cached data set (32 px, a few steps)."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from deepauc.config import ConfigError
from deepauc.data.augment import dihedral_views
from deepauc.pipeline.experiment import load_experiment
from deepauc.pipeline.predict import predict_experiment, tta_predict
from deepauc.pipeline.schedule import lr_at
from deepauc.pipeline.train import split_fold, train_fold
from helpers import write_experiment


def test_split_fold_keeps_external_rows_out_of_validation(tiny_data):
    table = pd.read_csv(tiny_data["train_csv"])
    train, valid = split_fold(table, 0, use_external=True)
    assert set(valid["fold"]) == {0}
    assert (train["fold"] == -1).sum() == 2 and not (train["fold"] == 0).any()
    train_no_ext, _ = split_fold(table, 0, use_external=False)
    assert (train_no_ext["fold"] == -1).sum() == 0


def test_train_then_predict_writes_every_oof_row_once(tiny_data):
    cfg = load_experiment(write_experiment(tiny_data, "ce"))
    for fold in range(3):
        path = train_fold(cfg, fold, torch.device("cpu"))
        assert path.is_file()
        log = pd.read_csv(path.parent / "log.csv")
        assert len(log) == 1 and np.isfinite(log["train_loss"]).all()
        assert not (path.parent / "checkpoint.pt").exists()
    out = predict_experiment(cfg, torch.device("cpu"))
    oof = pd.read_csv(out / "oof.csv")
    table = pd.read_csv(tiny_data["train_csv"])
    validated = table[table["fold"] >= 0]
    assert sorted(oof["image_name"]) == sorted(validated["image_name"])
    assert oof["pred"].between(0, 1).all()
    test = pd.read_csv(out / "test.csv")
    assert list(test["image_name"]) == list(pd.read_csv(tiny_data["test_csv"])["image_name"])
    folds = pd.read_csv(out / "test_folds.csv")
    np.testing.assert_allclose(folds[["fold0", "fold1", "fold2"]].mean(axis=1), test["pred"])
    notta = pd.read_csv(out.parent / "ce-notta" / "oof.csv")
    assert not np.allclose(notta["pred"], oof["pred"])  # 8 views differ from the identity view


def test_two_stage_swaps_head_and_loss(tiny_data):
    ce = load_experiment(write_experiment(tiny_data, "stage1", folds=[0]))
    train_fold(ce, 0, torch.device("cpu"))
    stage1 = torch.load(ce.run_dir(0) / "model.pt", weights_only=True)["model"]
    aucm = load_experiment(
        write_experiment(
            tiny_data,
            "stage2",
            folds=[0],
            model={"init_from": str(ce.run_dir(0).parent)},
            loss={"name": "auc_m", "margin": 0.5},
            optim={"name": "pesg", "lr": 1e-9, "weight_decay": 0.0, "epoch_decay": 0.0},
        )
    )
    path = train_fold(aucm, 0, torch.device("cpu"))
    stage2 = torch.load(path, weights_only=True)["model"]
    head = [k for k in stage1 if k.startswith("classifier.")]
    body = [
        k
        for k in stage1
        if not k.startswith("classifier.") and stage1[k].is_floating_point() and "running" not in k
    ]
    assert head and body
    # with lr ~ 0 the backbone barely moves, while the head is a fresh draw
    for k in body:
        torch.testing.assert_close(stage1[k], stage2[k], rtol=0, atol=1e-6)
    assert any(not torch.allclose(stage1[k], stage2[k]) for k in head)
    log = pd.read_csv(path.parent / "log.csv")
    assert {"a", "b", "alpha"} <= set(log.columns)  # the AUC-M loss's variables were trained


def test_two_stage_without_stage1_is_a_clear_error(tiny_data):
    cfg = load_experiment(
        write_experiment(tiny_data, "orphan", folds=[0], model={"init_from": "models/none"})
    )
    with pytest.raises(FileNotFoundError, match="stage-1 weights not found"):
        train_fold(cfg, 0, torch.device("cpu"))


class FlipInvariant(nn.Module):
    """Pointwise conv + global average pool: invariant to every flip and rotation."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).mean((2, 3)))


def test_tta_of_flip_invariant_model_equals_plain_prediction(tiny_data):
    cfg = load_experiment(write_experiment(tiny_data, "tta", train={"channels_last": False}))
    torch.manual_seed(0)
    model = FlipInvariant().eval()
    table = pd.read_csv(tiny_data["test_csv"])
    tta, plain = tta_predict(model, table, cfg, torch.device("cpu"))
    np.testing.assert_allclose(tta, plain, rtol=1e-5)
    assert np.ptp(plain) > 0


def test_dihedral_views_are_the_eight_symmetries():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    views = dihedral_views(x, 8)
    assert views.shape == (8, 1, 4, 4)
    flat = {tuple(v.flatten().tolist()) for v in views}
    assert len(flat) == 8
    assert torch.equal(views[0], x[0])


def test_cyclic_schedule_goes_up_and_down():
    from deepauc.config import from_dict
    from deepauc.pipeline.experiment import ExperimentConfig

    cfg = from_dict(
        ExperimentConfig,
        {
            "name": "x",
            "data": {"train_csv": "f.csv"},
            "optim": {"lr": 2.4e-4},
            "schedule": {"name": "cyclic", "epochs": 16, "min_lr": 3e-5, "cycle_epochs": 8},
        },
    )
    assert lr_at(cfg, 0) == pytest.approx(3e-5)
    assert lr_at(cfg, 4) == pytest.approx(2.4e-4)
    assert lr_at(cfg, 8) == pytest.approx(3e-5)
    assert lr_at(cfg, 10) == pytest.approx(3e-5 + 0.5 * (2.4e-4 - 3e-5))


@pytest.mark.parametrize(
    "section,value,match",
    [
        ("optim", {"lr": -0.1}, "optim: optim.lr must be > 0"),
        ("loss", {"margin": 0}, "margin"),
        ("loss", {"imratio": 1.5}, "imratio"),
        ("model", {"backbone": "efficientnet_b99"}, "unknown backbone"),
        ("optim", {"lr": "fast"}, "optim.lr: expected a number"),
        ("train", {"batchsize": 8}, r"unknown key\(s\) \['train.batchsize'\]"),
    ],
)
def test_bad_config_rejected_naming_the_key(tiny_data, section, value, match):
    path = write_experiment(tiny_data, "bad", **{section: value})
    with pytest.raises(ConfigError, match=match):
        load_experiment(path)


def _resume_equals_straight(tiny_data, monkeypatch, sections: dict, crash_epoch: int, tag: str):
    """Train once straight; train again killed in ``crash_epoch`` (0-based) and rerun: the
    final weights must be equal."""
    import deepauc.pipeline.train as train_mod

    straight = load_experiment(write_experiment(tiny_data, f"{tag}_straight", **sections))
    train_fold(straight, 0, torch.device("cpu"))
    interrupted = load_experiment(write_experiment(tiny_data, f"{tag}_killed", **sections))
    real_run_epoch = train_mod.run_epoch

    def crash(cfg, *args):
        if args[-2] == crash_epoch:  # the 0-based epoch argument
            raise KeyboardInterrupt("killed")
        return real_run_epoch(cfg, *args)

    monkeypatch.setattr(train_mod, "run_epoch", crash)
    with pytest.raises(KeyboardInterrupt):
        train_fold(interrupted, 0, torch.device("cpu"))
    assert (interrupted.run_dir(0) / "checkpoint.pt").exists()
    assert not (interrupted.run_dir(0) / "model.pt").exists()
    monkeypatch.setattr(train_mod, "run_epoch", real_run_epoch)
    train_fold(interrupted, 0, torch.device("cpu"))
    a = torch.load(straight.run_dir(0) / "model.pt", weights_only=True)["model"]
    b = torch.load(interrupted.run_dir(0) / "model.pt", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_after_interruption_equals_uninterrupted(tiny_data, monkeypatch):
    common = dict(
        folds=[0],
        schedule={"name": "stagewise", "epochs": 3, "decay_epochs": [1]},
        loss={"name": "auc_m"},
        optim={"name": "pesg", "lr": 0.05, "momentum": 0.5},
    )
    _resume_equals_straight(tiny_data, monkeypatch, common, crash_epoch=2, tag="plain")


def test_checkpoint_from_other_config_refused(tiny_data):
    cfg = load_experiment(
        write_experiment(tiny_data, "resumable", folds=[0], schedule={"epochs": 2})
    )
    run_dir = cfg.run_dir(0)
    run_dir.mkdir(parents=True)
    torch.save({"fingerprint": "0000", "epoch": 1}, run_dir / "checkpoint.pt")
    with pytest.raises(ValueError, match="different config"):
        train_fold(cfg, 0, torch.device("cpu"))


def _schedule_cfg(**schedule):
    from deepauc.config import from_dict
    from deepauc.pipeline.experiment import ExperimentConfig

    return from_dict(
        ExperimentConfig,
        {"name": "x", "data": {"train_csv": "f.csv"}, "optim": {"lr": 0.2}, "schedule": schedule},
    )


def test_warmup_scales_every_schedule_linearly_then_lets_go():
    cyc = dict(name="cyclic", epochs=16, min_lr=0.02, cycle_epochs=8)
    plain, warm = _schedule_cfg(**cyc), _schedule_cfg(**cyc, warmup_epochs=2)
    for t in (0.0, 0.5, 1.0, 1.5):
        assert lr_at(warm, t) == pytest.approx(lr_at(plain, t) * t / 2)
        assert lr_at(warm, t, 0.25) == pytest.approx(lr_at(plain, t) * (t + 0.25) / 2)
    assert lr_at(warm, 1.75, 0.25) == pytest.approx(lr_at(plain, 1.75))
    for t in (2.0, 3.7, 9.0):
        assert lr_at(warm, t) == pytest.approx(lr_at(plain, t))
    stage = _schedule_cfg(name="stagewise", epochs=4, decay_epochs=[2], warmup_epochs=0.5)
    assert [lr_at(stage, t) for t in (0.0, 0.25, 0.5, 3.0)] == pytest.approx([0, 0.1, 0.2, 0.2])


@pytest.mark.parametrize(
    "schedule, message",
    [
        ({"epochs": 3, "warmup_epochs": 3}, r"warmup_epochs must lie in \[0, epochs 3\)"),
        ({"epochs": 3, "warmup_epochs": -1}, "warmup_epochs must lie in"),
        (
            {"name": "stagewise", "epochs": 5, "decay_epochs": [1, 3], "warmup_epochs": 1.5},
            "runs past the first decay epoch 1",
        ),
    ],
)
def test_bad_warmup_is_refused_naming_the_key(schedule, message):
    with pytest.raises(ConfigError, match=message):
        _schedule_cfg(**schedule)


def test_warmup_in_a_pesg_run_then_the_stage_decay(tiny_data, monkeypatch):
    """Epoch 1 warms up step by step; PESG's stage end then divides the warmed-up lr."""
    import deepauc.pipeline.steps as steps_module

    seen: list[float] = []
    real_set_lr = steps_module.set_lr

    def spy(optimizer, lr):
        seen.append(lr)
        real_set_lr(optimizer, lr)

    monkeypatch.setattr(steps_module, "set_lr", spy)
    path = write_experiment(
        tiny_data,
        "warm",
        folds=[0],
        loss={"name": "auc_m"},
        optim={"name": "pesg", "lr": 0.08},
        schedule={"name": "stagewise", "epochs": 2, "decay_epochs": [1], "warmup_epochs": 1},
    )
    cfg = load_experiment(str(path))
    train_fold(cfg, 0, torch.device("cpu"))
    steps = len(seen)  # set before every step of epoch 1 only
    assert steps >= 2 and seen == pytest.approx([0.08 * k / steps for k in range(1, steps + 1)])
    log = pd.read_csv(cfg.run_dir(0) / "log.csv")  # lr after each epoch's end
    assert log["lr"].tolist() == pytest.approx([0.04, 0.04])


# ---- train.ema_decay: the moving average is what validates, is saved and resumes
_EMA_RUN = dict(
    folds=[0],
    loss={"name": "auc_m"},
    optim={"name": "pesg", "lr": 0.05, "momentum": 0.5},
    schedule={"name": "stagewise", "epochs": 2, "decay_epochs": [1]},
    train={"ema_decay": 0.8, "max_steps_per_epoch": 3},
)


def test_ema_weights_are_the_moving_average_of_every_step(tiny_data, monkeypatch):
    import deepauc.pipeline.steps as steps_module

    snapshots: list[dict] = []
    real_train_step = steps_module.train_step

    def spy(state, x, y):
        if not snapshots:
            snapshots.append({k: v.clone() for k, v in state.model.state_dict().items()})
        out = real_train_step(state, x, y)
        snapshots.append({k: v.clone() for k, v in state.model.state_dict().items()})
        return out

    monkeypatch.setattr(steps_module, "train_step", spy)
    cfg = load_experiment(str(write_experiment(tiny_data, "ema", **_EMA_RUN)))
    saved = torch.load(train_fold(cfg, 0, torch.device("cpu")), weights_only=True)["model"]
    assert len(snapshots) == 1 + 2 * 3
    expected = {k: v.double() for k, v in snapshots[0].items()}
    for weights in snapshots[1:]:
        for k, v in weights.items():
            if v.is_floating_point():  # e ← d·e + (1 - d)·w; counters are copied
                expected[k] = 0.8 * expected[k] + 0.2 * v.double()
            else:
                expected[k] = v.double()
    raw = snapshots[-1]
    moved = [k for k in saved if saved[k].is_floating_point() and not torch.equal(saved[k], raw[k])]
    assert moved  # the saved weights are not the last step's
    for k in saved:
        assert torch.allclose(saved[k].double(), expected[k], atol=1e-6), k


def test_ema_run_resumes_to_the_same_weights(tiny_data, monkeypatch):
    _resume_equals_straight(tiny_data, monkeypatch, _EMA_RUN, crash_epoch=1, tag="ema")


@pytest.mark.parametrize("value", [0, 1, 1.5])
def test_bad_ema_decay_is_refused(tiny_data, value):
    path = write_experiment(tiny_data, "bad_ema", train={"ema_decay": value})
    with pytest.raises(ConfigError, match=r"train.ema_decay must be null or lie in \(0, 1\)"):
        load_experiment(path)


def test_tensorboard_holds_each_epochs_log_row(tiny_data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = dict(_EMA_RUN, train={"max_steps_per_epoch": 2, "tensorboard": True})
    cfg = load_experiment(str(write_experiment(tiny_data, "tb", **run)))
    quiet = load_experiment(
        str(write_experiment(tiny_data, "tb", **dict(run, train={"max_steps_per_epoch": 2})))
    )
    assert cfg.fingerprint() == quiet.fingerprint()  # watching a run does not change it
    train_fold(cfg, 0, torch.device("cpu"))
    events = EventAccumulator(str(cfg.run_dir(0) / "tensorboard"))
    events.Reload()
    log = pd.read_csv(cfg.run_dir(0) / "log.csv")
    assert {"lr", "train_loss", "val_auc", "a", "b", "alpha"} <= set(events.Tags()["scalars"])
    for key in ("lr", "train_loss", "val_auc", "alpha"):
        got = [(e.step, e.value) for e in events.Scalars(key)]
        assert got == [(e, pytest.approx(v, rel=1e-6)) for e, v in zip(log["epoch"], log[key])]
