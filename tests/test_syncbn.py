"""SyncBatchNorm conversion for multi-GPU training keeps the network the same function.

timm's EfficientNet/MobileNet fuse BN and activation into ``BatchNormAct2d``; the
conversion must keep the activation. In eval mode SyncBatchNorm normalises with its
running statistics and needs no process group, so the comparison runs on CPU.
"""

import copy
import functools

import pytest
import torch

from deepauc.models import create_model
from deepauc.pipeline.runtime import convert_sync_batchnorm, sync_batchnorm_for_ranks

BACKBONES = ["efficientnet_b0", "mobilenetv3_small_050"]


@functools.cache
def _built(backbone: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(backbone, pretrained=False)
    with torch.no_grad():  # running statistics away from (0, 1), as after training
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _eval_net(backbone: str) -> torch.nn.Module:
    return copy.deepcopy(_built(backbone))


def _outputs(model: torch.nn.Module) -> torch.Tensor:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_multi_gpu_conversion_keeps_the_outputs(backbone):
    model = _eval_net(backbone)
    before = _outputs(model)
    n_norms = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    # the path train.py takes for 2 CUDA ranks; converting touches no device
    synced = sync_batchnorm_for_ranks(copy.deepcopy(model), 2, torch.device("cuda", 0))
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules()) == n_norms
    assert synced.state_dict().keys() == model.state_dict().keys()  # predict loads it plainly
    torch.testing.assert_close(_outputs(synced), before, rtol=0, atol=1e-6)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_torch_converter_drops_the_fused_activations(backbone):
    """Why train.py uses timm's converter: torch's turns BN + activation into BN alone."""
    model = _eval_net(backbone)
    before = _outputs(model)
    torch_synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model))
    assert (_outputs(torch_synced) - before).abs().max() > 0.1
    torch.testing.assert_close(
        _outputs(convert_sync_batchnorm(copy.deepcopy(model))), before, rtol=0, atol=1e-6
    )


def test_no_conversion_on_cpu_or_for_one_process():
    model = _eval_net("mobilenetv3_small_050")
    assert sync_batchnorm_for_ranks(model, 2, torch.device("cpu")) is model
    assert sync_batchnorm_for_ranks(model, 1, torch.device("cuda", 0)) is model
