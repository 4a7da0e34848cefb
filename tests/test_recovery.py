"""Sessions: a mid-epoch recovery checkpoint resumes to the uninterrupted run's weights,
DEEPAUC_DEADLINE stops cleanly with its own exit code, SIGTERM is handled as Ctrl-C;
positive oversampling in the pipeline's batches."""

import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

import deepauc.pipeline.recovery as recovery
import deepauc.pipeline.steps as steps
from deepauc.cli import main
from deepauc.data.sampling import PositiveShare
from deepauc.pipeline.experiment import load_experiment
from deepauc.pipeline.train import EXIT_TIME_BUDGET, TimeBudgetReached, train_fold
from helpers import cpu_subprocess_env, write_experiment

CPU = torch.device("cpu")
RUN = dict(
    folds=[0],
    loss={"name": "auc_m"},
    optim={"name": "pesg", "lr": 0.05, "momentum": 0.5, "epoch_decay": 0.003},
    schedule={"name": "cosine", "epochs": 2},  # the lr moves every step
    model={"backbone": "mobilenetv3_small_050", "pretrained": False, "drop_rate": 0.3},
    train={"batch_size": 4, "max_steps_per_epoch": 0, "seed": 3, "recovery_minutes": 2.5},
)  # 32 training rows: 8 steps an epoch, dropout on, augmentation on


def _fake_clock(monkeypatch, minutes_per_step=1.0):
    """Recovery's clock advances one minute per training step."""
    clock = {"t": 1_000_000.0}
    real_step = steps.train_step

    def step(*args):
        clock["t"] += 60 * minutes_per_step
        return real_step(*args)

    monkeypatch.setattr(recovery, "now", lambda: clock["t"])
    monkeypatch.setattr(steps, "train_step", step)
    return clock


def straight_and_stopped(tiny_data, monkeypatch):
    """A fold trained straight through, and the same fold stopped by the deadline after 11
    steps (epoch 2, step 3; the recovery saves at steps 3 and 6 came before); the real
    clock is back and no deadline is set on return."""
    monkeypatch.delenv("DEEPAUC_DEADLINE", raising=False)
    straight = load_experiment(write_experiment(tiny_data, "straight", **RUN))
    train_fold(straight, 0, CPU)
    cut = load_experiment(write_experiment(tiny_data, "cut", **RUN))
    clock = _fake_clock(monkeypatch)
    monkeypatch.setenv("DEEPAUC_DEADLINE", str(clock["t"] + 60 * 11 - 1))
    with pytest.raises(TimeBudgetReached, match="epoch 2 step 3 of 8"):
        train_fold(cut, 0, CPU)
    monkeypatch.undo()
    monkeypatch.delenv("DEEPAUC_DEADLINE", raising=False)
    return straight, cut


def final_weights(cfg) -> dict:
    return torch.load(cfg.run_dir(0) / "model.pt", weights_only=True)["model"]


def test_recovery_checkpoint_mid_epoch_resumes_exactly(tiny_data, monkeypatch):
    straight, cut = straight_and_stopped(tiny_data, monkeypatch)
    saved = torch.load(cut.run_dir(0) / "checkpoint.pt", weights_only=False)
    assert saved["epoch"] == 1 and saved["mid_epoch"]["step"] == 3
    assert not (cut.run_dir(0) / "model.pt").exists()

    train_fold(cut, 0, CPU)
    assert "resuming epoch 2 at step 3" in (cut.run_dir(0) / "train.log").read_text()
    a, b = final_weights(straight), final_weights(cut)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    cols = ["epoch", "lr", "train_loss", "val_auc", "a", "b", "alpha"]
    log_a = pd.read_csv(straight.run_dir(0) / "log.csv")[cols]
    log_b = pd.read_csv(cut.run_dir(0) / "log.csv")[cols]
    pd.testing.assert_frame_equal(log_a, log_b, check_exact=True)


def test_a_resume_without_the_saved_rng_differs(tiny_data, monkeypatch):
    """The control: the restored RNG state matters (dropout differs without it)."""
    import deepauc.pipeline.train as train_mod

    straight, cut = straight_and_stopped(tiny_data, monkeypatch)
    monkeypatch.setattr(train_mod, "set_rng_states", lambda state: None)
    train_fold(cut, 0, CPU)
    a, b = final_weights(straight), final_weights(cut)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_deadline_stops_with_its_own_exit_code(tiny_data, monkeypatch, capsys):
    path = write_experiment(tiny_data, "budget", **RUN)
    monkeypatch.setenv("DEEPAUC_DEADLINE", str(time.time() - 1))  # already passed
    assert main(["train", "--config", str(path)]) == EXIT_TIME_BUDGET
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "DEEPAUC_DEADLINE reached: stopped at epoch 1 step 1 of 8" in err
    assert "rerun the same command" in err
    cfg = load_experiment(path)
    assert (cfg.run_dir(0) / "checkpoint.pt").exists()
    assert not (cfg.run_dir(0) / "model.pt").exists()


def test_a_malformed_deadline_is_one_line(tiny_data, monkeypatch, capsys):
    monkeypatch.setenv("DEEPAUC_DEADLINE", "tonight")
    assert main(["train", "--config", str(write_experiment(tiny_data, "x", **RUN))]) == 1
    assert "DEEPAUC_DEADLINE='tonight'" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="needs SIGTERM")
def test_sigterm_is_handled_like_ctrl_c(tiny_data):
    run = {**RUN, "schedule": {"name": "constant", "epochs": 30}}
    path = write_experiment(tiny_data, "term", **run)
    cmd = [sys.executable, "-m", "deepauc", "train", "--config", str(path)]
    proc = subprocess.Popen(
        cmd, env=cpu_subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    ckpt = load_experiment(path).run_dir(0) / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not ckpt.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(
            "deepauc train: interrupted; rerun the same command to resume term fold 0 from epoch"
        )
    )
    assert "Traceback" not in err
    assert not (ckpt.parent / "model.pt").exists()


def test_positive_share_sampler():
    y = np.zeros(100)
    y[:7] = 1  # 7 % positive
    rows = list(PositiveShare(y, 10, 0.25, seed=1, epoch=0))
    batches = [rows[i : i + 10] for i in range(0, len(rows), 10)]
    assert len(batches) == 10 and all(len(b) == 10 for b in batches)  # n // B batches
    # round(0.25 * 10) = 2 positives in every batch, as the study's batches
    from deepauc.research.study.sampling import epoch_batches

    study = epoch_batches(torch.as_tensor(y), 10, 0.25, torch.Generator().manual_seed(0))
    assert {int(y[b].sum()) for b in batches} == {int(y[s.numpy()].sum()) for s in study} == {2}
    # each positive drawn 20 // 7 or one more times: passes over the positives
    counts = np.bincount([r for r in rows if y[r] == 1], minlength=7)
    assert set(counts) <= {2, 3}
    assert rows == list(PositiveShare(y, 10, 0.25, seed=1, epoch=0))  # reproducible
    assert rows != list(PositiveShare(y, 10, 0.25, seed=1, epoch=1))  # a new order per epoch
    # two ranks: their step-j rows together are batch j; start skips whole steps
    shards = [list(PositiveShare(y, 10, 0.25, 1, 0, rank, 2)) for rank in range(2)]
    for j, batch in enumerate(batches):
        assert sorted(shards[0][5 * j : 5 * j + 5] + shards[1][5 * j : 5 * j + 5]) == sorted(batch)
    assert list(PositiveShare(y, 10, 0.25, 1, 0, start=30)) == rows[30:]
    with pytest.raises(ValueError, match="positive and negative"):
        PositiveShare(np.zeros(10), 5, 0.2, 0, 0)


def test_pipeline_batches_hold_the_positive_share(tiny_data, monkeypatch):
    seen = []
    real_step = steps.train_step

    def step(state, x, y):
        seen.append(float(y.sum()))
        return real_step(state, x, y)

    monkeypatch.setattr(steps, "train_step", step)
    train = {"batch_size": 8, "max_steps_per_epoch": 0, "pos_fraction": 0.5, "accumulate": 2}
    cfg = load_experiment(write_experiment(tiny_data, "over", folds=[0], train=train))
    train_fold(cfg, 0, CPU)
    assert seen == [4.0] * 4  # 32 rows, 25 % positive: every batch of 8 holds 4
