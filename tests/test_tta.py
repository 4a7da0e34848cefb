"""Test-time augmentation: each image decoded once, the same scores as one pass per copy."""

import numpy as np
import pandas as pd
import pytest
import torch

from deepauc.data import dataset
from deepauc.data.augment import build_train_transform, dihedral_views
from deepauc.data.dataset import CachedImages, ImageAndCopies, to_device_batch
from deepauc.models import create_model
from deepauc.pipeline.experiment import load_experiment
from deepauc.pipeline.predict import tta_predict
from deepauc.pipeline.runtime import make_loader
from helpers import write_experiment


def _one_pass_per_copy(model, table, cfg):
    """TTA as separate passes: the dihedral views, then one loader per random copy."""
    device, n_views = torch.device("cpu"), cfg.tta.dihedral
    plain_ds = CachedImages(table, cfg.data.cache_dir, cfg.data.image_size)
    total, identity = [], []
    for x, _ in make_loader(plain_ds, cfg.tta.batch_size, 0, shuffle=False):
        x = to_device_batch(x, device)
        probs = torch.sigmoid(model(dihedral_views(x, n_views)).view(n_views, x.shape[0]))
        total.append(probs.sum(0))
        identity.append(probs[0])
    total = torch.cat(total).double()
    aug = CachedImages(
        table,
        cfg.data.cache_dir,
        cfg.data.image_size,
        build_train_transform(cfg.augment),
        seed=cfg.train.seed,
    )
    for copy in range(cfg.tta.n_random):
        aug.set_epoch(10_000 + copy)
        scores = [
            torch.sigmoid(model(to_device_batch(x, device)).squeeze(1))
            for x, _ in make_loader(aug, cfg.tta.batch_size, 0, shuffle=False)
        ]
        total += torch.cat(scores).double()
    n = n_views + cfg.tta.n_random
    return (total / n).numpy(), torch.cat(identity).double().numpy()


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("mobilenetv3_small_050", pretrained=False).eval()


@pytest.mark.parametrize("n_random", [0, 3])
@torch.no_grad()
def test_one_decode_per_image_and_unchanged_scores(tiny_data, model, monkeypatch, n_random):
    path = write_experiment(
        tiny_data, "tta", tta={"dihedral": 4, "n_random": n_random, "batch_size": 8}
    )
    cfg = load_experiment(path)
    table = pd.read_csv(cfg.data.train_csv).iloc[:13]
    expected, expected_identity = _one_pass_per_copy(model, table, cfg)

    decodes = []
    real_load = dataset.load_cached
    monkeypatch.setattr(dataset, "load_cached", lambda *a: decodes.append(a[-1]) or real_load(*a))
    tta, identity = tta_predict(model, table, cfg, torch.device("cpu"))
    assert sorted(decodes) == sorted(table["image_name"])
    if n_random == 0:  # the very same forward batches
        np.testing.assert_array_equal(tta, expected)
        np.testing.assert_array_equal(identity, expected_identity)
    else:  # the same views, in other forward batches
        np.testing.assert_allclose(tta, expected, rtol=0, atol=1e-6)
        np.testing.assert_allclose(identity, expected_identity, rtol=0, atol=1e-6)


def test_copies_are_the_per_epoch_augmentations(tiny_data):
    table = pd.read_csv(tiny_data["train_csv"]).iloc[:5]
    transform = build_train_transform(load_experiment(write_experiment(tiny_data, "c")).augment)
    args = (table, str(tiny_data["cache"]), 32, transform)
    copies = ImageAndCopies(*args, seed=7, n_copies=3, first_epoch=50)
    per_epoch = CachedImages(*args, seed=7)
    for i in range(len(table)):
        stack, target = copies[i]
        assert stack.shape == (4, 3, 32, 32) and target == per_epoch[i][1]
        assert torch.equal(stack[0], CachedImages(*args[:3])[i][0])
        for c in range(3):
            per_epoch.set_epoch(50 + c)
            assert torch.equal(stack[1 + c], per_epoch[i][0])
