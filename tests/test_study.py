"""A tiny version of `deepauc study`: it runs, every cell is filled, AUCs are AUCs, seeds reproduce.

Whether AUC-M beats CE is what the study reports, never what a test asserts.
"""

import ast
import graphlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import deepauc.research.study
from deepauc.config import ConfigError, load_config
from deepauc.research.datasets import load_digits_images, make_imbalanced
from deepauc.research.study.config import AblationSpec, DatasetSpec, StudyConfig, TrainSpec
from deepauc.research.study.jobs import Job, ablation_jobs, loss_grid, tuning_jobs
from deepauc.research.study.nets import build_model
from deepauc.research.study.sampling import epoch_batches
from deepauc.research.study.splits import add_easy_examples, flip_labels
from deepauc.research.study.training import libauc_scores, make_loss_and_optimizer, run_job
from deepauc.research.study.variants import import_libauc

CELL = re.compile(r"^\*{0,2}(\d\.\d{3})±(\d\.\d{3})\*{0,2}$")


def tiny_config(tmp_path, **over) -> dict:
    cfg = {
        "name": "tiny",
        "out_dir": str(tmp_path / "reports"),
        "cache_dir": None,
        "seeds": [0, 1],
        "workers": 1,
        "resume": False,
        "datasets": [
            {"name": "digits", "epochs": 2, "batch_size": 128, "width": 4, "imratios": [0.01, 0.1]}
        ],
        "grids": {
            "focal_alpha": [0.25],
            "focal_gamma": [2.0],
            "epoch_decay": [0.01, 0.002],
            "margin": [1.0],
        },
        "ablations": {"datasets": ["digits"], "timing_steps": 3},
    }
    cfg.update(over)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def table_rows(md: str, header_start: str) -> list[list[str]]:
    lines = md.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[i + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    from deepauc.cli import main

    tmp = tmp_path_factory.mktemp("study")
    path = tiny_config(tmp)
    assert main(["study", "--config", str(path), "--quiet"]) == 0
    return tmp


def test_tiny_study_fills_every_cell(tiny_study):
    md = (tiny_study / "reports" / "tiny.md").read_text()
    rows = table_rows(md, "| Dataset (network) | imratio | CE | Focal | AUC-S | AUC-M")
    assert len(rows) == 2  # digits at two ratios
    assert "asked 1%" in rows[0][1]  # 1 % leaves too few positives: raised to min_positives
    for row in rows:
        for cell in row[2:6]:
            m = CELL.match(cell)
            assert m, cell
            assert 0 <= float(m.group(1)) <= 1
    for section in (
        "Two-stage",
        "Robustness",
        "α ≥ 0",
        "dual step",
        "Batch score normalisation",
        "Hyper-parameters chosen",
    ):
        assert section in md
    if import_libauc()[0] is not None:
        assert "LibAUC 2.0.1" in md and "Time per training step" in md
    else:
        assert "LibAUC side by side skipped" in md


def test_tiny_study_runs_file(tiny_study):
    runs = pd.read_csv(tiny_study / "reports" / "tiny_runs.csv")
    assert runs["test_auc"].between(0, 1).all()
    assert runs["val_auc"].dropna().between(0, 1).all()
    main = runs[
        (runs["variant"] == "clean")
        & runs["tweak"].isna()
        & runs["method"].isin(["ce", "focal", "auc_s", "auc_m"])
    ]
    # 4 losses × 2 ratios × 2 seeds, plus the second γ of the tuning grid on seed 0
    assert len(main) >= 16
    assert set(runs["variant"]) == {"clean", "easy", "noisy"}


def test_default_settings_leave_out_the_round2_sections(tiny_study):
    """Round 2's sections and columns need their keys: a config without them reports and
    trains as before (no every-epoch evaluation, no head-init words, no new rows)."""
    md = (tiny_study / "reports" / "tiny.md").read_text()
    for title in (
        "The paper's claim, tested",
        "best-validation epoch",
        "Partial AUC",
        "closed form at two momenta",
        "compositional",
        "CE-direction",
        "drawn as the pipeline draws it",
    ):
        assert title not in md, title
    runs = pd.read_csv(tiny_study / "reports" / "tiny_runs.csv")
    assert "best_test_auc" not in runs.columns
    assert runs["pos_val"].ge(1).all() and runs["test_pauc_fpr"].between(0, 1).all()


def test_tiny_study_reproduces_and_resumes(tiny_study, tmp_path):
    from deepauc.cli import main

    path = tiny_config(tmp_path, ablations={"datasets": []})
    assert main(["study", "--config", str(path), "--quiet"]) == 0
    first = pd.read_csv(tiny_study / "reports" / "tiny_runs.csv").set_index("key")
    again = pd.read_csv(tmp_path / "reports" / "tiny_runs.csv").set_index("key")
    common = again.index.intersection(first.index)
    assert len(common) >= 16
    np.testing.assert_array_equal(again.loc[common, "test_auc"], first.loc[common, "test_auc"])
    # a rerun with resume reuses every run
    path = tiny_config(tmp_path, ablations={"datasets": []}, resume=True)
    before = (tmp_path / "reports" / "tiny_runs.csv").stat().st_mtime_ns
    assert main(["study", "--config", str(path), "--quiet"]) == 0
    assert (tmp_path / "reports" / "tiny_runs.csv").stat().st_mtime_ns == before


def test_config_errors_name_the_key(tmp_path):
    path = tiny_config(tmp_path, ablations={"datasets": ["cifar10"]})
    with pytest.raises(ConfigError, match="cifar10"):
        load_config(path, StudyConfig)
    path = tiny_config(tmp_path, losses=["ce", "hinge"])
    with pytest.raises(ConfigError, match="hinge"):
        load_config(path, StudyConfig)
    path = tiny_config(tmp_path, train={"dual": "closed"})
    with pytest.raises(ConfigError, match="train.dual"):
        load_config(path, StudyConfig)


def test_shipped_configs_load():
    for name, seeds in (("default", 10), ("full", 10), ("paper", 5)):
        cfg = load_config(f"configs/study/{name}.yaml", StudyConfig)
        assert cfg.datasets and cfg.seeds == list(range(seeds))


def test_missing_data_set_is_skipped_or_an_error(tmp_path):
    from deepauc.cli import main

    extra = {"name": "fashion_mnist", "root": str(tmp_path / "nowhere"), "epochs": 1}
    base = tiny_config(tmp_path)
    cfg = yaml.safe_load(base.read_text())
    cfg["datasets"].append(extra)
    cfg["ablations"] = {"datasets": []}
    cfg["datasets"][0]["imratios"] = [0.1]
    cfg["seeds"] = [0]
    base.write_text(yaml.safe_dump(cfg))
    assert main(["study", "--config", str(base), "--quiet"]) == 1  # on_missing: error
    assert main(["study", "--config", str(base), "--quiet", "--set", "on_missing=skip"]) == 0
    md = (tmp_path / "reports" / "tiny.md").read_text()
    assert "skipped" in md and "apt-get install dataset-fashion-mnist" in md


def test_models_take_every_image_size():
    for model, shape in (
        ("cnn", (1, 8, 8)),
        ("cnn", (3, 32, 32)),
        ("resnet20", (3, 32, 32)),
        ("mlp", (1, 8, 8)),
    ):
        net = build_model(DatasetSpec("x", model=model, width=4), shape)
        out = net(torch.zeros(2, *shape))
        assert out.shape == (2,)
        assert hasattr(net, "head")


def test_easy_and_noisy_variants_keep_the_ratio():
    s = make_imbalanced(load_digits_images(), 0.1, 0)
    e = add_easy_examples(s, 0.5, 0)
    assert len(e.y_train) == len(s.y_train) + round(0.5 * len(s.y_train))
    assert abs(e.y_train.mean() - s.y_train.mean()) < 0.01
    n = flip_labels(s, 0.2, 0)
    assert n.y_train.sum() == s.y_train.sum()
    assert (n.y_train != s.y_train).sum() == 2 * round(0.2 * s.y_train.sum())
    np.testing.assert_array_equal(s.y_val, n.y_val)


@pytest.mark.parametrize(
    "tweak",
    [
        "",
        "dual_paper",
        "vref_noise",
        "batch_p",
        "clip",
        "libauc_alpha",
        "ema_momentum",
        "bsn_none",
        "bsn_logits",
        "bsn_sigmoid",
    ],
)
def test_every_tweak_trains(tweak):
    spec = DatasetSpec("digits", epochs=1, batch_size=128, width=4, imratios=[0.1])
    job = Job("digits", 0.1, 0, "auc_m", (("epoch_decay", 0.002), ("margin", 1.0)), tweak=tweak)
    row = run_job(job, spec, TrainSpec(pesg_momentum=0.5), AblationSpec(), None)
    assert 0 <= row["test_auc"] <= 1 and row["steps"] > 0


def test_new_config_keys_validate(tmp_path):
    for value in (False, True, "none", "logits", "sigmoid"):
        path = tiny_config(tmp_path, train={"batch_score_norm": value, "pos_fraction": 0.5})
        cfg = load_config(path, StudyConfig)
        assert cfg.train.bsn == {False: "none", True: "logits"}.get(value, value)
        assert cfg.train.pos_fraction == 0.5
    path = tiny_config(tmp_path, train={"batch_score_norm": "softmax"})
    with pytest.raises(ConfigError, match="batch_score_norm"):
        load_config(path, StudyConfig)
    path = tiny_config(tmp_path, train={"pos_fraction": 1.5})
    with pytest.raises(ConfigError, match="pos_fraction"):
        load_config(path, StudyConfig)
    path = tiny_config(tmp_path, grids={"lr": []})
    with pytest.raises(ConfigError, match="grids.lr"):
        load_config(path, StudyConfig)
    path = tiny_config(tmp_path, ablations={"search": [{"dataset": "cifar10", "imratio": 0.01}]})
    with pytest.raises(ConfigError, match="cifar10"):
        load_config(path, StudyConfig)
    path = tiny_config(tmp_path, ablations={"search": [{"dataset": "digits", "imratio": 0.9}]})
    with pytest.raises(ConfigError, match="imratio"):
        load_config(path, StudyConfig)
    path = tiny_config(tmp_path, ablations={"oversample": 0.0})
    with pytest.raises(ConfigError, match="oversample"):
        load_config(path, StudyConfig)


def test_lr_is_tuned_for_every_loss(tmp_path):
    cfg = load_config(tiny_config(tmp_path, grids={"lr": [0.03, 0.3]}), StudyConfig)
    spec = cfg.datasets[0]
    for loss in ("ce", "focal", "auc_s", "auc_m"):
        assert {dict(p)["lr"] for p in loss_grid(cfg, spec, loss)} == {0.03, 0.3}
    cfg = load_config(tiny_config(tmp_path), StudyConfig)  # no lr grid: the data set's lr
    assert [dict(p)["lr"] for p in loss_grid(cfg, cfg.datasets[0], "ce")] == [cfg.train.lr]


def test_bsn_ablation_has_the_three_settings(tmp_path, tiny_study):
    cfg = load_config(tiny_config(tmp_path), StudyConfig)
    tune = tuning_jobs(cfg, cfg.datasets)
    chosen = {k: next(iter(c)) for k, c in tune.items()}
    for r in cfg.datasets[0].imratios:
        for loss in cfg.losses:
            chosen.setdefault(("digits", r, loss), loss_grid(cfg, cfg.datasets[0], loss)[0])
    jobs, _ = ablation_jobs(cfg, cfg.datasets, chosen)
    lowest = min(cfg.datasets[0].imratios)
    tweaks = {s: jobs[f"bsn/digits/{lowest}/{s}"][0].tweak for s in ("none", "logits", "sigmoid")}
    assert tweaks == {"none": "bsn_none", "logits": "", "sigmoid": "bsn_sigmoid"}
    # the settings other than the study's own are tuned on their own
    assert ("digits", lowest, "auc_m", "bsn_sigmoid") in tune
    md = (tiny_study / "reports" / "tiny.md").read_text()
    header = "| Dataset | imratio | BSN none | BSN logits | BSN sigmoid |"
    assert len(table_rows(md, header)) == 1


def test_scores_fed_to_the_losses_follow_bsn():
    z = torch.tensor([2.0, -1.0, 0.5, 3.0])
    torch.testing.assert_close(libauc_scores("logits", z), torch.nn.functional.normalize(z, dim=0))
    torch.testing.assert_close(libauc_scores("none", z), torch.sigmoid(z))
    torch.testing.assert_close(
        libauc_scores("sigmoid", z), torch.nn.functional.normalize(torch.sigmoid(z), dim=0)
    )
    spec = DatasetSpec("digits", width=4)
    model = build_model(spec, (1, 8, 8))
    prm = (("epoch_decay", 0.01), ("lr", 0.1), ("margin", 0.5))
    for tweak, takes_logits in (("bsn_logits", True), ("bsn_sigmoid", False), ("bsn_none", False)):
        job = Job("digits", 0.1, 0, "auc_m", prm, tweak=tweak)
        setup = make_loss_and_optimizer(job, model, 0.1, 0.1, TrainSpec())
        assert setup.loss.takes_logits is takes_logits
        torch.testing.assert_close(setup.scores(z), z if takes_logits else torch.sigmoid(z))


@pytest.mark.parametrize("share", [0.5, 0.25])
def test_oversampling_gives_the_positive_share_per_batch(share):
    y = torch.zeros(1000)
    y[:20] = 1
    gen = torch.Generator().manual_seed(0)
    batches = epoch_batches(y, 64, share, gen)
    assert len(batches) == 1000 // 64
    for idx in batches:
        assert len(idx) == 64
        assert int(y[idx].sum()) == round(share * 64)
    # without oversampling: one shuffled pass, the last partial batch dropped
    plain = epoch_batches(y, 64, None, torch.Generator().manual_seed(0))
    expect = torch.randperm(1000, generator=torch.Generator().manual_seed(0))[: 64 * (1000 // 64)]
    torch.testing.assert_close(torch.cat(plain), expect)


def test_oversampling_trains_every_loss():
    spec = DatasetSpec("digits", epochs=1, batch_size=64, width=4, imratios=[0.1])
    for method, prm in (("ce", ()), ("auc_m", (("epoch_decay", 0.01), ("margin", 0.5)))):
        job = Job("digits", 0.1, 0, method, prm, setting=(("pos_fraction", 0.5),))
        row = run_job(job, spec, TrainSpec(), AblationSpec(), None)
        assert 0 <= row["test_auc"] <= 1 and row["steps"] > 0


def test_paper_two_stage_reinitialises_the_head_at_a_tenth_of_the_lr(monkeypatch):
    from deepauc.research.study import training

    calls = []
    original = training.train_stage

    def recording(job, model, *args, **kw):
        calls.append((job.method, kw["lr"], kw["epochs"], model.head.weight.detach().clone()))
        out = original(job, model, *args, **kw)
        calls[-1] += (model.head.weight.detach().clone(),)
        return out

    monkeypatch.setattr(training, "train_stage", recording)
    spec = DatasetSpec("digits", epochs=2, batch_size=128, width=4, imratios=[0.1])
    abl = AblationSpec(finetune_epochs_fraction=1.0, finetune_lr_factor=0.1)
    prm = (("ce_lr", 0.3), ("epoch_decay", 0.01), ("lr", 0.2), ("margin", 0.5))
    run_job(Job("digits", 0.1, 0, "two_stage_paper", prm), spec, TrainSpec(), abl, None)
    (m1, lr1, e1, _, end1), (m2, lr2, e2, start2, _) = calls
    assert (m1, lr1, e1) == ("ce", 0.3, 2)  # a whole CE run at CE's lr
    assert (m2, e2) == ("auc_m", 2) and lr2 == pytest.approx(0.2 / 10)
    assert not torch.equal(start2, end1)  # a fresh head for the AUC stage
    calls.clear()
    run_job(Job("digits", 0.1, 0, "ce_continued", (("lr", 0.3),)), spec, TrainSpec(), abl, None)
    (m1, lr1, _, _, end1), (m2, lr2, _, start2, _) = calls
    assert (m1, m2) == ("ce", "ce") and lr2 == pytest.approx(0.3 / 10)
    assert torch.equal(start2, end1)  # CE continued keeps its head


def test_search_settings_override_the_run():
    spec = DatasetSpec("digits", epochs=1, batch_size=128, width=4, imratios=[0.01])
    job = Job(
        "digits",
        0.004,
        0,
        "ce",
        (("lr", 0.1),),
        "noisy",
        "",
        (("epochs", 2), ("min_positives", 1), ("noise_frac", 0.3)),
    )
    row = run_job(job, spec, TrainSpec(), AblationSpec(), None)
    assert row["imratio"] < 0.01 and row["steps"] == 2 * (row["n_train"] // 128)


def import_graph(folder: Path, package: str) -> dict[str, set[str]]:
    """Each module of ``package`` (the ``.py`` files in ``folder``) -> the modules of the package it
    imports, wherever the import stands (``if TYPE_CHECKING:`` blocks and functions included).
    ``from package import mod`` counts as importing ``mod``; importing ``package`` itself counts
    as importing ``__init__``."""
    modules = {f.stem for f in folder.glob("*.py")}

    def local(name: str) -> str | None:
        if name == package:
            return "__init__"
        head, _, tail = name.partition(package + ".")
        return tail.split(".")[0] if not head and tail.split(".")[0] in modules else None

    graph: dict[str, set[str]] = {}
    for name in modules:
        targets: list[str] = []
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_text())):
            if isinstance(node, ast.Import):
                targets += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0 and node.module, f"{name}: relative import"
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    targets.append(sub if local(sub) not in (None, "__init__") else node.module)
        graph[name] = {m for m in map(local, targets) if m is not None and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, each module importing the next, or None when there is none."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:  # lists the cycle against the edges: reversed
        return list(reversed(err.args[1]))
    return None


def test_study_modules_import_without_a_cycle():
    folder = Path(deepauc.research.study.__file__).parent
    graph = import_graph(folder, "deepauc.research.study")
    # the scan sees the package: the entry point and the report's reader of the runs
    assert graph["__init__"] == {"runner"} and "results" in graph["report"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_import_cycle_check_sees_type_only_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import B\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from pkg import a\n"
    )
    (pkg / "c.py").write_text("import pkg\nfrom pkg.a import A\n")
    graph = import_graph(pkg, "pkg")
    assert graph == {"__init__": set(), "a": {"b"}, "b": {"a"}, "c": {"__init__", "a"}}
    assert sorted(find_cycle(graph)[:-1]) == ["a", "b"]
    del graph["b"]
    assert find_cycle(graph) is None
