"""PESG against Algorithm 1 written out by hand."""

import copy

import pytest
import torch
from torch import nn

from deepauc.losses import AUCMLoss, AUCSLoss, BCELoss, loss_input
from deepauc.optim import PESG, average_grads, end_stage, mean_over_ranks


def tiny_problem(seed=0, n=64, d=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (torch.rand(n, generator=g) < 0.2).float()
    y[0] = 1.0
    return x, y


def make(seed=0, loss_cls=AUCMLoss, **kw):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 8), nn.ELU(), nn.Linear(8, 1))
    loss = loss_cls(imratio=0.2) if loss_cls is AUCSLoss else loss_cls(margin=0.6, imratio=0.2)
    opt = PESG(model.parameters(), loss, **kw)
    return model, loss, opt


def train_steps(model, loss, opt, x, y, steps, start=0, stage_every=None):
    for t in range(start, steps):
        idx = torch.arange(t * 16, t * 16 + 16) % x.shape[0]
        opt.zero_grad()
        out = loss(loss_input(loss, model(x[idx]).squeeze(1)), y[idx])
        out.backward()
        opt.step()
        if stage_every and (t + 1) % stage_every == 0:
            opt.next_stage(2.0)


@pytest.mark.parametrize("dual", ["paper", "normalized"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_one_step_equals_algorithm1(dual, momentum):
    x, y = tiny_problem()
    model, loss, opt = make(
        lr=0.05, epoch_decay=0.01, weight_decay=1e-3, momentum=momentum, dual=dual
    )
    with torch.no_grad():
        loss.a.fill_(0.3)
        loss.b.fill_(0.1)
        loss.alpha.fill_(0.2)
        for p in model.parameters():  # move away from v_ref so the γ term is non-zero
            p.add_(0.1)
    v_ref = [p.detach().clone() - 0.1 for p in model.parameters()]
    before = [p.detach().clone() for p in model.parameters()] + [
        loss.a.detach().clone(),
        loss.b.detach().clone(),
    ]
    refs = v_ref + [torch.zeros(1), torch.zeros(1)]
    alpha0 = loss.alpha.detach().clone()
    opt.zero_grad()
    loss(torch.sigmoid(model(x).squeeze(1)), y).backward()
    grads = [p.grad.clone() for p in model.parameters()] + [
        loss.a.grad.clone(),
        loss.b.grad.clone(),
    ]
    g_alpha = loss.alpha.grad.clone()
    opt.step()
    after = list(model.parameters()) + [loss.a, loss.b]
    for v0, g, r, v1 in zip(before, grads, refs, after):
        # first step: momentum buffer = d, so heavy-ball equals plain
        expected = v0 - 0.05 * (g + 0.01 * (v0 - r)) - 0.05 * 1e-3 * v0
        torch.testing.assert_close(v1.detach(), expected, rtol=1e-6, atol=1e-7)
    scale = 0.2 * 0.8 if dual == "normalized" else 1.0
    torch.testing.assert_close(
        loss.alpha.detach(), torch.clamp(alpha0 + 0.05 * g_alpha / scale, min=0)
    )


def test_momentum_second_step_uses_buffer():
    x, y = tiny_problem()
    model, loss, opt = make(lr=0.05, epoch_decay=0.0, weight_decay=0.0, momentum=0.5)
    w = model[0].weight
    ds = []
    for _ in range(2):
        opt.zero_grad()
        loss(torch.sigmoid(model(x).squeeze(1)), y).backward()
        ds.append(w.grad.clone())
        w_before = w.detach().clone()
        opt.step()
    torch.testing.assert_close(w.detach(), w_before - 0.05 * (0.5 * ds[0] + ds[1]))


def test_v_ref_starts_at_initial_weights_and_next_stage_averages_iterates():
    x, y = tiny_problem()
    model, loss, opt = make(lr=0.1)
    init = [p.detach().clone() for p in model.parameters()]
    for p, p0 in zip(model.parameters(), init):
        assert torch.equal(opt.state[p]["v_ref"], p0)
    iterates = []
    for t in range(5):
        train_steps(model, loss, opt, x, y, t + 1, start=t)
        iterates.append([p.detach().clone() for p in model.parameters()])
    lr_before = opt.param_groups[0]["lr"]
    opt.next_stage(4.0)
    for i, p in enumerate(model.parameters()):
        mean = torch.stack([it[i] for it in iterates]).mean(0)
        torch.testing.assert_close(opt.state[p]["v_ref"], mean)
        assert torch.count_nonzero(opt.state[p]["stage_sum"]) == 0
    assert all(g["lr"] == pytest.approx(lr_before / 4.0) for g in opt.param_groups)
    assert all(g["stage_steps"] == 0 for g in opt.param_groups)
    # a and b are primal variables too: their v_ref is their stage average
    assert "v_ref" in opt.state[loss.a] and "v_ref" not in opt.state[loss.alpha]


def test_alpha_never_negative_for_aucm_but_free_for_aucs():
    x, y = tiny_problem()
    for cls, nonneg in [(AUCMLoss, True), (AUCSLoss, False)]:
        model, loss, opt = make(loss_cls=cls, lr=0.5)
        with torch.no_grad():  # scores far apart: the ascent direction pushes α down
            model[2].bias.fill_(0.0)
            loss.alpha.fill_(0.05)
        seen_negative = False
        for _ in range(30):
            opt.zero_grad()
            h = torch.where(y > 0, torch.full_like(y, 0.99), torch.full_like(y, 0.01))
            h = h + 0 * model(x).squeeze(1)
            loss(h, y).backward()
            opt.step()
            seen_negative |= loss.alpha.item() < 0
        assert seen_negative != nonneg
        if nonneg:
            assert loss.alpha.item() == 0.0


def test_save_load_continue_equals_uninterrupted_bit_for_bit():
    x, y = tiny_problem(n=96)
    model_a, loss_a, opt_a = make(lr=0.1, momentum=0.9)
    train_steps(model_a, loss_a, opt_a, x, y, 20, stage_every=7)

    model_b, loss_b, opt_b = make(lr=0.1, momentum=0.9)
    train_steps(model_b, loss_b, opt_b, x, y, 9, stage_every=7)
    saved_model = copy.deepcopy(model_b.state_dict())
    saved_opt = copy.deepcopy(opt_b.state_dict())

    model_c, loss_c, opt_c = make(
        seed=123, lr=0.1, momentum=0.9
    )  # different init: all must come from the checkpoint
    model_c.load_state_dict(saved_model)
    opt_c.load_state_dict(saved_opt)
    assert torch.equal(loss_c.alpha, loss_b.alpha) and torch.equal(loss_c.a, loss_b.a)
    train_steps(model_c, loss_c, opt_c, x, y, 20, start=9, stage_every=7)
    for pa, pc in zip(model_a.parameters(), model_c.parameters()):
        assert torch.equal(pa, pc)
    for name in ["a", "b", "alpha", "p"]:
        assert torch.equal(getattr(loss_a, name), getattr(loss_c, name))


def test_dual_mode_mismatch_refused():
    model, loss, opt = make(dual="paper")
    _, _, opt2 = make(dual="normalized")
    with pytest.raises(ValueError, match="dual"):
        opt2.load_state_dict(opt.state_dict())


def test_without_auc_loss_is_proximal_sgd():
    x, y = tiny_problem()
    torch.manual_seed(0)
    model = nn.Linear(5, 1)
    opt = PESG(model.parameters(), BCELoss(), lr=0.1, epoch_decay=0.0, weight_decay=0.0)
    ref = copy.deepcopy(model)
    sgd = torch.optim.SGD(ref.parameters(), lr=0.1)
    for m, o in [(model, opt), (ref, sgd)]:
        o.zero_grad()
        BCELoss()(m(x).squeeze(1), y).backward()
        o.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q)


def test_invalid_arguments():
    model = nn.Linear(2, 1)
    with pytest.raises(ValueError, match="lr"):
        PESG(model.parameters(), AUCMLoss(), lr=-1)
    with pytest.raises(ValueError, match="dual"):
        PESG(model.parameters(), AUCMLoss(), dual="libauc")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_step_matches_cpu():
    x, y = tiny_problem()
    model, loss, opt = make(lr=0.1, momentum=0.9)
    model_g, loss_g, opt_g = make(lr=0.1, momentum=0.9)
    model_g.cuda()
    loss_g.cuda()
    opt_g = PESG(model_g.parameters(), loss_g, lr=0.1, momentum=0.9)
    train_steps(model, loss, opt, x, y, 5)
    train_steps(model_g, loss_g, opt_g, x.cuda(), y.cuda(), 5)
    for p, q in zip(model.parameters(), model_g.parameters()):
        torch.testing.assert_close(p, q.cpu(), rtol=1e-4, atol=1e-5)


def run_bsn_margin(batch_score_norm, margin, seed=0, steps=400, lr=0.3, batch=16, n=256):
    """PESG on AUC-M with the given BSN setting on separable data (about 12% positives);
    returns the steps where α's projection on α ≥ 0 acted, and the final a - b and α."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = (x[:, 0] > 1.2).float()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 8), nn.ELU(), nn.Linear(8, 1))
    loss = AUCMLoss(margin=margin, imratio=y.mean().item(), batch_score_norm=batch_score_norm)
    opt = PESG(model.parameters(), loss, lr=lr, epoch_decay=1e-3, weight_decay=1e-4)
    projected = []
    for t in range(steps):
        idx = torch.arange(t * batch, (t + 1) * batch) % n
        opt.zero_grad()
        loss(loss_input(loss, model(x[idx])), y[idx]).backward()
        unprojected = loss.alpha.detach() + lr * loss.alpha.grad / loss.dual_scale()
        opt.step()
        if unprojected.item() < 0:
            assert loss.alpha.item() == 0.0
            projected.append(t)
    return projected, (loss.a - loss.b).item(), loss.alpha.item()


def test_margin_binds_with_bsn_on_logits():
    """With BSN on the logits a margin m < 1 is reached: the class-mean gap a - b passes m
    and the projection α ≥ 0 acts on many steps, through the last quarter of training. On
    normalised sigmoid scores the same run keeps a - b below the same margin."""
    m, steps = 0.1, 400
    projected, gap, _ = run_bsn_margin(True, m, steps=steps)
    assert len(projected) > steps // 4
    assert sum(t >= 3 * steps // 4 for t in projected) > steps // 16
    assert gap > m
    _, gap_sigmoid, _ = run_bsn_margin("sigmoid", m, steps=steps)
    assert gap_sigmoid < m


def test_update_regularizer_is_next_stage():
    """LibAUC's stage methods: update_regularizer = next_stage, update_lr moves η only."""
    x, y = tiny_problem()
    runs = []
    for libauc_names in (False, True):
        model, loss, opt = make(lr=0.1, momentum=0.9)
        train_steps(model, loss, opt, x, y, 5)
        if libauc_names:
            opt.update_regularizer(decay_factor=10)
        else:
            opt.next_stage(10)
        train_steps(model, loss, opt, x, y, 8, start=5)
        if libauc_names:
            opt.update_regularizer()  # None: η kept, v_ref moved
        else:
            opt.next_stage(1.0)
        runs.append((model, opt))
    (model_a, opt_a), (model_b, opt_b) = runs
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(p, q)
        assert torch.equal(opt_a.state[p]["v_ref"], opt_b.state[q]["v_ref"])
    assert opt_b.lr == pytest.approx(0.01) and opt_a.lr == opt_b.lr
    opt_b.update_lr(2.0)
    assert all(g["lr"] == pytest.approx(0.005) for g in opt_b.param_groups)
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(opt_a.state[p]["v_ref"], opt_b.state[q]["v_ref"])


def test_end_stage_divides_lr_and_sets_v_ref_to_the_stage_average():
    x, y = tiny_problem(seed=3)
    model, loss, opt = make(seed=3, lr=0.2, epoch_decay=0.01)
    primal = list(model.parameters()) + [loss.a, loss.b]
    iterates = []
    for t in range(4):
        train_steps(model, loss, opt, x, y, t + 1, start=t)
        iterates.append([p.detach().clone() for p in primal])
    alpha = loss.alpha.detach().clone()
    end_stage(opt, 5.0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.2 / 5] * len(opt.param_groups))
    for i, p in enumerate(primal):  # the weights after each step of the stage, averaged by hand
        mean = sum(it[i] for it in iterates) / len(iterates)
        torch.testing.assert_close(opt.state[p]["v_ref"], mean)
        assert torch.equal(p, iterates[-1][i])  # ending a stage moves no weight
    assert torch.equal(loss.alpha, alpha)


class _LibAUCStylePESG:
    """What end_stage may rely on in LibAUC's PESG: ``update_regularizer(decay_factor=...)``."""

    def __init__(self):
        self.calls = []

    def update_regularizer(self, decay_factor=None):
        self.calls.append(decay_factor)


def test_end_stage_calls_libaucs_stage_method():
    opt = _LibAUCStylePESG()
    end_stage(opt, 10.0)
    assert opt.calls == [10.0]


def test_end_stage_refuses_an_optimizer_without_stages_and_leaves_it_alone():
    """Choice: a plain torch optimizer is refused (its lr decay is the caller's), not skipped."""
    w = nn.Parameter(torch.ones(3))
    sgd = torch.optim.SGD([w], lr=0.1)
    with pytest.raises(TypeError, match="SGD has no PESG stage to end"):
        end_stage(sgd, 10.0)
    assert sgd.param_groups[0]["lr"] == 0.1
    _, _, opt = make(lr=0.1)
    with pytest.raises(ValueError, match="decay_factor must be > 0"):
        end_stage(opt, 0.0)
    assert opt.param_groups[0]["lr"] == 0.1


def test_average_grads_needs_no_process_group_and_checks_missing():
    w = nn.Parameter(torch.ones(2))
    w.grad = torch.tensor([1.0, 3.0])
    v = nn.Parameter(torch.ones(1))
    average_grads([w, v], missing="zero")  # one process: nothing to average, nothing filled
    assert torch.equal(w.grad, torch.tensor([1.0, 3.0])) and v.grad is None
    with pytest.raises(ValueError, match="missing must be"):
        average_grads([w], missing="drop")


def _average_on_rank(rank: int, world: int, init: str, out: str) -> None:
    """One gloo rank: gradients and a scalar that differ by rank, averaged, saved for the test."""
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        both = nn.Parameter(torch.zeros(2))
        both.grad = torch.tensor([1.0, 2.0]) * (rank + 1)
        none = nn.Parameter(torch.zeros(1))  # no gradient on any rank
        some = nn.Parameter(torch.zeros(3))  # a gradient on the last rank only
        if rank == world - 1:
            some.grad = torch.full((3,), 6.0)
        average_grads([both, none])
        average_grads([some], missing="zero")
        scalar = torch.tensor(float(rank))
        mean_over_ranks([scalar])
        torch.save({"both": both.grad, "none": none.grad, "some": some.grad, "scalar": scalar}, out)
    finally:
        torch.distributed.destroy_process_group()


def _average_worker(rank: int, world: int, tmp: str) -> None:
    _average_on_rank(rank, world, f"file://{tmp}/rendezvous", f"{tmp}/rank{rank}.pt")


@pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed")
def test_average_grads_over_two_gloo_ranks(tmp_path):
    """skip: a parameter without a gradient stays without one; zero: it counts as zeros."""
    import torch.multiprocessing as mp

    mp.spawn(_average_worker, args=(2, str(tmp_path)), nprocs=2)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(got["both"], torch.tensor([1.5, 3.0]))  # (1 + 2) / 2, (2 + 4) / 2
        assert got["none"] is None
        assert torch.equal(got["some"], torch.full((3,), 3.0))  # (0 + 6) / 2
        assert got["scalar"].item() == 0.5  # (0 + 1) / 2


def _closed_form_setup(a, b, alpha, margin=0.6, imratio=0.2, loss_cls=AUCMLoss, dual="closed_form"):
    """A float64 net, loss and PESG with a, b, α set, and one batch's gradients in place."""
    torch.manual_seed(0)
    model = nn.Linear(5, 1).double()
    kw = {} if loss_cls is AUCSLoss else {"margin": margin}
    loss = loss_cls(imratio=imratio, **kw).double()
    opt = PESG(model.parameters(), loss, lr=0.05, epoch_decay=0.0, weight_decay=0.0, dual=dual)
    with torch.no_grad():
        loss.a.fill_(a)
        loss.b.fill_(b)
        loss.alpha.fill_(alpha)
    x, y = tiny_problem()
    opt.zero_grad()
    loss(torch.sigmoid(model(x.double()).squeeze(1)), y.double()).backward()
    return model, loss, opt, x.double(), y.double()


def test_closed_form_dual_step_is_the_formula():
    """α ← max(0, α + 2η(m + b − a − α)), with a, b read before the primal step moves them."""
    _, loss, opt, _, _ = _closed_form_setup(a=0.7, b=0.2, alpha=0.3)
    assert loss.a.grad is not None and float(loss.a.grad) != 0.0  # a does move in this step
    opt.step()
    expected = 0.3 + 2 * 0.05 * (0.6 + 0.2 - 0.7 - 0.3)  # = 0.28, by hand
    assert loss.alpha.dtype == torch.float64
    assert float(loss.alpha) == pytest.approx(expected, abs=1e-15)
    assert float(loss.a) != 0.7  # the primal step ran after the dual one


def test_closed_form_keeps_alpha_nonnegative_for_aucm_only():
    # m + b − a − α = 0.1 + 0 − 0.9 − 0.05 < 0: one step would take α to −0.03
    _, loss, opt, _, _ = _closed_form_setup(a=0.9, b=0.0, alpha=0.05, margin=0.1)
    opt.step()
    assert float(loss.alpha) == 0.0
    _, loss_s, opt_s, _, _ = _closed_form_setup(a=1.9, b=0.0, alpha=0.05, loss_cls=AUCSLoss)
    opt_s.step()  # AUC-S: m = 1, no projection
    assert float(loss_s.alpha) == pytest.approx(0.05 + 0.1 * (1.0 - 1.9 - 0.05), abs=1e-15)


def test_closed_form_fixed_point_is_m_plus_b_minus_a():
    star = 0.6 + 0.25 - 0.5
    _, loss, opt, _, _ = _closed_form_setup(a=0.5, b=0.25, alpha=star)
    opt.step()
    assert float(loss.alpha) == pytest.approx(star, abs=1e-15)
    # away from it the distance contracts by (1 − 2η) per step
    _, loss, opt, _, _ = _closed_form_setup(a=0.5, b=0.25, alpha=star + 0.2)
    opt.step()
    assert float(loss.alpha) - star == pytest.approx(0.2 * (1 - 2 * 0.05), abs=1e-15)


def test_normalized_equals_closed_form_when_a_b_are_the_class_means():
    """With p the batch's positive share and a, b its class means of h, ∇_α F / (p(1−p))
    is exactly 2(m + b − a − α) on that batch; over batches drawn at random with p the
    population share and a, b the population means it is so in expectation."""
    x, y = tiny_problem()
    torch.manual_seed(0)
    model = nn.Linear(5, 1).double()
    h = torch.sigmoid(model(x.double()).squeeze(1)).detach()
    a, b, p = float(h[y == 1].mean()), float(h[y == 0].mean()), float(y.mean())
    steps = {}
    for dual in ("normalized", "closed_form"):
        _, loss, opt, _, _ = _closed_form_setup(a=a, b=b, alpha=0.3, imratio=p, dual=dual)
        opt.step()
        steps[dual] = float(loss.alpha)
    assert steps["normalized"] == pytest.approx(steps["closed_form"], abs=1e-12)
    assert steps["closed_form"] == pytest.approx(0.3 + 0.1 * (0.6 + b - a - 0.3), abs=1e-12)
    # in expectation: the mean normalized step over every batch of a partition of the rows
    g = torch.Generator().manual_seed(1)
    normalized = []
    for _ in range(50):
        perm = torch.randperm(len(y), generator=g)
        for idx in perm.view(4, -1):
            loss = AUCMLoss(margin=0.6, imratio=p).double()
            with torch.no_grad():
                loss.a.fill_(a)
                loss.b.fill_(b)
                loss.alpha.fill_(0.3)
            loss(h[idx], y[idx].double()).backward()
            normalized.append(float(loss.alpha.grad) / (p * (1 - p)))
    expected = 2 * (0.6 + b - a - 0.3)
    assert sum(normalized) / len(normalized) == pytest.approx(expected, abs=1e-12)


def test_closed_form_survives_a_checkpoint():
    _, _, opt, _, _ = _closed_form_setup(a=0.1, b=0.0, alpha=0.0)
    sd = opt.state_dict()
    assert sd["dual"] == "closed_form"
    _, _, other, _, _ = _closed_form_setup(a=0.1, b=0.0, alpha=0.0, dual="normalized")
    with pytest.raises(ValueError, match="closed_form"):
        other.load_state_dict(sd)
