"""The compositional objective L_AUC(w − θ∇L_CE(w)): its gradient against the chain rule
written out with the CE Hessian, in float64."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from deepauc.losses import AUCMLoss
from deepauc.research.study.compositional import compositional_loss


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(3, 4), nn.ELU(), nn.Linear(4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x).squeeze(1)


def test_gradient_is_the_chain_rule_through_the_ce_step():
    torch.manual_seed(0)
    net = Net().double()
    x = torch.randn(12, 3, dtype=torch.float64)
    y = torch.tensor([1.0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0], dtype=torch.float64)
    theta = 0.7
    loss = AUCMLoss(margin=0.5, imratio=0.25).double()
    with torch.no_grad():
        loss.a.fill_(0.6)
        loss.b.fill_(0.3)
        loss.alpha.fill_(0.2)
    oracle_loss = copy.deepcopy(loss)

    # the oracle: (I − θ H_CE(w)) ∇L_AUC(w'), with the Hessian as an explicit matrix
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    flat0 = torch.cat([p.detach().flatten() for p in net.parameters()])

    def unflat(v):
        out, i = {}, 0
        for n, s in zip(names, shapes):
            out[n] = v[i : i + s.numel()].view(s)
            i += s.numel()
        return out

    def ce(v):
        return F.binary_cross_entropy_with_logits(functional_call(net, unflat(v), (x,)), y)

    hess = torch.autograd.functional.hessian(ce, flat0)
    v = flat0.clone().requires_grad_(True)
    (g_ce,) = torch.autograd.grad(ce(v), v)
    moved = (flat0 - theta * g_ce).requires_grad_(True)
    auc = oracle_loss(torch.sigmoid(functional_call(net, unflat(moved), (x,))), y)
    auc.backward()
    expected = moved.grad - theta * hess @ moved.grad

    value = compositional_loss(net, x, y, auc_loss=loss, inner_lr=theta, scores=torch.sigmoid)
    value.backward()
    got = torch.cat([p.grad.flatten() for p in net.parameters()])
    assert value.item() == pytest.approx(auc.item(), rel=1e-12)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    for name in ("a", "b", "alpha"):
        torch.testing.assert_close(getattr(loss, name).grad, getattr(oracle_loss, name).grad)
    # the Hessian term matters here: the first-order gradient alone is a different vector
    assert not torch.allclose(got, moved.grad, rtol=1e-3, atol=1e-6)


def test_zero_inner_step_is_the_plain_auc_loss():
    torch.manual_seed(1)
    net = Net().double()
    x = torch.randn(8, 3, dtype=torch.float64)
    y = torch.tensor([1.0, 0, 0, 1, 0, 0, 0, 0], dtype=torch.float64)
    loss = AUCMLoss(margin=0.5, imratio=0.25).double()
    value = compositional_loss(net, x, y, auc_loss=loss, inner_lr=0.0, scores=torch.sigmoid)
    assert value.item() == pytest.approx(loss(torch.sigmoid(net(x)), y).item(), rel=1e-14)
