"""Data-parallel training under torchrun: 2 CPU processes (gloo) against one process.

The equivalence run uses ``convnext_atto``, a timm network without BatchNorm (LayerNorm
normalises each image on its own), with dropout and drop-path off: then a rank's half of
a global batch gives exactly its share of the single-process loss and gradient, and the
only differences are floating-point summation orders (the loss mean over 4 rows then the
average of 2 ranks instead of one mean over 8; the gloo all-reduce of the gradients).
With BatchNorm each rank would normalise with the statistics of its own half batch
(SyncBatchNorm, which train.py switches on for CUDA, does not run on CPU).

Measured on this CPU (3 PESG steps x 2 epochs, lr 0.05, stage decay after epoch 1): the
largest weight difference was ~1e-7 (float32 rounding); the test allows ``ATOL``.
"""

import ast
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import RandomSampler

from deepauc.pipeline.experiment import load_experiment
from deepauc.pipeline.runtime import EpochShard, interleave
from deepauc.pipeline.train import train_fold
from helpers import cpu_subprocess_env, write_experiment

ATOL = 1e-5  # on weights and on the logged loss, a, b, α (measured differences: ~1e-7)

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="needs torch.distributed"
)


@pytest.mark.parametrize("n", [1, 7, 32, 33])
def test_one_process_shard_is_random_samplers_order(n):
    gen = torch.Generator().manual_seed(5 * 100_003 + 3)
    assert list(EpochShard(n, seed=5, epoch=3)) == list(RandomSampler(range(n), generator=gen))


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_global_batch_equals_single_process_batch(world):
    n, batch = 37, 8
    single = list(EpochShard(n, 1, 2))
    shards = [list(EpochShard(n, 1, 2, rank, world)) for rank in range(world)]
    per_rank = batch // world
    assert sorted(i for s in shards for i in s) == list(range(n))  # every row once per epoch
    for j in range(n // batch):
        union = sorted(i for s in shards for i in s[j * per_rank : (j + 1) * per_rank])
        assert union == sorted(single[j * batch : (j + 1) * batch])


@pytest.mark.parametrize("n, world", [(10, 2), (11, 3), (2, 4), (0, 2)])
def test_interleave_inverts_the_strided_split(n, world):
    rows = np.arange(n, dtype=float) * 1.5
    parts = [
        np.pad(rows[r::world], (0, -(-n // world) - len(rows[r::world]))) for r in range(world)
    ]
    np.testing.assert_array_equal(interleave(parts, n), rows)


def _ddp_config(tiny):
    return write_experiment(
        tiny,
        "ddp",
        folds=[0],
        model={
            "backbone": "convnext_atto",
            "pretrained": False,
            "drop_rate": 0.0,
            "drop_path_rate": 0.0,
        },
        loss={"name": "auc_m", "margin": 1.0},
        optim={
            "name": "pesg",
            "lr": 0.05,
            "momentum": 0.5,
            "epoch_decay": 0.003,
            "weight_decay": 1e-4,
        },
        schedule={"name": "stagewise", "epochs": 2, "decay_epochs": [1]},
        train={"batch_size": 8, "max_steps_per_epoch": 3, "threads": 1, "seed": 0},
    )


def _launch_two_ranks(path, models_dir):
    """torchrun with 2 CPU ranks (gloo) training the experiment at ``path``."""
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "deepauc",
        "train",
        "--config",
        str(path),
        "--set",
        f"models_dir={models_dir}",
    ]
    return subprocess.Popen(
        launch,
        env=cpu_subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_ranks_start_on_cpu_even_on_a_gpu_host(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda cmd, env, **kw: started.append(env))
    _launch_two_ranks(tmp_path / "x.yaml", tmp_path / "models")
    assert started[0]["CUDA_VISIBLE_DEVICES"] == ""
    assert "WORLD_SIZE" not in started[0]


def test_two_gloo_ranks_match_one_process(tiny_data):
    path = _ddp_config(tiny_data)
    ddp_models = tiny_data["root"] / "models_ddp"
    proc = _launch_two_ranks(path, ddp_models)

    cfg = load_experiment(path)  # the single-process run, here, while the two ranks work
    threads = torch.get_num_threads()
    try:
        single_path = train_fold(cfg, 0, torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out

    run_dir = ddp_models / "ddp" / "fold0"
    assert sorted(p.name for p in run_dir.iterdir()) == ["log.csv", "model.pt", "train.log"]
    single = torch.load(single_path, weights_only=True)
    ddp = torch.load(run_dir / "model.pt", weights_only=True)
    assert ddp["fingerprint"] == single["fingerprint"]
    diffs = {
        k: (single["model"][k].double() - ddp["model"][k].double()).abs().max().item()
        for k in single["model"]
    }
    worst = max(diffs, key=diffs.get)
    print(f"largest DDP vs single-process weight difference: {diffs[worst]:.3g} ({worst})")
    assert diffs[worst] <= ATOL, (worst, diffs[worst])

    log_single, log_ddp = (
        pd.read_csv(single_path.parent / "log.csv"),
        pd.read_csv(run_dir / "log.csv"),
    )
    for col in ["train_loss", "a", "b", "alpha", "lr"]:
        np.testing.assert_allclose(log_ddp[col], log_single[col], rtol=0, atol=ATOL, err_msg=col)
    np.testing.assert_allclose(
        log_ddp["val_auc"], log_single["val_auc"], atol=1e-3
    )  # ranks' scores gathered

    # every rank ended with the very same a, b, α (rank 0 logs what it gathered from each)
    line = next(
        x for x in (run_dir / "train.log").read_text().splitlines() if "on each of the 2 ranks" in x
    )
    per_rank = ast.literal_eval(line.split("ranks: ", 1)[1])
    assert len(per_rank) == 2 and per_rank[0] == per_rank[1]
    np.testing.assert_allclose(per_rank[0], log_ddp[["a", "b", "alpha"]].iloc[-1], rtol=1e-6)
    assert out.count("ddp fold 0:") == 1  # only rank 0 reports


def test_batch_not_divisible_by_ranks_is_refused(tiny_data, monkeypatch):
    import deepauc.pipeline.train as train_mod

    cfg = load_experiment(write_experiment(tiny_data, "odd", folds=[0], train={"batch_size": 9}))
    monkeypatch.setattr(
        train_mod, "dist_info", lambda: (0, 2)
    )  # as rank 0 of 2, before any collective
    with pytest.raises(ValueError, match="train.batch_size 9 is not divisible by the 2 DDP ranks"):
        train_fold(cfg, 0, torch.device("cpu"))
    assert not (cfg.run_dir(0) / "checkpoint.pt").exists()
