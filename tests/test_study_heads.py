"""The study's heads: drawn through the pipeline's factory, as torch draws them, or along the CE
head's direction; and the cache key that keeps runs made before the option existed."""

import dataclasses
import hashlib
import json
import math

import pytest
import torch
from torch import nn

from deepauc.models.factory import init_head
from deepauc.research.heads import ce_direction_head, fresh_head
from deepauc.research.study.config import AblationSpec, DatasetSpec, TrainSpec
from deepauc.research.study.jobs import Job
from deepauc.research.study.nets import build_model
from deepauc.research.study.runs import _spec_hash
from deepauc.research.study.training import run_job

NETS = [
    (DatasetSpec("digits", model="cnn", width=4, depth=2), (1, 8, 8)),
    (DatasetSpec("digits", model="mlp", width=12), (1, 8, 8)),
    (DatasetSpec("digits", model="resnet20"), (3, 8, 8)),
]


class Holder(nn.Module):
    """A bare nn.Linear behind timm's classifier protocol, for the factory's init_head."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.fc = nn.Linear(features, 1)

    def get_classifier(self) -> nn.Linear:
        return self.fc


@pytest.mark.parametrize("spec,shape", NETS, ids=[s.model for s, _ in NETS])
def test_study_reset_is_the_pipeline_factorys_init(spec, shape):
    net = build_model(spec, shape)
    features = net.get_classifier().in_features
    torch.manual_seed(11)
    fresh_head(net, "pipeline")
    torch.manual_seed(11)
    ref = init_head(Holder(features)).get_classifier()
    head = net.get_classifier()
    assert torch.equal(head.weight, ref.weight) and torch.equal(head.bias, torch.zeros(1))
    assert net(torch.zeros(2, *shape)).shape == (2,)  # the new head is the one used


def test_pipeline_head_has_the_pipelines_std():
    net = build_model(DatasetSpec("digits", model="mlp", width=20000), (1, 8, 8))
    torch.manual_seed(0)
    w = fresh_head(net, "pipeline").get_classifier().weight.detach()
    # 20000 draws of N(0, 0.01²): the sample std is within 2 % of 0.01 (about 4 standard errors)
    assert float(w.std()) == pytest.approx(0.01, rel=0.02)
    assert abs(float(w.mean())) < 4 * 0.01 / math.sqrt(w.numel())
    torch.manual_seed(0)
    default = fresh_head(net, "torch_default").get_classifier()
    # torch's U(±1/√d) has std 1/√(3d), about 0.0041 here: not the pipeline's draw
    assert float(default.weight.detach().std()) == pytest.approx(1 / math.sqrt(3 * 20000), rel=0.02)
    assert float(default.bias.abs()) > 0


def test_torch_default_is_todays_in_place_reset():
    spec, shape = NETS[0]
    a, b = build_model(spec, shape), build_model(spec, shape)
    b.load_state_dict(a.state_dict())
    torch.manual_seed(3)
    fresh_head(a, "torch_default")
    torch.manual_seed(3)
    b.head.reset_parameters()
    assert torch.equal(a.head.weight, b.head.weight) and torch.equal(a.head.bias, b.head.bias)


def test_ce_direction_keeps_the_ranking_at_the_pipeline_norm():
    torch.manual_seed(0)
    net = build_model(*NETS[0])
    with torch.no_grad():
        net.head.weight.normal_(0, 3.0)
        net.head.bias.fill_(-2.0)
    x = torch.randn(50, 1, 8, 8)
    net.eval()
    before = net(x).detach()
    w0 = net.head.weight.detach().clone()
    ce_direction_head(net)
    after = net(x).detach()
    d = w0.numel()
    assert float(net.head.weight.norm()) == pytest.approx(0.01 * math.sqrt(d), rel=1e-6)
    cos = float((net.head.weight * w0).sum() / (net.head.weight.norm() * w0.norm()))
    assert cos == pytest.approx(1.0, abs=1e-6) and float(net.head.bias) == 0.0
    torch.testing.assert_close(after, (before + 2.0) * 0.01 * math.sqrt(d) / w0.norm())
    with torch.no_grad():
        net.head.weight.zero_()
    with pytest.raises(ValueError, match="norm"):
        ce_direction_head(net)


def _stage_heads(monkeypatch, job, tspec):
    from deepauc.research.study import training

    calls = []
    original = training.train_stage

    def recording(job, model, *args, **kw):
        start = (model.head.weight.detach().clone(), model.head.bias.detach().clone())
        out = original(job, model, *args, **kw)
        calls.append((start, (model.head.weight.detach().clone(), model.head.bias.detach())))
        return out

    monkeypatch.setattr(training, "train_stage", recording)
    spec = DatasetSpec("digits", epochs=1, batch_size=128, width=4, imratios=[0.1])
    abl = AblationSpec(finetune_epochs_fraction=1.0)
    run_job(job, spec, tspec, abl, None)
    return calls


PRM = (("ce_lr", 0.3), ("epoch_decay", 0.01), ("lr", 0.2), ("margin", 0.5))


def test_two_stage_fresh_head_follows_head_init(monkeypatch):
    job = Job("digits", 0.1, 0, "two_stage_paper", PRM)
    (start1, end1), (start2, _) = _stage_heads(monkeypatch, job, TrainSpec(head_init="pipeline"))
    assert torch.equal(start1[1], torch.zeros(1))  # the built head: the pipeline's draw too
    assert torch.equal(start2[1], torch.zeros(1)) and not torch.equal(start2[0], end1[0])
    assert float(start2[0].std()) < 0.03  # N(0, 0.01²) over 16 weights, not the CE head
    calls = _stage_heads(monkeypatch, job, TrainSpec())
    assert float(calls[1][0][1].abs()) > 0  # torch_default: a uniform bias, as before


def test_ce_direction_tweak_starts_along_the_ce_head(monkeypatch):
    job = Job("digits", 0.1, 0, "two_stage_paper", PRM, tweak="head_ce_direction")
    (_, end1), (start2, _) = _stage_heads(monkeypatch, job, TrainSpec(head_init="pipeline"))
    w_ce, w2 = end1[0], start2[0]
    assert float((w_ce * w2).sum() / (w_ce.norm() * w2.norm())) == pytest.approx(1.0, abs=1e-6)
    assert float(w2.norm()) == pytest.approx(0.01 * math.sqrt(w2.numel()), rel=1e-5)
    assert float(start2[1]) == 0.0


def test_new_train_keys_at_their_defaults_keep_the_cache_key():
    """Runs cached before head_init and eval_epochs existed keep their key (the hash of the
    settings they had); any other value is a different run."""
    spec = DatasetSpec("digits", width=4)
    d = dataclasses.asdict(spec)
    for k in ("imratios", "tune_seeds", "grids"):
        d.pop(k)
    t = dataclasses.asdict(TrainSpec())
    del t["head_init"], t["eval_epochs"]
    before = hashlib.sha1(json.dumps([d, t], sort_keys=True, default=str).encode()).hexdigest()
    assert _spec_hash(spec, TrainSpec()) == before[:12]
    assert _spec_hash(spec, TrainSpec(head_init="pipeline")) != before[:12]
    assert _spec_hash(spec, TrainSpec(eval_epochs=True)) != before[:12]
