"""Class-weighted cross-entropy: positives weighted by (1-p)/p, against the formula by hand."""

import math

import pytest
import torch

from deepauc.losses import WeightedBCELoss, create_loss


def test_weighted_ce_is_the_formula_by_hand():
    z = torch.tensor([0.3, -1.2, 2.0, 0.0, -0.4], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    loss = create_loss("ce_weighted", imratio=0.2)
    w = 0.8 / 0.2
    by_hand = 0.0
    for zi, yi in zip(z.tolist(), y.tolist()):
        s = 1 / (1 + math.exp(-zi))
        by_hand -= w * yi * math.log(s) + (1 - yi) * math.log(1 - s)
    assert float(loss(z, y)) == pytest.approx(by_hand / len(z), rel=1e-12)


def test_weighted_ce_balances_the_classes():
    """At the positive share p, the best constant logit scores ½: the classes weigh alike
    (plain CE's best constant scores p)."""
    y = torch.tensor([1.0] + [0.0] * 9, dtype=torch.float64)
    for name, best in (("ce_weighted", 0.0), ("ce", math.log(0.1 / 0.9))):
        c = torch.tensor([best], dtype=torch.float64, requires_grad=True)
        create_loss(name, imratio=0.1)(c.expand(10), y).backward()
        assert abs(float(c.grad)) < 1e-12, name


def test_weighted_ce_needs_a_ratio():
    with pytest.raises(ValueError, match="imratio"):
        WeightedBCELoss(imratio=None)
    with pytest.raises(ValueError, match="imratio"):
        create_loss("ce_weighted", imratio=1.0)
