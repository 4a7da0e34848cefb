"""A real ``deepauc train`` process killed with SIGKILL mid-run resumes to the same weights.

Two subprocesses start together on the tiny data: one runs uninterrupted, the other is
killed with SIGKILL as soon as its first checkpoint (end of epoch 1) exists, i.e. while
it works on a later epoch, then started again with the same command. On CPU with one
thread the restarted run must end with exactly (``torch.equal``) the weights of the
uninterrupted one: model, PESG state (v_ref, stage sums, momentum, α), stagewise lr and
the per-epoch seeds all come back from ``checkpoint.pt``.
"""

import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from helpers import cpu_subprocess_env, write_experiment

EPOCHS = 3
# what a killed run may leave in its fold directory: finished files and io.atomic_path temporaries
ALLOWED = re.compile(
    r"^(checkpoint\.pt|log\.csv|train\.log|\.(checkpoint\.pt|log\.csv)\.[^.]+\.tmp)$"
)

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")


def _start(path, models_dir):
    env = cpu_subprocess_env()
    cmd = [
        sys.executable,
        "-m",
        "deepauc",
        "train",
        "--config",
        str(path),
        "--set",
        f"models_dir={models_dir}",
    ]
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def test_runs_start_on_cpu_even_on_a_gpu_host(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda cmd, env, **kw: started.append(env))
    _start(tmp_path / "x.yaml", tmp_path / "models")
    assert started[0]["CUDA_VISIBLE_DEVICES"] == ""
    assert "WORLD_SIZE" not in started[0]


def test_the_subprocess_environment_hides_every_gpu():
    probe = [sys.executable, "-c", "import torch; print(torch.cuda.is_available())"]
    seen = subprocess.run(probe, env=cpu_subprocess_env(), capture_output=True, text=True)
    assert seen.stdout.strip() == "False", seen.stderr


def test_sigkill_mid_run_then_rerun_equals_uninterrupted(tiny_data):
    path = write_experiment(
        tiny_data,
        "killme",
        folds=[0],
        loss={"name": "auc_m"},
        optim={"name": "pesg", "lr": 0.05, "momentum": 0.5, "epoch_decay": 0.003},
        schedule={"name": "stagewise", "epochs": EPOCHS, "decay_epochs": [2]},
        train={
            "batch_size": 4,
            "max_steps_per_epoch": 0,
            "threads": 1,
            "seed": 3,
        },  # 8 steps an epoch
        model={
            "backbone": "mobilenetv3_small_050",
            "pretrained": False,
            "drop_rate": 0.3,
        },  # dropout on
    )
    root = tiny_data["root"]
    straight = _start(path, root / "straight")
    killed = _start(path, root / "killed")
    run_dir = root / "killed" / "killme" / "fold0"
    ckpt = run_dir / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not ckpt.exists():  # os.replace makes it appear whole
        assert killed.poll() is None, killed.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL

    # nothing a later `make` would take as finished, nothing half-written under a real name
    names = sorted(p.name for p in run_dir.iterdir())
    assert "model.pt" not in names
    assert all(ALLOWED.match(n) for n in names), names
    state = torch.load(ckpt, weights_only=True)
    assert 1 <= state["epoch"] < EPOCHS, "killed after the last epoch: not a mid-run kill"
    assert len(pd.read_csv(run_dir / "log.csv")) >= state["epoch"]
    # a temporary left by a kill during a write is cleaned up by the rerun
    (run_dir / ".model.pt.k1ll3d.tmp").write_bytes(b"half a model")

    out = _wait(_start(path, root / "killed"))
    assert "killme fold 0:" in out
    _wait(straight)
    assert sorted(p.name for p in run_dir.iterdir()) == ["log.csv", "model.pt", "train.log"]
    assert f"resumed {ckpt} at epoch {state['epoch']}" in (run_dir / "train.log").read_text()

    a = torch.load(root / "straight" / "killme" / "fold0" / "model.pt", weights_only=True)
    b = torch.load(run_dir / "model.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    cols = ["epoch", "lr", "train_loss", "val_auc", "a", "b", "alpha"]
    log_a = pd.read_csv(root / "straight" / "killme" / "fold0" / "log.csv")[cols]
    log_b = pd.read_csv(run_dir / "log.csv")[cols]
    pd.testing.assert_frame_equal(log_a, log_b, check_exact=True)
