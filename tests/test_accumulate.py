"""Memory settings of a training step: gradient accumulation (checked against gradients
averaged by hand), gradient checkpointing, per-card settings, one-line out-of-memory."""

import copy

import pytest
import torch
from torch import nn

import deepauc.pipeline.steps as steps
from deepauc.cli import main
from deepauc.losses import AUCMLoss, loss_input
from deepauc.models.factory import check_grad_checkpointing, create_model, enable_grad_checkpointing
from deepauc.optim import PESG
from deepauc.pipeline.experiment import DataConfig, ExperimentConfig, load_experiment
from deepauc.pipeline.steps import TrainState, train_step
from deepauc.pipeline.train import train_fold
from helpers import write_experiment

CPU = torch.device("cpu")


def _state(accumulate: int, bsn) -> TrainState:
    """A network without batch statistics, AUC-M (with or without batch score norm), PESG."""
    torch.manual_seed(0)
    cfg = ExperimentConfig(name="acc", data=DataConfig(train_csv="unused.csv"))
    cfg.train.accumulate = accumulate
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5), nn.Tanh(), nn.Linear(5, 1))
    loss = AUCMLoss(margin=1.0, imratio=0.25, batch_score_norm=bsn)
    with torch.no_grad():  # start away from zero so every gradient is non-trivial
        loss.a.fill_(0.3), loss.b.fill_(-0.2), loss.alpha.fill_(0.4)
    opt = PESG(model, loss, lr=0.1, momentum=0.0, epoch_decay=0.01)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return TrainState(cfg, model, model, loss, opt, scaler, CPU, None)


def _batch(n=12):
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (n, 3, 4, 4), generator=gen, dtype=torch.uint8)
    y = torch.tensor([1.0, 0, 0, 0] * (n // 4))
    return x, y


def _hand_step(state: TrainState, x, y, chunks: int) -> None:
    """The oracle: gradients of each chunk's own loss, averaged, then one PESG step."""
    from deepauc.data.dataset import to_device_batch

    params = list(state.model.parameters()) + [state.loss_fn.a, state.loss_fn.b]
    params.append(state.loss_fn.alpha)
    total = [torch.zeros_like(p) for p in params]
    for xm, ym in zip(x.chunk(chunks), y.chunk(chunks)):
        logits = state.model(to_device_batch(xm, CPU)).squeeze(1)
        loss = state.loss_fn(loss_input(state.loss_fn, logits), ym)
        for t, g in zip(total, torch.autograd.grad(loss, params)):
            t += g / chunks
    for p, g in zip(params, total):
        p.grad = g
    state.optimizer.step()


def _params(state):
    return [p.detach().clone() for p in state.model.parameters()] + [
        state.loss_fn.a.detach().clone(),
        state.loss_fn.b.detach().clone(),
        state.loss_fn.alpha.detach().clone(),
    ]


def _close(u, v):
    return all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(u, v))


@pytest.mark.parametrize("k", [2, 3])
def test_one_accumulated_step_is_the_step_on_the_mean_micro_batch_gradient(k):
    x, y = _batch()
    acc, hand, full = _state(k, "logits"), _state(1, "logits"), _state(1, "logits")
    before = _params(acc)
    batch_loss = train_step(acc, x, y)
    _hand_step(hand, x, y, k)
    _hand_step(full, x, y, 1)
    assert not _close(_params(acc), before)  # a step happened, α included
    assert _close(_params(acc), _params(hand))
    # batch score normalisation runs over each micro-batch: not the full batch's gradient
    assert not _close(_params(acc), _params(full))
    # the reported loss is the mean of the micro-batch losses
    ref = _state(1, "logits")
    from deepauc.data.dataset import to_device_batch

    with torch.no_grad():
        losses = [
            ref.loss_fn(loss_input(ref.loss_fn, ref.model(to_device_batch(a, CPU)).squeeze(1)), b)
            for a, b in zip(x.chunk(k), y.chunk(k))
        ]
    assert torch.allclose(batch_loss, torch.stack(losses).mean())


def test_without_batch_statistics_a_per_row_loss_accumulates_to_the_full_batch_step():
    x, y = _batch()
    acc, full = _state(3, False), _state(1, False)
    train_step(acc, x, y)
    _hand_step(full, x, y, 1)
    assert _close(_params(acc), _params(full))


def test_accumulate_one_is_the_plain_step_bit_for_bit():
    x, y = _batch()
    a, b = _state(1, "logits"), _state(1, "logits")
    train_step(a, x, y)
    _hand_step(b, x, y, 1)
    assert all(torch.equal(u, v) for u, v in zip(_params(a), _params(b)))


def test_grad_checkpointing_gives_the_same_gradients(monkeypatch):
    import torch.utils.checkpoint as checkpointing

    calls = []
    real = checkpointing.checkpoint
    monkeypatch.setattr(
        checkpointing, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    torch.manual_seed(0)
    plain = create_model("mobilenetv3_small_050", drop_rate=0.0).double()
    ckpt = enable_grad_checkpointing(copy.deepcopy(plain), "mobilenetv3_small_050")
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    grads = []
    for model in (plain, ckpt):
        model.train()
        model(x).sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert calls, "checkpointing was not used"
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], rtol=1e-9, atol=1e-12), name


def test_grad_checkpointing_refused_where_it_does_not_exist():
    with pytest.raises(ValueError, match="EfficientNet-PyTorch\\) has no gradient checkpointing"):
        check_grad_checkpointing("efficientnet_pytorch/efficientnet-b0")


def test_accumulate_must_divide_the_batch(tiny_data):
    with pytest.raises(ValueError, match="train.accumulate"):
        load_experiment(
            write_experiment(tiny_data, "bad", train={"batch_size": 8, "accumulate": 3})
        )


MEMORY = {16: {"accumulate": 4, "grad_checkpointing": True}, 80: {"accumulate": 1}}


def test_one_switch_picks_the_card_settings(tiny_data):
    path = write_experiment(tiny_data, "cards", train={"batch_size": 8, "memory": MEMORY})
    plain = load_experiment(path)
    t4 = load_experiment(path, ["train.gpu_memory_gb=16"])
    a100 = load_experiment(path, ["train.gpu_memory_gb=80"])
    assert (plain.train.accumulate, plain.model.grad_checkpointing) == (1, False)
    assert (t4.train.accumulate, t4.model.grad_checkpointing) == (4, True)
    assert t4.train.batch_size == 8  # the recipe's batch is kept
    assert (a100.train.accumulate, a100.model.grad_checkpointing) == (1, False)
    assert a100.fingerprint() == plain.fingerprint() != t4.fingerprint()
    with pytest.raises(ValueError, match="gpu_memory_gb=12.*\\[16, 80\\] GB"):
        load_experiment(path, ["train.gpu_memory_gb=12"])


def test_fingerprint_counts_what_changes_the_weights(tiny_data):
    """Session and card keys leave the fingerprint alone; the settings they stand for do not."""
    path = write_experiment(tiny_data, "keys")
    base = load_experiment(path).fingerprint()
    same = ["train.recovery_minutes=5", "train.num_workers=3", "train.eval_every=2"]
    for override in same:
        assert load_experiment(path, [override]).fingerprint() == base, override
    changed = ["train.accumulate=2", "train.pos_fraction=0.25", "model.grad_checkpointing=true"]
    for override in changed:
        assert load_experiment(path, [override]).fingerprint() != base, override


def test_num_workers_auto(tiny_data, monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    cfg = load_experiment(write_experiment(tiny_data, "auto", train={"num_workers": "auto"}))
    assert cfg.train.num_workers == 1  # 4 CPUs over 2 ranks, one kept for each rank


def test_out_of_memory_is_one_line_with_settings_that_fit(tiny_data, monkeypatch, capsys):
    def oom(*args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(steps, "train_step", oom)
    path = write_experiment(tiny_data, "oom", folds=[0], train={"batch_size": 8, "memory": MEMORY})
    assert main(["train", "--config", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "CUDA out of memory training mobilenetv3_small_050 at 32 px" in err
    assert "micro-batch 8 per GPU" in err
    for fix in [
        "train.gpu_memory_gb=",
        "train.accumulate=2 (micro-batch 4)",
        "grad_checkpointing=true",
    ]:
        assert fix in err
    cfg = load_experiment(path)
    assert not (cfg.run_dir(0) / "model.pt").exists()


def test_other_runtime_errors_are_not_taken_for_out_of_memory(tiny_data, monkeypatch):
    def broken(*args):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(steps, "train_step", broken)
    cfg = load_experiment(write_experiment(tiny_data, "other", folds=[0]))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        train_fold(cfg, 0, CPU)


# 16-bit activations per image: the CPU measurements (B5@384, B6@512); B3@256 scaled
# from B5 by pixels (2.25x) and width x depth (~2.1x). Checkpointing divides by 3 at worst.
GIB_PER_IMAGE = {"tf_efficientnet_b3": 0.10, "tf_efficientnet_b5": 0.46, "tf_efficientnet_b6": 1.0}
ACTIVATION_BUDGET_GIB = 11.0  # a 16 GB card less weights, optimizer state, workspace


@pytest.mark.parametrize("stage", ["ce", "aucm"])
@pytest.mark.parametrize("model", ["b3_256", "b5_384", "b6_512"])
def test_siim_models_fit_a_16_gb_card_with_one_switch(stage, model):
    path = f"configs/siim/{stage}_{model}.yaml"
    recipe = load_experiment(path)
    t4 = load_experiment(path, ["train.gpu_memory_gb=16"])
    big = load_experiment(path, ["train.gpu_memory_gb=80"])
    assert t4.train.batch_size == recipe.train.batch_size == big.train.batch_size
    per_image = GIB_PER_IMAGE[recipe.model.backbone]
    if recipe.model.backbone != "tf_efficientnet_b3":  # measured: B5, B6 alone do not fit
        assert per_image * recipe.train.batch_size > ACTIVATION_BUDGET_GIB
    micro = t4.train.batch_size // t4.train.accumulate
    need = per_image * micro / (3 if t4.model.grad_checkpointing else 1)
    assert need <= ACTIVATION_BUDGET_GIB, (path, micro, need)
    assert (big.train.accumulate, big.model.grad_checkpointing) == (1, False)
    assert recipe.train.num_workers <= 8  # num_workers: auto


def test_two_gloo_ranks_accumulating_match_one_process(tiny_data):
    """Under DDP the gradients are all-reduced on the last micro-batch only (no_sync before):
    2 ranks x 2 micro-batches of 2 rows end where one process with whole batches of 8 does,
    for a network without batch statistics and a loss that is a mean over rows."""
    import yaml

    from test_ddp import ATOL, _ddp_config, _launch_two_ranks

    path = _ddp_config(tiny_data)
    raw = yaml.safe_load(path.read_text())
    raw["train"]["accumulate"] = 2
    acc_path = path.with_name("ddp_acc.yaml")
    acc_path.write_text(yaml.safe_dump(raw))
    proc = _launch_two_ranks(acc_path, tiny_data["root"] / "models_acc")
    threads = torch.get_num_threads()
    try:
        single = torch.load(train_fold(load_experiment(path), 0, CPU), weights_only=True)
    finally:
        torch.set_num_threads(threads)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    ddp = torch.load(tiny_data["root"] / "models_acc/ddp/fold0/model.pt", weights_only=True)
    assert ddp["config"]["train"]["accumulate"] == 2
    for k, v in single["model"].items():
        assert (v.double() - ddp["model"][k].double()).abs().max().item() <= ATOL, k
