"""AUC-M / AUC-S / focal / BCE against formulas written out independently here."""

import numpy as np
import pytest
import torch

from deepauc.losses import (
    AUCMLoss,
    AUCSLoss,
    BCELoss,
    FocalLoss,
    batch_score_norm,
    build_loss,
    create_loss,
    loss_input,
)


def eq8_reference(h, y, a, b, alpha, p, m):
    """Paper eq. (8) averaged over rows, in float64 numpy, one label."""
    h, y = np.asarray(h, float), np.asarray(y, float)
    pos, neg = y == 1, y == 0
    f = (
        (1 - p) * (h - a) ** 2 * pos
        + p * (h - b) ** 2 * neg
        - p * (1 - p) * alpha**2
        + 2 * alpha * (p * (1 - p) * m + p * h * neg - (1 - p) * h * pos)
    )
    return f.mean()


def set_params(loss, a, b, alpha):
    with torch.no_grad():
        loss.a.fill_(a)
        loss.b.fill_(b)
        loss.alpha.fill_(alpha)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aucm_value_matches_eq8(seed):
    rng = np.random.default_rng(seed)
    h = rng.uniform(size=64)
    y = (rng.uniform(size=64) < 0.2).astype(float)
    a, b, alpha, p, m = rng.uniform(size=5)
    loss = AUCMLoss(margin=m, imratio=p)
    set_params(loss, a, b, alpha)
    got = loss(torch.tensor(h, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)).item()
    assert got == pytest.approx(eq8_reference(h, y, a, b, alpha, p, m), rel=1e-5, abs=1e-6)


def test_aucs_is_eq4_margin_one_and_alpha_free():
    rng = np.random.default_rng(3)
    h, y = rng.uniform(size=50), (rng.uniform(size=50) < 0.3).astype(float)
    loss = AUCSLoss(imratio=0.3)
    set_params(loss, 0.4, 0.2, -0.7)
    got = loss(torch.tensor(h), torch.tensor(y)).item()
    assert got == pytest.approx(eq8_reference(h, y, 0.4, 0.2, -0.7, 0.3, 1.0), rel=1e-5)
    assert AUCSLoss.alpha_nonnegative is False and AUCMLoss.alpha_nonnegative is True


def test_hand_derived_gradients():
    """§3.3: ∂F/∂h, ∂F/∂a, ∂F/∂b, ∂F/∂α per row, averaged."""
    rng = np.random.default_rng(4)
    n, p, m, a, b, alpha = 40, 0.25, 0.6, 0.3, 0.1, 0.5
    h = torch.tensor(rng.uniform(size=n), requires_grad=True)
    y = torch.tensor((rng.uniform(size=n) < p).astype(float))
    loss = AUCMLoss(margin=m, imratio=p).double()
    set_params(loss, a, b, alpha)
    loss(h, y).backward()
    hn, yn = h.detach().numpy(), y.numpy()
    pos, neg = yn == 1, yn == 0
    dh = (2 * (1 - p) * (hn - a - alpha) * pos + 2 * p * (hn - b + alpha) * neg) / n
    da = np.mean(-2 * (1 - p) * (hn - a) * pos)
    db = np.mean(-2 * p * (hn - b) * neg)
    dalpha = (
        np.mean(2 * (p * (1 - p) * m + p * hn * neg - (1 - p) * hn * pos)) - 2 * p * (1 - p) * alpha
    )
    np.testing.assert_allclose(h.grad.numpy(), dh, rtol=1e-10)
    assert loss.a.grad.item() == pytest.approx(da, rel=1e-10)
    assert loss.b.grad.item() == pytest.approx(db, rel=1e-10)
    assert loss.alpha.grad.item() == pytest.approx(dalpha, rel=1e-10)


@pytest.mark.parametrize("separated", [False, True])
def test_theorem1_saddle_point(separated):
    """At a=E[h|+], b=E[h|-], α=max(0, m-a+b): F = p(1-p)·A_M and the a, b (α) gradients vanish."""
    rng = np.random.default_rng(5)
    n_pos, n_neg, m = 30, 90, 0.5
    shift = 0.8 if separated else 0.1
    h = np.concatenate([rng.uniform(size=n_pos) * 0.2 + shift, rng.uniform(size=n_neg) * 0.2])
    y = np.concatenate([np.ones(n_pos), np.zeros(n_neg)])
    p = n_pos / (n_pos + n_neg)  # the batch's own ratio: expectations are batch means
    ea, eb = h[y == 1].mean(), h[y == 0].mean()
    alpha = max(0.0, m - ea + eb)
    am = h[y == 1].var() + h[y == 0].var() + max(0.0, m - ea + eb) ** 2
    loss = AUCMLoss(margin=m, imratio=p).double()
    set_params(loss, ea, eb, alpha)
    value = loss(torch.tensor(h), torch.tensor(y))
    value.backward()
    assert value.item() == pytest.approx(p * (1 - p) * am, rel=1e-9)
    assert abs(loss.a.grad.item()) < 1e-12 and abs(loss.b.grad.item()) < 1e-12
    if alpha > 0:
        assert abs(loss.alpha.grad.item()) < 1e-12
    else:  # α clamped at 0: the ascent direction points outside the feasible set
        assert loss.alpha.grad.item() <= 0
    assert (alpha > 0) != separated


def test_multilabel_is_mean_of_labels():
    rng = np.random.default_rng(6)
    h = rng.uniform(size=(32, 3))
    y = (rng.uniform(size=(32, 3)) < 0.3).astype(float)
    p = [0.2, 0.3, 0.4]
    loss = AUCMLoss(margin=0.7, imratio=p, num_labels=3).double()
    with torch.no_grad():
        loss.a.copy_(torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
        loss.b.copy_(torch.tensor([0.0, 0.1, 0.2], dtype=torch.float64))
        loss.alpha.copy_(torch.tensor([0.5, 0.0, 0.2], dtype=torch.float64))
    got = loss(torch.tensor(h), torch.tensor(y)).item()
    refs = [
        eq8_reference(
            h[:, k], y[:, k], [0.1, 0.2, 0.3][k], [0.0, 0.1, 0.2][k], [0.5, 0.0, 0.2][k], p[k], 0.7
        )
        for k in range(3)
    ]
    assert got == pytest.approx(np.mean(refs), rel=1e-6)  # p is stored in float32
    assert loss.a.shape == (3,)


@pytest.mark.parametrize("cls", [AUCMLoss, AUCSLoss])
@pytest.mark.parametrize("label", [0.0, 1.0])
def test_single_class_batch_is_finite(cls, label):
    loss = cls()  # running estimate of p
    h = torch.rand(16, requires_grad=True)
    y = torch.full((16,), label)
    value = loss(h, y)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(h.grad).all() and torch.isfinite(loss.alpha.grad).all()
    assert 0 < loss.p.item() < 1


def test_running_p_converges_to_data_ratio_and_freezes_in_eval():
    torch.manual_seed(0)
    loss = AUCMLoss()
    y_all = (torch.rand(5000) < 0.07).float()
    for chunk in y_all.split(50):
        loss(torch.rand(chunk.numel()), chunk)
    assert loss.p.item() == pytest.approx(y_all.mean().item(), abs=2e-3)
    before = loss.p.clone()
    loss.eval()
    loss(torch.rand(10), torch.ones(10))
    assert torch.equal(loss.p, before)


def test_fixed_imratio_not_changed_by_batches():
    loss = AUCMLoss(imratio=0.1)
    loss(torch.rand(8), torch.ones(8))
    assert loss.p.item() == pytest.approx(0.1)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_bad_imratio_rejected(bad):
    with pytest.raises(ValueError, match="imratio"):
        AUCMLoss(imratio=bad)


def test_bad_margin_rejected():
    with pytest.raises(ValueError, match="margin"):
        AUCMLoss(margin=0)


def test_batch_score_norm_is_per_column_l2_and_rank_preserving():
    h = torch.tensor([[0.2, 0.9], [0.4, 0.1], [0.8, 0.5]])
    out = batch_score_norm(h)
    np.testing.assert_allclose(out.norm(dim=0).numpy(), [1.0, 1.0], rtol=1e-6)
    assert torch.equal(out.argsort(0), h.argsort(0))
    loss = AUCMLoss(imratio=0.5, batch_score_norm=True, num_labels=2)
    plain = AUCMLoss(imratio=0.5, num_labels=2)
    y = torch.tensor([[1.0, 0], [0, 1], [1, 0]])
    assert loss(h, y).item() == pytest.approx(plain(out, y).item())


def test_focal_matches_formula_and_reduces_to_bce():
    rng = np.random.default_rng(7)
    z = rng.normal(size=100)
    y = (rng.uniform(size=100) < 0.3).astype(float)
    pr = 1 / (1 + np.exp(-z))
    pt = np.where(y == 1, pr, 1 - pr)
    at = np.where(y == 1, 0.25, 0.75)
    ref = np.mean(-at * (1 - pt) ** 2 * np.log(pt))
    got = FocalLoss(0.25, 2.0)(torch.tensor(z), torch.tensor(y)).item()
    assert got == pytest.approx(ref, rel=1e-9)
    half_bce = FocalLoss(0.5, 0.0)(torch.tensor(z), torch.tensor(y)).item()
    assert half_bce == pytest.approx(
        0.5 * BCELoss()(torch.tensor(z), torch.tensor(y)).item(), rel=1e-9
    )


def test_build_loss_switch_and_inputs():
    logits = torch.tensor([-2.0, 0.0, 3.0])
    for name in ["auc_m", "auc_s", "focal", "ce"]:
        fn = build_loss(name)
        x = loss_input(fn, logits)
        if name.startswith("auc"):
            assert torch.allclose(x, torch.sigmoid(logits))
        else:
            assert torch.equal(x, logits)
        assert torch.isfinite(fn(x, torch.tensor([0.0, 1.0, 1.0])))
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("hinge")


def test_bsn_on_logits_normalises_the_raw_logits():
    """The reference's BSN: ``z / ||z||_2`` over the batch of the linear outputs, no sigmoid."""
    torch.manual_seed(0)
    z = torch.randn(24, 2) * 3
    y = (torch.rand(24, 2) < 0.3).float()
    for setting in (True, "logits"):
        loss = AUCMLoss(margin=0.5, imratio=0.3, num_labels=2, batch_score_norm=setting)
        plain = AUCMLoss(margin=0.5, imratio=0.3, num_labels=2)
        set_params(loss, 0.1, -0.1, 0.2)
        set_params(plain, 0.1, -0.1, 0.2)
        assert loss.takes_logits and loss.batch_score_norm == "logits"
        got = loss(loss_input(loss, z), y)
        assert got.item() == pytest.approx(plain(torch.nn.functional.normalize(z, dim=0), y).item())
    torch.testing.assert_close(batch_score_norm(z), torch.nn.functional.normalize(z, dim=0))
    out = batch_score_norm(z)
    assert out.abs().max() <= 1 and (out < 0).any()  # logits keep their sign: scores in [-1, 1]


@pytest.mark.parametrize("cls", [AUCMLoss, AUCSLoss])
@pytest.mark.parametrize(
    ("setting", "mode", "takes_logits"),
    [(False, False, False), ("none", False, False), (True, "logits", True),
     ("logits", "logits", True), ("sigmoid", "sigmoid", False)],
)  # fmt: skip
def test_takes_logits_follows_batch_score_norm(cls, setting, mode, takes_logits):
    loss = cls(imratio=0.3, batch_score_norm=setting)
    assert loss.batch_score_norm == mode and loss.takes_logits is takes_logits
    z = torch.tensor([-2.0, 0.5, 3.0])
    fed = loss_input(loss, z)
    assert torch.equal(fed, z if takes_logits else torch.sigmoid(z))
    loss.batch_score_norm = True  # settable after construction, as the ablations do
    assert loss.takes_logits
    loss.batch_score_norm = False
    assert not loss.takes_logits


def l2_over_batch(z):
    """One column divided by its Euclidean norm, written out."""
    return z / z.norm()


def test_loss_input_feeds_logits_under_bsn_and_sigmoid_scores_otherwise():
    """What reaches F: normalised logits (BSN), normalised sigmoids ("sigmoid"), sigmoids."""
    torch.manual_seed(1)
    z = torch.randn(32) * 2
    y = (torch.rand(32) < 0.25).float()
    y[0] = 1.0
    plain = AUCMLoss(margin=0.3, imratio=0.25)
    set_params(plain, 0.05, -0.05, 0.1)
    expected = {
        True: l2_over_batch(z),
        "sigmoid": l2_over_batch(torch.sigmoid(z)),
        False: torch.sigmoid(z),
    }
    for setting, h in expected.items():
        loss = AUCMLoss(margin=0.3, imratio=0.25, batch_score_norm=setting)
        set_params(loss, 0.05, -0.05, 0.1)
        assert loss(loss_input(loss, z), y).item() == pytest.approx(plain(h, y).item(), rel=1e-6)
    # create_loss passes the setting through
    assert create_loss("auc_m", batch_score_norm=True).takes_logits
    assert not create_loss("auc_s", batch_score_norm="sigmoid").takes_logits


@pytest.mark.parametrize("bad", ["l2", 1.5, "True"])
def test_bad_batch_score_norm_rejected(bad):
    with pytest.raises(ValueError, match="batch_score_norm"):
        AUCMLoss(batch_score_norm=bad)


def test_bsn_class_mean_gap_is_bounded_by_the_batch_counts():
    """Under BSN the gap E[h|+] - E[h|-] of a batch is at most sqrt(1/n+ + 1/n-)
    (Cauchy-Schwarz with ||h|| = 1), reached by two-valued logits: the margins that can
    bind depend on how many positives a batch holds."""
    gen = torch.Generator().manual_seed(2)
    for n_pos, n_neg in [(1, 15), (2, 14), (8, 120)]:
        y = torch.cat([torch.ones(n_pos), torch.zeros(n_neg)])
        bound = (1 / n_pos + 1 / n_neg) ** 0.5
        for _ in range(50):
            h = batch_score_norm(torch.randn(n_pos + n_neg, generator=gen) + 2 * y)
            assert h[y == 1].mean() - h[y == 0].mean() <= bound + 1e-6
        best = batch_score_norm(y / n_pos - (1 - y) / n_neg)
        assert (best[y == 1].mean() - best[y == 0].mean()).item() == pytest.approx(bound)
