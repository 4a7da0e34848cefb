"""The device-side normalisation: the same values, with mean/std built once per device."""

import pytest
import torch

from deepauc.data import dataset
from deepauc.data.dataset import IMAGENET_MEAN, IMAGENET_STD, to_device_batch


def _per_batch_reference(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x.float() - mean) / std


@pytest.mark.parametrize("channels_last", [True, False])
def test_values_equal_the_per_batch_formula(channels_last):
    x = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    out = to_device_batch(x, torch.device("cpu"), channels_last)
    assert out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert torch.equal(out, _per_batch_reference(x, channels_last))


def test_mean_and_std_are_not_rebuilt_per_batch(monkeypatch):
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    to_device_batch(x, torch.device("cpu"))
    built = []
    real_tensor = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: built.append(a) or real_tensor(*a, **k))
    for _ in range(3):
        to_device_batch(x, torch.device("cpu"))
        to_device_batch(x, "cpu")
    assert built == []
    assert dataset.normalisation_tensors(torch.device("cpu"))[0].device.type == "cpu"
