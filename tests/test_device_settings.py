"""Device settings of a training run: cuDNN autotuning on CUDA only."""

import pytest
import torch

from deepauc.pipeline.experiment import load_experiment
from deepauc.pipeline.train import _build_state
from helpers import write_experiment


@pytest.fixture
def cudnn_benchmark_restored():
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    yield
    torch.backends.cudnn.benchmark = before


def test_cpu_training_leaves_cudnn_autotuning_alone(tiny_data, cudnn_benchmark_restored):
    cfg = load_experiment(write_experiment(tiny_data, "cpu"))
    _build_state(cfg, 0, torch.device("cpu"), 0.25)
    assert torch.backends.cudnn.benchmark is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_autotunes_cudnn(tiny_data, cudnn_benchmark_restored):
    cfg = load_experiment(write_experiment(tiny_data, "gpu"))
    _build_state(cfg, 0, torch.device("cuda"), 0.25)
    assert torch.backends.cudnn.benchmark is True
