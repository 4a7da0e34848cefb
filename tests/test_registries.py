"""Contract tests over every entry of every registry: external sources and their layouts,
competition layouts, backbone families, losses and optimizers. The cases are enumerated from
the registries, so a new entry without a fixture here fails."""

import inspect
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from deepauc.cli import main
from deepauc.data.external import build_training_table
from deepauc.data.external.files import strip_suffix
from deepauc.data.external.registry import EXTERNAL_SOURCES, detect_external, layout_spec
from deepauc.data.external.sources import load_competition
from deepauc.data.layouts import COMPETITION_LOOKED_FOR, detect_competition
from deepauc.losses import LOSSES, auc_variables, create_loss, loss_input
from deepauc.models.factory import (
    FAMILIES,
    check_grad_checkpointing,
    create_model,
    enable_grad_checkpointing,
    family_of,
    model_family,
    reset_head,
)
from deepauc.optim import OPTIMIZERS, create_optimizer, is_stagewise, owns_loss
from layout_fixtures import (
    TRAIN_HEADER,
    write_ham10000,
    write_isic2017,
    write_isic2018_task3,
    write_isic2019,
    write_kaggle2020,
    write_malignant,
    write_malignant_v2,
    write_resized2019,
    write_resized2020,
)

# The published training-table columns (the competition's train.csv header).
PUBLISHED = TRAIN_HEADER.split(",")

# One fixture per registered layout: a writer of a tiny folder in that published layout.
EXTERNAL_FIXTURES = {
    "isic2019": write_isic2019,
    "resized2019": write_resized2019,
    "isic2018_task3": write_isic2018_task3,
    "ham10000": write_ham10000,
    "isic2017": write_isic2017,
    "malignant_v2": write_malignant_v2,
    "malignant": write_malignant,
}
COMPETITION_FIXTURES = {"kaggle2020": write_kaggle2020, "resized2020": write_resized2020}
# One tiny architecture per backbone family, and the module it needs.
FAMILY_FIXTURES = {
    "timm": ("mobilenetv3_small_050", "timm"),
    "efficientnet_pytorch": ("efficientnet_pytorch/efficientnet-b0", "efficientnet_pytorch"),
}

EXTERNAL_CASES = [
    (source, spec.name) for source in EXTERNAL_SOURCES for spec in EXTERNAL_SOURCES[source].layouts
]


def fixture(table: dict, name: str, registry: str):
    assert name in table, f"{registry} entry {name!r} has no fixture in tests/test_registries.py"
    return table[name]


@pytest.mark.parametrize(
    ("table", "registered"),
    [
        (EXTERNAL_FIXTURES, [layout for _, layout in EXTERNAL_CASES]),
        (COMPETITION_FIXTURES, list(COMPETITION_LOOKED_FOR)),
        (FAMILY_FIXTURES, list(FAMILIES)),
    ],
)
def test_no_fixture_for_an_entry_that_is_not_registered(table, registered):
    assert sorted(table) == sorted(set(registered))


@pytest.mark.parametrize(("source", "layout"), EXTERNAL_CASES)
def test_external_layout_is_detected_and_read_into_training_rows(tmp_path, source, layout):
    folder = fixture(EXTERNAL_FIXTURES, layout, "layout")(tmp_path / "ext" / layout)
    assert detect_external(folder, source).name == layout
    rows = layout_spec(layout).read(folder, tmp_path)
    assert len(rows) > 0
    assert list(rows.columns[: len(PUBLISHED)]) == PUBLISHED
    assert {"source", "image_path"} <= set(rows.columns)
    assert (rows["source"] == source).all() and set(rows["target"]) <= {0, 1}
    assert rows["image_name"].is_unique
    for name, rel in zip(rows["image_name"], rows["image_path"]):
        image = tmp_path / rel
        assert image.is_file() and image.resolve().is_relative_to(folder.resolve())
        assert strip_suffix(image.stem) == name


@pytest.mark.parametrize("source", list(EXTERNAL_SOURCES))
def test_external_option_and_flag_give_the_same_table(tmp_path, capsys, source):
    spec = EXTERNAL_SOURCES[source]
    layout = spec.layouts[0].name
    root = write_kaggle2020(tmp_path / "siim", with_dicom=False)
    folder = fixture(EXTERNAL_FIXTURES, layout, "layout")(tmp_path / layout)
    base = ["external", "--train-csv", str(root / "train.csv"), "--no-content-dedup"]
    outs = []
    for i, option in enumerate([[spec.option, str(folder)], ["--external", f"{source}={folder}"]]):
        out = tmp_path / f"out{i}.csv"
        assert main([*base, *option, "--out", str(out)]) == 0
        outs.append((out.read_bytes(), capsys.readouterr().out.replace(str(out), "OUT")))
    assert outs[0] == outs[1]
    table = pd.read_csv(tmp_path / "out0.csv")
    assert (table["source"] == source).any() and f"{source} = {layout}" in outs[0][1]


@pytest.mark.parametrize("source", list(EXTERNAL_SOURCES))
def test_external_folder_in_no_layout_names_every_layout_looked_for(tmp_path, source):
    root = write_kaggle2020(tmp_path / "siim", with_dicom=False)
    folder = tmp_path / "mystery"
    folder.mkdir()
    (folder / "a.csv").write_text("a\n1\n")
    (folder / "b.csv").write_text("b\n1\n")
    with pytest.raises(ValueError, match=f"not a known {source} layout; looked for") as err:
        build_training_table(root / "train.csv", external={source: folder})
    assert str(err.value).count(";") == len(EXTERNAL_SOURCES[source].layouts)
    assert all(spec.looked_for in str(err.value) for spec in EXTERNAL_SOURCES[source].layouts)


def test_unknown_external_source_lists_the_known_ones(tmp_path, capsys):
    root = write_kaggle2020(tmp_path / "siim", with_dicom=False)
    with pytest.raises(ValueError, match="unknown external source 'isic2016'; known: ") as err:
        build_training_table(root / "train.csv", external={"isic2016": tmp_path})
    assert all(name in str(err.value) for name in EXTERNAL_SOURCES)
    args = ["external", "--train-csv", str(root / "train.csv"), "--out", str(tmp_path / "o.csv")]
    with pytest.raises(SystemExit) as code:
        main([*args, "--external", f"isic2016={tmp_path}"])
    assert code.value.code == 2
    err_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown external source 'isic2016'" in err_line
    assert all(name in err_line for name in EXTERNAL_SOURCES)
    assert not (tmp_path / "o.csv").exists()


def test_one_source_given_twice_with_two_folders_is_refused(tmp_path):
    root = write_kaggle2020(tmp_path / "siim", with_dicom=False)
    a, b = write_malignant(tmp_path / "a"), write_malignant(tmp_path / "b")
    with pytest.raises(ValueError, match="'malignant' given twice"):
        build_training_table(root / "train.csv", malignant_dir=a, external=[("malignant", b)])


@pytest.mark.parametrize("layout", list(COMPETITION_LOOKED_FOR))
def test_competition_layout_is_detected_and_read(tmp_path, layout):
    root = fixture(COMPETITION_FIXTURES, layout, "competition layout")(tmp_path / layout)
    found = detect_competition(root / "train.csv")
    assert found.name == layout and found.train_images is not None
    rows = load_competition(root / "train.csv")
    assert list(rows.columns[: len(PUBLISHED)]) == PUBLISHED
    for name, rel in zip(rows["image_name"], rows["image_path"]):
        assert (root / rel).is_file() and (root / rel).parent == found.train_images
        assert Path(rel).stem == name


@pytest.mark.parametrize("family", list(FAMILIES))
def test_backbone_family_builds_a_one_logit_network_that_keeps_its_promises(tmp_path, family):
    backbone, module = fixture(FAMILY_FIXTURES, family, "backbone family")
    pytest.importorskip(module)
    spec = FAMILIES[family]
    assert family_of(backbone) is spec
    torch.manual_seed(0)
    model = create_model(backbone, pretrained=False).eval()
    assert model_family(model) is spec
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 1)
    head = spec.head(model)
    assert model.get_submodule(spec.head_name(model)) is head
    assert isinstance(head, nn.Linear) and head.out_features == 1
    assert (head.bias == 0).all() and head.weight.std().item() < 0.02
    # the head reset gives a new one-logit classifier, initialised the same way
    with torch.no_grad():
        head.weight.add_(1.0)
    reset_head(model, 1)
    new = spec.head(model)
    assert new is not head and new.out_features == 1 and new.weight.std().item() < 0.02
    with torch.no_grad():
        assert model(x).shape == (2, 1)
    # a weights file loads every tensor but the head's
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    if spec.weights_file:
        loaded = create_model(backbone, pretrained=str(path))
        head_name = spec.head_name(loaded)
        for key, value in loaded.state_dict().items():
            if not key.startswith(head_name + "."):
                assert torch.equal(value, model.state_dict()[key]), key
    else:
        with pytest.raises(ValueError, match="weights file"):
            create_model(backbone, pretrained=str(path))
    if spec.grad_checkpointing:
        check_grad_checkpointing(backbone)
        enable_grad_checkpointing(model, backbone)
    else:
        with pytest.raises(ValueError, match=f"model.grad_checkpointing: {backbone}"):
            check_grad_checkpointing(backbone)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(8, 4), torch.tensor([1.0, 0, 0, 1, 0, 0, 0, 1])


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_gives_a_finite_scalar_with_gradients(name):
    spec = LOSSES[name]
    accepted = inspect.signature(spec.cls.__init__).parameters
    assert all(arg in accepted for arg in spec.settings.values())
    loss_fn = create_loss(name, imratio=0.3, margin=0.5, focal_gamma=1.5)
    assert isinstance(loss_fn, spec.cls)
    x, y = _batch()
    net = nn.Linear(4, 1)
    value = loss_fn(loss_input(loss_fn, net(x).squeeze(1)), y)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert net.weight.grad is not None and torch.isfinite(net.weight.grad).all()
    assert net.weight.grad.abs().sum() > 0
    variables = auc_variables(loss_fn)
    assert bool(variables) is spec.min_max
    if spec.min_max:
        assert variables == {
            "a": loss_fn.a.item(),
            "b": loss_fn.b.item(),
            "alpha": loss_fn.alpha.item(),
        }


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_takes_one_step_and_answers_as_its_spec_says(name):
    spec = OPTIMIZERS[name]
    x, y = _batch()
    net = nn.Linear(4, 1)
    loss_fn = create_loss("auc_m", imratio=0.3)
    opt = create_optimizer(name, net.parameters(), loss_fn, lr=0.1, epoch_decay=0.01)
    assert owns_loss(opt) is spec.owns_loss and is_stagewise(opt) is spec.stagewise
    stepped = {id(p) for group in opt.param_groups for p in group["params"]}
    assert id(loss_fn.a) in stepped and id(net.weight) in stepped
    before = net.weight.detach().clone()
    alpha_before = loss_fn.alpha.item()
    opt.zero_grad()
    loss_fn(loss_input(loss_fn, net(x).squeeze(1)), y).backward()
    opt.step()
    assert not torch.equal(before, net.weight) and torch.isfinite(net.weight).all()
    if spec.owns_loss:  # it steps the dual variable too
        assert loss_fn.alpha.item() != alpha_before
    if spec.stagewise:
        lr = opt.param_groups[0]["lr"]
        opt.next_stage(2.0)  # type: ignore[attr-defined]
        assert opt.param_groups[0]["lr"] == pytest.approx(lr / 2)
