"""Precision and device choice against simulated GPUs: bf16 only where it is native, a
GPU that cannot run refused in one line unless the CPU is asked for."""

import logging

import pytest
import torch

from deepauc.pipeline.runtime import DeviceUnusable, amp_dtype, arch_supported, pick_device

CUDA = torch.device("cuda")
CU13_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]


def fake_gpu(monkeypatch, capability, name="Fake GPU", archs=CU13_ARCHS, available=True):
    """A ``torch.cuda`` that reports one GPU of ``capability``; bf16 'supported' everywhere,
    as torch answers on a T4 (emulation)."""
    cuda = torch.cuda
    monkeypatch.setattr(cuda, "is_available", lambda: available)
    monkeypatch.setattr(cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(cuda, "get_arch_list", lambda: list(archs))
    monkeypatch.setattr(cuda, "current_device", lambda: 0)
    monkeypatch.delenv("DEEPAUC_DEVICE", raising=False)


@pytest.mark.parametrize(
    "capability, name, expected",
    [
        ((7, 5), "Tesla T4", torch.float16),
        ((6, 0), "Tesla P100-PCIE-16GB", torch.float16),
        ((7, 0), "Tesla V100-SXM2-16GB", torch.float16),
        ((8, 0), "NVIDIA A100-SXM4-80GB", torch.bfloat16),
        ((9, 0), "NVIDIA H100 80GB HBM3", torch.bfloat16),
    ],
)
def test_auto_is_bf16_only_from_capability_8(monkeypatch, caplog, capability, name, expected):
    fake_gpu(monkeypatch, capability, name)
    with caplog.at_level(logging.INFO, logger="deepauc.pipeline.runtime"):
        assert amp_dtype("auto", CUDA) is expected
    line = caplog.records[-1].getMessage()
    assert name in line and f"{capability[0]}.{capability[1]}" in line
    assert ("loss scaling" in line) is (expected is torch.float16)


def test_auto_on_the_cpu_is_full_precision(monkeypatch):
    fake_gpu(monkeypatch, (7, 5), available=False)
    assert amp_dtype("auto", torch.device("cpu")) is None
    assert amp_dtype("off", CUDA) is None


def test_explicit_settings(monkeypatch):
    fake_gpu(monkeypatch, (9, 0))
    assert amp_dtype("fp16", CUDA) is torch.float16
    assert amp_dtype("bf16", CUDA) is torch.bfloat16


def test_bf16_asked_for_on_a_t4_is_refused(monkeypatch):
    fake_gpu(monkeypatch, (7, 5), "Tesla T4")
    with pytest.raises(ValueError, match=r"bf16 on Tesla T4 \(compute capability 7.5\)"):
        amp_dtype("bf16", CUDA)
    assert amp_dtype("fp16", CUDA) is torch.float16


def test_fp16_gets_the_grad_scaler_in_training(monkeypatch, tiny_data):
    """The scaler is on exactly when amp picks fp16 (train's _build_state)."""
    import deepauc.pipeline.train as train
    from deepauc.pipeline.experiment import load_experiment
    from deepauc.pipeline.train import _build_state
    from helpers import write_experiment

    fake_gpu(monkeypatch, (7, 5), "Tesla T4")
    cfg = load_experiment(write_experiment(tiny_data, "t4"))
    # built on the CPU (there is no GPU here); only the precision decision is simulated
    monkeypatch.setattr(train, "amp_dtype", lambda s, d: amp_dtype(s, CUDA))
    state = _build_state(cfg, 0, torch.device("cpu"), 0.25)
    assert state.amp is torch.float16 and state.scaler.is_enabled()


@pytest.mark.parametrize(
    "capability, ok",
    [((7, 5), True), ((8, 6), True), ((8, 9), True), ((6, 0), False), ((7, 0), False)],
)
def test_arch_list_against_capability(capability, ok):
    assert arch_supported(capability, CU13_ARCHS) is ok
    # PTX of an older architecture is compiled by the driver for a newer one
    assert arch_supported((6, 0), ["sm_50", "compute_50"]) is True
    assert arch_supported((5, 0), ["sm_60"]) is False


def test_a_p100_with_a_cu13_torch_is_refused(monkeypatch):
    fake_gpu(monkeypatch, (6, 0), "Tesla P100-PCIE-16GB")
    with pytest.raises(DeviceUnusable, match=r"Tesla P100.*sm_60.*sm_75 sm_80.*DEEPAUC_DEVICE=cpu"):
        pick_device()
    monkeypatch.setenv("DEEPAUC_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")


def test_a_usable_gpu_is_picked(monkeypatch):
    fake_gpu(monkeypatch, (7, 5), "Tesla T4")
    assert pick_device() == CUDA


def test_an_expected_gpu_that_cannot_start_is_refused(monkeypatch):
    fake_gpu(monkeypatch, (7, 5), available=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setattr(torch.version, "cuda", "13.0")

    def too_old():
        raise RuntimeError("The NVIDIA driver on your system is too old (found version 12040).")

    monkeypatch.setattr(torch.cuda, "init", too_old)
    with pytest.raises(DeviceUnusable, match=r"CUDA 13.0.*driver on your system is too old"):
        pick_device()
    monkeypatch.setenv("DEEPAUC_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")


def test_a_cpu_only_torch_where_a_gpu_is_expected(monkeypatch):
    fake_gpu(monkeypatch, (7, 5), available=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(DeviceUnusable, match="CPU-only build"):
        pick_device()


@pytest.mark.parametrize("visible", ["", "-1"])
def test_hidden_gpus_mean_the_cpu(monkeypatch, visible):
    fake_gpu(monkeypatch, (7, 5), available=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert pick_device() == torch.device("cpu")


def test_a_bad_device_setting_is_one_line(monkeypatch):
    monkeypatch.setenv("DEEPAUC_DEVICE", "tpu")
    with pytest.raises(ValueError, match="DEEPAUC_DEVICE='tpu'"):
        pick_device()


def test_the_training_log_names_the_gpu(monkeypatch):
    from deepauc.pipeline.runtime import device_label

    fake_gpu(monkeypatch, (7, 5), "Tesla T4")
    assert device_label(CUDA) == "cuda (Tesla T4)"
    assert device_label(torch.device("cpu")) == "cpu"
