"""LibAUC users switch by the import line: its training loop, keywords and stage methods."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

# A LibAUC script imports ``from libauc.losses import AUCMLoss`` and
# ``from libauc.optimizers import PESG``; these import lines are the only change.
from deepauc import PESG, AUCMLoss, roc_auc
from deepauc.losses import batch_score_norm


def imbalanced_loaders(seed=0, n_train=1024, n_test=512, dim=10, imratio=0.1):
    """Gaussian classes (best AUC about 0.97), 10% positives; labels as a (N, 1) float column, as LibAUC's are."""
    gen = torch.Generator().manual_seed(seed)

    def sample(n):
        y = (torch.rand(n, generator=gen) < imratio).float()
        x = torch.randn(n, dim, generator=gen) + 1.5 * y[:, None] * torch.linspace(1, 0, dim)
        return x, y[:, None]

    train, test = TensorDataset(*sample(n_train)), TensorDataset(*sample(n_test))
    return (
        DataLoader(train, batch_size=32, shuffle=True, drop_last=True, generator=gen),
        DataLoader(test, batch_size=128, shuffle=False),
    )


def evaluate(model, testloader):
    model.eval()
    with torch.no_grad():
        preds, labels = zip(*[(torch.sigmoid(model(x)), y) for x, y in testloader])
    model.train()
    return roc_auc(torch.cat(labels).numpy(), torch.cat(preds).numpy())


def test_libauc_readme_training_loop_runs_with_only_the_imports_changed():
    torch.manual_seed(0)
    trainloader, testloader = imbalanced_loaders()
    device = torch.device("cpu")
    model = nn.Sequential(nn.Linear(10, 16), nn.ELU(), nn.Linear(16, 1)).to(device)
    auc_before = evaluate(model, testloader)

    # ---- the loop as LibAUC's documentation writes it, unchanged ----
    lr, margin, epoch_decay, weight_decay = 0.1, 1.0, 0.003, 1e-4
    total_epochs, decay_epochs = 6, [3, 5]
    loss_fn = AUCMLoss(margin=margin, imratio=0.1, device=device)
    optimizer = PESG(
        model.parameters(),
        loss_fn=loss_fn,
        lr=lr,
        momentum=0.9,
        margin=margin,
        epoch_decay=epoch_decay,
        weight_decay=weight_decay,
        verbose=False,
        device=device,
    )
    for epoch in range(total_epochs):
        if epoch in decay_epochs:
            optimizer.update_regularizer(decay_factor=10)
        model.train()
        for data, targets in trainloader:
            data, targets = data.to(device), targets.to(device)
            logits = model(data)
            preds = torch.sigmoid(logits)
            loss = loss_fn(preds, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    # ---- end of the loop ----

    assert optimizer.lr == pytest.approx(lr / 100)
    auc_after = evaluate(model, testloader)
    assert np.isfinite(loss.item())
    assert auc_after > auc_before + 0.1 and auc_after > 0.93


def test_libauc_keywords_that_mean_the_same_are_accepted():
    model = nn.Linear(3, 1)
    loss = AUCMLoss(0.5, 0.2, device="cpu")  # LibAUC's positional margin, imratio
    assert loss.margin == 0.5 and loss.p.item() == pytest.approx(0.2)
    opt = PESG(
        model.parameters(),
        loss_fn=loss,
        lr=0.05,
        mode="SGD",
        margin=0.5,
        epoch_decay=1e-3,
        weight_decay=1e-5,
        momentum=0.0,
        verbose=True,
        device=torch.device("cpu"),
    )
    assert opt.lr == 0.05 and opt.loss_fn is loss
    assert len(PESG(model, loss_fn=loss).param_groups) == 3  # a module as LibAUC 1.1 took it


@pytest.mark.parametrize(
    ("keywords", "error", "match"),
    [
        ({"mode": "adam"}, ValueError, "mode='sgd' only"),
        ({"clip_value": 1.0}, ValueError, "clip_grad_value_"),
        ({"betas": (0.9, 0.99)}, ValueError, "adam"),
        ({"amsgrad": True}, ValueError, "adam"),
        ({"gamma": 500}, ValueError, "epoch_decay=1/gamma"),
        ({"a": None}, ValueError, "loss_fn="),
        ({"margin": 0.3}, ValueError, "margin belongs to the loss"),
        ({"no_such_option": 1}, TypeError, "unexpected keyword"),
    ],
)
def test_libauc_keywords_that_mean_something_else_are_refused(keywords, error, match):
    with pytest.raises(error, match=match):
        PESG(nn.Linear(3, 1).parameters(), loss_fn=AUCMLoss(margin=1.0), **keywords)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_aucm_version_refused_with_pointer(version):
    with pytest.raises(ValueError, match="docs/method.md"):
        AUCMLoss(margin=1.0, version=version)


def test_one_label_as_column_or_vector():
    """LibAUC reshapes predictions and labels to (N, 1); a (N, 1) model output with (N,)
    labels gives the same loss here, while shapes that disagree otherwise are refused."""
    torch.manual_seed(0)
    h, y = torch.rand(16), (torch.rand(16) < 0.3).float()
    loss = AUCMLoss(imratio=0.3)
    with torch.no_grad():
        loss.alpha.fill_(0.2)
    value = loss(h, y)
    assert loss(h[:, None], y).item() == pytest.approx(value.item())
    assert loss(h, y[:, None]).item() == pytest.approx(value.item())
    with pytest.raises(ValueError, match="differ in shape"):
        AUCMLoss(num_labels=2)(torch.rand(8, 2), torch.ones(8))
    with pytest.raises(ValueError, match="differ in shape"):
        loss(torch.rand(8), torch.ones(7))


def test_bsn_is_libauc_l2_last_activation():
    """The reference's models with ``last_activation='l2'`` normalise the linear output over
    the batch; checked against LibAUC's own network when LibAUC is installed."""
    resnet_cifar = pytest.importorskip("libauc.models.resnet_cifar")
    torch.manual_seed(0)
    net = resnet_cifar.resnet20(last_activation=None, num_classes=1).eval()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        logits = net(x)
        net.last_activation = "l2"
        normalised = net(x)
    torch.testing.assert_close(normalised, batch_score_norm(logits))
