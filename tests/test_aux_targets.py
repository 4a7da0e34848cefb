"""Auxiliary diagnosis targets: the class map, the config keys, and tiny CE and AUC-M runs
whose OOF scores are recomputed from the saved weights by hand."""

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import expit, softmax
from sklearn.metrics import roc_auc_score

from deepauc.config import ConfigError
from deepauc.data.demo import isic as demo_isic
from deepauc.data.demo import patients as demo_patients
from deepauc.data.diagnosis import (
    CLASSES_9,
    class_ratios,
    diagnosis_classes,
    one_vs_rest,
    to_2019_class,
    unmapped,
)
from deepauc.data.external.sources import HAM_DIAGNOSIS, ISIC2018_DIAGNOSIS, ISIC2019_DIAGNOSIS
from deepauc.losses import AUCMLoss
from deepauc.models import create_model
from deepauc.optim import PESG
from deepauc.pipeline.experiment import load_experiment
from deepauc.pipeline.predict import predict_experiment
from deepauc.pipeline.train import train_fold
from helpers import SIZE, write_experiment

CPU = torch.device("cpu")
BACKBONE = "mobilenetv3_small_050"

# The 2020 train.csv's diagnoses, by hand: (9-class name, 4-class index)
PUBLISHED_2020 = {
    "unknown": ("UNK", 3),
    "nevus": ("NV", 1),
    "melanoma": ("MEL", 0),
    "seborrheic keratosis": ("BKL", 2),
    "lentigo NOS": ("BKL", 2),
    "lichenoid keratosis": ("BKL", 2),
    "solar lentigo": ("BKL", 2),
    "cafe-au-lait macule": ("UNK", 3),
    "atypical melanocytic proliferation": ("UNK", 3),
}
GROUND_TRUTH_2019 = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]


def frame(diagnoses, targets):
    names = [f"ISIC_{i:07d}" for i in range(len(targets))]
    return pd.DataFrame({"image_name": names, "diagnosis": diagnoses, "target": targets})


def test_published_2020_diagnoses_map_to_their_classes():
    names = list(PUBLISHED_2020)
    targets = [int(n == "melanoma") for n in names]
    nine = diagnosis_classes(frame(names, targets), 9, "t.csv")
    four = diagnosis_classes(frame(names, targets), 4, "t.csv")
    assert [CLASSES_9[i] for i in nine] == [PUBLISHED_2020[n][0] for n in names]
    assert list(four) == [PUBLISHED_2020[n][1] for n in names]
    assert unmapped(frame(names, targets)) == []


def test_2019_ground_truth_classes_in_code_and_merged_table_form():
    targets = [int(c == "MEL") for c in GROUND_TRUTH_2019]
    # the resized 2019 set keeps the codes; the official download's reader writes long names
    codes = diagnosis_classes(frame(GROUND_TRUTH_2019, targets), 9, "t.csv")
    long = [ISIC2019_DIAGNOSIS[c] for c in GROUND_TRUTH_2019]
    assert list(codes) == list(range(9))
    assert list(diagnosis_classes(frame(long, targets), 9, "t.csv")) == list(range(9))
    assert list(diagnosis_classes(frame(long, targets), 4, "t.csv")) == [0, 1, 3, 3, 2, 3, 3, 3, 3]
    # 2018 (AKIEC is the 2019 AK) and HAM10000's lower-case dx codes, both ways
    assert to_2019_class("AKIEC") == "AK" and to_2019_class(ISIC2018_DIAGNOSIS["AKIEC"]) == "AK"
    for code, name in HAM_DIAGNOSIS.items():
        assert to_2019_class(code) == to_2019_class(name) == to_2019_class(code.upper())


def test_every_diagnosis_the_demo_and_the_readers_write_is_mapped():
    written = list(demo_patients._DIAG_BENIGN) + ["melanoma"]
    written += list(demo_isic.ISIC2019_CLASSES) + list(demo_isic._HAM_DX.values())
    written += [*ISIC2019_DIAGNOSIS.values(), *ISIC2018_DIAGNOSIS.values(), *HAM_DIAGNOSIS.values()]
    written += ["seborrheic keratosis", "nevus"]  # the ISIC 2017 reader's
    assert [d for d in written if to_2019_class(d) is None] == []


def test_unknown_strings_and_malignant_rows():
    table = frame(
        ["unknown", "a new kind", None, "unknown", "a new kind", " Nevus "], [1, 0, 0, 0, 1, 0]
    )
    assert list(diagnosis_classes(table, 9, "t.csv")) == [0, 8, 8, 8, 0, 1]
    assert list(diagnosis_classes(table, 4, "t.csv")) == [0, 3, 3, 3, 0, 1]
    assert unmapped(table) == ["a new kind"]


@pytest.mark.parametrize(
    "diagnosis, target, message",
    [
        ("melanoma", 0, "diagnosis melanoma with target 0"),
        ("nevus", 1, "target 1 .melanoma. with a non-melanoma diagnosis"),
        ("BCC", 1, "target 1 .melanoma. with a non-melanoma diagnosis"),
    ],
)
def test_contradictory_row_is_an_error_naming_its_image(diagnosis, target, message):
    table = frame(["nevus", diagnosis, "unknown"], [0, target, 0])
    with pytest.raises(ValueError, match=f"t.csv: {message} at line 3 .ISIC_0000001."):
        diagnosis_classes(table, 9, "t.csv")


def test_one_vs_rest_and_smoothed_ratios():
    classes = np.array([0, 2, 2, 1])
    np.testing.assert_array_equal(one_vs_rest(classes, 4).argmax(1), classes)
    assert one_vs_rest(classes, 4).sum() == 4
    # (count + 0.5) / (rows + 1): an absent class keeps a ratio inside (0, 1)
    assert class_ratios(classes, 4) == [1.5 / 5, 1.5 / 5, 2.5 / 5, 0.5 / 5]


# -- config ----------------------------------------------------------------------------------
STAGE2 = {"loss": {"name": "auc_m"}, "optim": {"name": "pesg"}, "model": {"init_from": "m/x"}}


@pytest.mark.parametrize(
    "sections, match",
    [
        ({"model": {"aux_classes": 5}}, r"model.aux_classes must be one of \[0, 4, 9\]"),
        (
            {"loss": {"aux_mode": "multilabel"}},
            "loss.aux_mode 'multilabel' needs model.aux_classes",
        ),
        (
            {"model": {"aux_classes": 9}, "loss": {"name": "focal"}},
            "model.aux_classes 9: loss focal",
        ),
        (
            {"model": {"aux_classes": 9}, "loss": {"aux_mode": "melanoma"}},
            "loss.aux_mode is for the AUC",
        ),
        ({"loss": {"aux_mode": "both"}}, r"loss.aux_mode: 'both' is not one of"),
        (
            {"model": {"aux_classes": 4}, "loss": {"name": "auc_m"}, "optim": {"name": "pesg"}},
            "loss.aux_mode melanoma: .* set model.init_from",
        ),
        (
            {
                **STAGE2,
                "model": {"aux_classes": 4, "init_from": "m/x"},
                "loss": {"name": "auc_m", "aux_mode": "multilabel", "imratio": 0.2},
            },
            "loss.imratio: loss.aux_mode multilabel",
        ),
    ],
)
def test_bad_aux_config_is_refused_naming_the_key(tiny_data, sections, match):
    with pytest.raises(ConfigError, match=match):
        load_experiment(write_experiment(tiny_data, "bad", **sections))


def test_aux_keys_enter_the_fingerprint_only_when_set(tiny_data):
    plain = load_experiment(write_experiment(tiny_data, "a"))
    off = load_experiment(write_experiment(tiny_data, "a", model={"aux_classes": 0}))
    four = load_experiment(write_experiment(tiny_data, "a", model={"aux_classes": 4}))
    nine = load_experiment(write_experiment(tiny_data, "a", model={"aux_classes": 9}))
    assert plain.fingerprint() == off.fingerprint()
    assert len({plain.fingerprint(), four.fingerprint(), nine.fingerprint()}) == 3
    stage2 = {**STAGE2, "model": {"aux_classes": 4, "init_from": "m/x"}}
    default = load_experiment(write_experiment(tiny_data, "b", **stage2))
    assert default.loss.aux_mode == "melanoma"  # the default once the classes are on
    multi = {**stage2, "loss": {"name": "auc_m", "aux_mode": "multilabel"}}
    assert load_experiment(write_experiment(tiny_data, "b", **multi)).fingerprint() != (
        default.fingerprint()
    )


# -- tiny runs -------------------------------------------------------------------------------
BENIGN = ["nevus", "unknown", "seborrheic keratosis", "basal cell carcinoma", "nevus"]


@pytest.fixture
def aux_data(tiny_data):
    """``tiny_data`` with a diagnosis per row: melanoma for the positives, else a mix."""
    table = pd.read_csv(tiny_data["train_csv"])
    table["diagnosis"] = [
        "melanoma" if t else BENIGN[i % len(BENIGN)] for i, t in enumerate(table["target"])
    ]
    table.to_csv(tiny_data["train_csv"], index=False)
    return tiny_data


def logits_by_view(model_pt, names, cache, n_outputs) -> list[np.ndarray]:
    """The saved network's logits on each of the 8 flips/rotations of the cached images,
    normalised by hand (identity first)."""
    saved = torch.load(model_pt, weights_only=True)
    net = create_model(BACKBONE, pretrained=False, num_classes=n_outputs)
    net.load_state_dict(saved["model"])
    net.eval()
    rgb = [
        cv2.cvtColor(cv2.imread(str(cache / str(SIZE) / f"{n}.jpg")), cv2.COLOR_BGR2RGB)
        for n in names
    ]
    mean = np.array([0.485, 0.456, 0.406]) * 255
    std = np.array([0.229, 0.224, 0.225]) * 255
    x = torch.tensor(((np.stack(rgb) - mean) / std).transpose(0, 3, 1, 2), dtype=torch.float32)
    views = [torch.rot90(v, k, (2, 3)) for v in (x, x.flip(3)) for k in range(4)]
    with torch.no_grad():
        return [net(v).double().numpy() for v in views]


def check_oof(cfg, data, n_outputs, score) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predict; the OOF (8 views), no-TTA OOF and test files against ``score`` (logits ->
    melanoma score) of the saved weights, recomputed by hand. Returns the OOF and no-TTA
    OOF frames."""
    out = predict_experiment(cfg, CPU)
    oof = pd.read_csv(out / "oof.csv")
    notta = pd.read_csv(out.parent / f"{cfg.name}-notta" / "oof.csv")
    model_pt = cfg.run_dir(0) / "model.pt"
    views = logits_by_view(model_pt, oof["image_name"], data["cache"], n_outputs)
    np.testing.assert_allclose(notta["pred"], score(views[0]), atol=2e-5)
    np.testing.assert_allclose(oof["pred"], np.mean([score(v) for v in views], 0), atol=2e-5)
    test = pd.read_csv(out / "test.csv")
    test_views = logits_by_view(model_pt, test["image_name"], data["cache"], n_outputs)
    np.testing.assert_allclose(test["pred"], np.mean([score(v) for v in test_views], 0), atol=2e-5)
    return oof, notta


def stage1(data):
    cfg = load_experiment(
        write_experiment(
            data, "ce_aux4", folds=[0], model={"aux_classes": 4}, train={"max_steps_per_epoch": 2}
        )
    )
    train_fold(cfg, 0, CPU)
    return cfg


def test_ce_aux4_run_scores_softmax_melanoma(aux_data):
    cfg = stage1(aux_data)
    model_pt = cfg.run_dir(0) / "model.pt"
    head = torch.load(model_pt, weights_only=True)["model"]["classifier.weight"]
    assert head.shape[0] == 4
    oof, notta = check_oof(cfg, aux_data, 4, lambda z: softmax(z, axis=1)[:, 0])
    assert oof["fold"].eq(0).all() and len(oof) == 16
    # the validation AUC of the log is that of softmax[mel] on the identity view, which
    # check_oof matched to the hand-computed scores. The AUC is taken of the run's own
    # scores: after 2 steps they lie within 1e-4 of each other, so a recomputation's float
    # noise can swap two of them (seen: 0.8438 logged, 0.8333 by hand, on another CPU)
    log = pd.read_csv(model_pt.parent / "log.csv")
    expected = roc_auc_score(notta["target"], notta["pred"])
    assert log["val_auc"].iloc[-1] == pytest.approx(expected, abs=1e-6)
    # the run is keyed by its diagnoses: a changed one stops it
    table = pd.read_csv(aux_data["train_csv"])
    table.loc[1, "diagnosis"] = "dermatofibroma"
    table.to_csv(aux_data["train_csv"], index=False)
    with pytest.raises(ValueError, match="other diagnoses"):
        train_fold(cfg, 0, CPU)


@pytest.mark.parametrize("mode, outputs", [("melanoma", 1), ("multilabel", 4)])
def test_stage2_from_the_aux_weights_in_each_mode(aux_data, mode, outputs):
    ce = stage1(aux_data)
    cfg = load_experiment(
        write_experiment(
            aux_data,
            f"aucm_{mode}",
            folds=[0],
            model={"aux_classes": 4, "init_from": str(ce.run_dir(0).parent)},
            loss={"name": "auc_m", "margin": 0.5, "aux_mode": mode},
            optim={"name": "pesg", "lr": 0.05},
            train={"max_steps_per_epoch": 2},
        )
    )
    path = train_fold(cfg, 0, CPU)
    saved = torch.load(path, weights_only=True)["model"]
    stage1_body = torch.load(ce.run_dir(0) / "model.pt", weights_only=True)["model"]
    assert saved["classifier.weight"].shape[0] == outputs
    assert set(saved) == set(stage1_body)  # the same network, its head resized
    log = pd.read_csv(path.parent / "log.csv")
    assert np.isfinite(log[["train_loss", "a", "b", "alpha", "val_auc"]].to_numpy()).all()
    oof, _ = check_oof(cfg, aux_data, outputs, lambda z: expit(z[:, 0]))
    assert oof["pred"].between(0, 1).all() and oof["pred"].nunique() > 1


def test_pesg_steps_each_labels_dual_variable():
    """One PESG step of a 3-label AUC-M: α moves per label by η ∇_α F / (p(1-p)), written out."""
    torch.manual_seed(0)
    p, m, lr = np.array([0.2, 0.5, 0.3]), 0.5, 0.1
    loss = AUCMLoss(margin=m, imratio=list(p), num_labels=3)
    with torch.no_grad():
        loss.alpha.copy_(torch.tensor([0.0, 0.3, 0.1]))
    h = torch.rand(8, 3)
    y = torch.tensor(np.eye(3)[[0, 1, 2, 0, 1, 1, 2, 0]], dtype=torch.float32)
    w = torch.zeros(1, requires_grad=True)  # a stand-in network parameter
    opt = PESG([w], loss, lr=lr, epoch_decay=0.0, weight_decay=0.0)
    opt.zero_grad()
    loss(h + 0 * w, y).backward()
    opt.step()
    hn, yn, alpha = h.numpy().astype(float), y.numpy().astype(float), np.array([0.0, 0.3, 0.1])
    # ∂/∂α of the per-label mean, then the mean over the 3 labels
    grad = (
        (2 * (p * hn * (1 - yn) - (1 - p) * hn * yn)).mean(0)
        + 2 * p * (1 - p) * m
        - 2 * p * (1 - p) * alpha
    ) / 3
    expected = np.maximum(0, alpha + lr * grad / (p * (1 - p)))
    np.testing.assert_allclose(loss.alpha.detach().numpy(), expected, rtol=1e-5)


def test_aux_run_without_a_diagnosis_column_names_the_file(tiny_data):
    cfg = load_experiment(
        write_experiment(tiny_data, "nodiag", folds=[0], model={"aux_classes": 9})
    )
    with pytest.raises(ValueError, match=r"folds.csv.*diagnosis"):
        train_fold(cfg, 0, CPU)


@pytest.mark.parametrize(
    "variant, plain",
    [
        ("ce_aux9_lite0_64", "ce_lite0_64"),
        ("aucm_aux9_melanoma_lite0_64", "aucm_lite0_64"),
        ("aucm_aux9_multilabel_lite0_64", "aucm_lite0_64"),
    ],
)
def test_demo_aux_configs_differ_from_theirs_in_the_aux_keys_only(variant, plain):
    from deepauc.config import to_dict

    demo = Path(__file__).resolve().parents[1] / "configs" / "demo"
    a = to_dict(load_experiment(demo / f"{variant}.yaml"))
    b = to_dict(load_experiment(demo / f"{plain}.yaml"))
    assert a.pop("name") == f"demo_{variant}" and a["model"].pop("aux_classes") == 9
    b.pop("name"), b["model"].pop("aux_classes")
    if a["model"]["init_from"]:
        assert a["model"].pop("init_from") == "models/demo_ce_aux9_lite0_64"
        assert variant.split("_")[2] == a["loss"].pop("aux_mode")
        b["model"].pop("init_from"), b["loss"].pop("aux_mode")
    assert a == b


def test_multilabel_stage2_killed_and_resumed_ends_as_an_uninterrupted_run(aux_data, monkeypatch):
    """The K-vector a, b, α, p and PESG's per-label state go through the checkpoint."""
    from test_train import _resume_equals_straight

    ce = stage1(aux_data)
    sections = dict(
        folds=[0],
        model={"aux_classes": 4, "init_from": str(ce.run_dir(0).parent)},
        loss={"name": "auc_m", "margin": 0.5, "aux_mode": "multilabel"},
        optim={"name": "pesg", "lr": 0.05},
        schedule={"name": "stagewise", "epochs": 2, "decay_epochs": [1]},
        train={"max_steps_per_epoch": 2},
    )
    _resume_equals_straight(aux_data, monkeypatch, sections, crash_epoch=1, tag="multi")


def test_summed_labels_give_each_label_the_gradient_of_its_own_one_label_loss():
    # oracle: K one-label losses, one per column; the summed K-label loss must give label k's
    # a, b, α the same gradient as the k-th one-label loss, and the mean 1/K of it
    from deepauc.losses import AUCMLoss

    g = torch.Generator().manual_seed(0)
    scores = torch.rand(12, 3, generator=g)
    labels = (torch.rand(12, 3, generator=g) > 0.6).float()
    ratios = [0.3, 0.2, 0.4]

    def grads(loss_fn, s, y):
        with torch.no_grad():
            loss_fn.a.fill_(0.2), loss_fn.b.fill_(0.1), loss_fn.alpha.fill_(0.3)
        loss_fn(s, y).backward()
        return torch.stack([loss_fn.a.grad, loss_fn.b.grad, loss_fn.alpha.grad])

    summed = grads(AUCMLoss(0.5, ratios, 3, label_reduction="sum"), scores, labels)
    mean = grads(AUCMLoss(0.5, ratios, 3), scores, labels)
    for k in range(3):
        single = grads(AUCMLoss(0.5, ratios[k]), scores[:, k], labels[:, k])
        torch.testing.assert_close(summed[:, k], single[:, 0])
        torch.testing.assert_close(mean[:, k], single[:, 0] / 3)
    with pytest.raises(ValueError, match="label_reduction"):
        AUCMLoss(label_reduction="max")


def test_the_multilabel_stage_sums_over_the_classes():
    from deepauc.pipeline.aux_targets import aux_loss

    repo = Path(__file__).resolve().parents[1]
    cfg = load_experiment(repo / "configs/demo/aucm_aux9_multilabel_lite0_64.yaml")
    loss_fn = aux_loss(cfg, [0.1] * 9)
    assert loss_fn.num_labels == 9 and loss_fn.label_reduction == "sum"
