"""EfficientNet-PyTorch backbones through the model factory: tiny inputs, no downloads."""

import pytest
import torch
from torch import nn

from deepauc.models.factory import check_backbone, create_model, reset_head
from deepauc.pipeline.experiment import load_experiment

pytest.importorskip("efficientnet_pytorch")
B0 = "efficientnet_pytorch/efficientnet-b0"


def head_of(model):
    return model._fc


def test_backbone_names_are_checked():
    check_backbone(B0)
    check_backbone("efficientnet_pytorch/efficientnet-b5")
    with pytest.raises(ValueError, match="efficientnet-b0"):
        check_backbone("efficientnet_pytorch/efficientnet-b9")


@pytest.mark.parametrize("name", [B0, "efficientnet_pytorch/efficientnet-b5"])
def test_forward_shape_on_tiny_channels_last_input(name):
    torch.manual_seed(0)
    model = create_model(name, pretrained=False, drop_rate=0.3, drop_path_rate=0.2).eval()
    model.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 40, 48).to(memory_format=torch.channels_last)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 1) and torch.isfinite(out).all()
    # "same" padding is computed for the input's own size, any size runs
    with torch.no_grad():
        assert model(torch.randn(1, 3, 33, 33)).shape == (1, 1)


def assert_small_normal_head(head: nn.Linear):
    w = head.weight.detach()
    assert w.shape == (1, 1280)
    assert abs(w.mean().item()) < 2e-3 and 0.008 < w.std().item() < 0.012
    assert (head.bias == 0).all()


def test_head_init_and_reset_draw_n_0_001():
    torch.manual_seed(1)
    model = create_model(B0)
    assert_small_normal_head(head_of(model))
    before = head_of(model).weight.detach().clone()
    with torch.no_grad():
        head_of(model).weight.add_(1.0)
    reset_head(model, 1)
    assert_small_normal_head(head_of(model))
    assert not torch.equal(before, head_of(model).weight)


def test_a_cross_entropy_train_step_moves_every_layer():
    torch.manual_seed(2)
    model = create_model(B0, drop_rate=0.2).train()
    model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(4, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.tensor([0.0, 1.0, 0.0, 1.0])
    stem = model._conv_stem.weight.detach().clone()
    loss = nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y)
    loss.backward()
    assert torch.isfinite(loss) and model._conv_stem.weight.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(stem, model._conv_stem.weight)


def test_weights_from_a_local_file_skip_the_imagenet_head(tmp_path):
    from efficientnet_pytorch import EfficientNet

    torch.manual_seed(3)
    imagenet = EfficientNet.from_name("efficientnet-b0")  # 1000-way head, as published
    path = tmp_path / "efficientnet-b0.pth"
    torch.save(imagenet.state_dict(), path)
    model = create_model(B0, pretrained=str(path))
    assert torch.equal(model._conv_stem.weight, imagenet._conv_stem.weight)
    assert_small_normal_head(head_of(model))
    state = imagenet.state_dict()
    for broken in (
        {k: v for k, v in state.items() if k != "_conv_stem.weight"},  # a tensor missing
        {**state, "_conv_stem.weight": torch.zeros(8, 3, 3, 3)},  # another architecture's shape
    ):
        torch.save(broken, tmp_path / "bad.pth")
        with pytest.raises(ValueError, match="do not fit"):
            create_model(B0, pretrained=str(tmp_path / "bad.pth"))


def test_experiment_config_takes_the_backbone_and_fingerprints_it():
    path = "configs/demo/ce_lite0_64.yaml"
    timm_cfg = load_experiment(path)
    cfg = load_experiment(path, [f"model.backbone={B0}", "model.pretrained=false"])
    assert cfg.model.backbone == B0
    assert cfg.fingerprint() != load_experiment(path, ["model.pretrained=false"]).fingerprint()
    assert timm_cfg.model.backbone == "tf_efficientnet_lite0"
