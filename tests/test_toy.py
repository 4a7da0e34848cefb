"""The toy study (paper Figure 1): data generators, a reduced run, reproducibility, CLI."""

import re
from dataclasses import replace

import numpy as np
import pytest

from deepauc.cli import build_parser
from deepauc.cli import main as cli_main
from deepauc.research import toy

SMALL = replace(toy.ToyConfig(), n_test=3000)
EPOCHS = 30


@pytest.fixture(scope="module")
def data():
    return toy.make_datasets(3, toy.ToyConfig())


# -- data ----------------------------------------------------------------------------------


def test_clean_set_has_the_stated_class_ratio(data):
    cfg = toy.ToyConfig()
    assert data["clean"]["x"].shape == (cfg.n_train, 2)
    assert data["clean"]["y"].sum() == round(cfg.n_train * cfg.pos_ratio)
    assert data["test"]["y"].sum() == round(cfg.n_test * cfg.pos_ratio)
    assert not data["clean"]["extra"].any()


@pytest.mark.parametrize("panel", ["+easy", "+noisy"])
def test_augmented_sets_extend_the_clean_set(data, panel):
    n = len(data["clean"]["y"])
    d = data[panel]
    np.testing.assert_array_equal(d["x"][:n], data["clean"]["x"])
    np.testing.assert_array_equal(d["y"][:n], data["clean"]["y"])
    assert not d["extra"][:n].any() and d["extra"][n:].all()


def _boundary_points(lo=-12.0, hi=12.0, n=1201):
    """Points where the Bayes LLR changes sign on a fine grid (the boundary, within a cell)."""
    g = np.linspace(lo, hi, n)
    gx, gy = np.meshgrid(g, g)
    s = np.sign(toy.bayes_llr(np.stack([gx, gy], -1)))
    edge = np.zeros_like(s, dtype=bool)
    edge[:, 1:] |= s[:, 1:] != s[:, :-1]
    edge[1:, :] |= s[1:, :] != s[:-1, :]
    return np.column_stack([gx[edge], gy[edge]]), g[1] - g[0]


def test_easy_examples_are_far_from_the_boundary_and_correctly_labelled(data):
    cfg = toy.ToyConfig()
    d = data["+easy"]
    x, y, extra = d["x"][d["extra"]], d["y"][d["extra"]], d["extra"]
    assert extra.sum() == round(cfg.easy_frac * cfg.n_train)
    np.testing.assert_array_equal(d["y"], d["y_true"])  # nothing mislabelled
    # same class ratio as the clean set
    assert abs(y.mean() - data["clean"]["y"].mean()) < 0.01
    llr = toy.bayes_llr(x)
    assert (llr[y == 1] >= cfg.easy_llr).all()
    assert (llr[y == 0] <= -cfg.easy_llr).all()
    # Euclidean distance to the Bayes boundary is at least easy_llr / L
    boundary, step = _boundary_points()
    dist = np.sqrt(((x[:, None, :] - boundary[None, :, :]) ** 2).sum(-1)).min(1)
    assert toy.llr_lipschitz() == pytest.approx(2.0)
    assert dist.min() >= cfg.easy_llr / toy.llr_lipschitz() - 2 * step
    # ... and farther out than the bulk of the clean data
    assert np.median(np.abs(llr)) > 3 * np.median(np.abs(toy.bayes_llr(data["clean"]["x"])))


@pytest.mark.parametrize("noise_frac", [0.05, 0.1, 0.2])
def test_noisy_set_has_the_stated_fraction_of_flipped_labels(noise_frac):
    cfg = replace(toy.ToyConfig(), noise_frac=noise_frac)
    d = toy.make_datasets(1, cfg)["+noisy"]
    wrong = d["y"] != d["y_true"]
    np.testing.assert_array_equal(wrong, d["extra"])  # the added rows, and only they, are flipped
    k = toy.noisy_count(cfg.n_train, noise_frac)
    assert wrong.sum() == 2 * k
    assert abs(wrong.mean() - noise_frac) <= 1 / len(wrong)
    # k in each direction, each inside its true class
    xw, y_true = d["x"][wrong], d["y_true"][wrong]
    assert (y_true == 1).sum() == (y_true == 0).sum() == k
    llr = toy.bayes_llr(xw)
    assert (llr[y_true == 1] > cfg.noise_llr).all()
    assert (llr[y_true == 0] < -cfg.noise_llr).all()


def test_noisy_count():
    assert toy.noisy_count(1000, 0.0) == 0
    k = toy.noisy_count(1000, 0.1)
    assert abs(2 * k / (1000 + 2 * k) - 0.1) < 1e-3
    with pytest.raises(ValueError):
        toy.noisy_count(1000, 1.0)


def test_data_depend_on_the_seed_only():
    a, b, c = toy.make_datasets(0, SMALL), toy.make_datasets(0, SMALL), toy.make_datasets(1, SMALL)
    for part in ("clean", "+easy", "+noisy", "test"):
        np.testing.assert_array_equal(a[part]["x"], b[part]["x"])
        np.testing.assert_array_equal(a[part]["y"], b[part]["y"])
    assert not np.array_equal(a["clean"]["x"], c["clean"]["x"])


def test_bayes_score_is_a_good_ranker(data):
    from deepauc.metrics import roc_auc

    auc = roc_auc(data["test"]["y"], toy.bayes_llr(data["test"]["x"]))
    assert 0.8 < auc < 0.95


# -- the study -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reduced_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    df = toy.run_toy(seeds=2, epochs=EPOCHS, seed=5, out_dir=out, cfg=SMALL)
    return df, out


def test_reduced_run_writes_png_and_md(reduced_run):
    df, out = reduced_run
    png = out / "toy_figure1.png"
    md = out / "toy_figure1.md"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert md.exists()
    assert sorted(p.name for p in out.iterdir()) == [
        "toy_figure1.md",
        "toy_figure1.png",
    ]  # no temp files


def test_table_has_all_six_cells_with_auc_in_unit_interval(reduced_run):
    df, out = reduced_run
    assert set(df.columns) >= {"seed", "loss", "panel", "auc"}
    assert len(df) == 2 * 2 * 3
    cells = df.groupby(["loss", "panel"]).auc.mean()
    assert set(cells.index) == {(loss, panel) for loss in toy.LOSS_NAMES for panel in toy.PANELS}
    assert ((df.auc >= 0) & (df.auc <= 1)).all()
    summ = toy.summarize(df)
    assert list(summ.index) == list(toy.LOSS_NAMES)
    # the markdown table: one row per loss, three panel cells "mean ± std" in [0, 1]
    rows = [
        line
        for line in (out / "toy_figure1.md").read_text().splitlines()
        if line.startswith("| AUC-")
    ]
    assert len(rows) == 2
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")][1:4]
        for cell in cells:
            mean, std = map(float, re.fullmatch(r"(\S+) ± (\S+)", cell).groups())
            assert 0 <= mean <= 1 and std >= 0


def test_same_seed_reproduces_the_same_numbers(reduced_run):
    df, out = reduced_run
    again = toy.run_toy(seeds=2, epochs=EPOCHS, seed=5, out_dir=None, cfg=SMALL)
    np.testing.assert_array_equal(df.auc.to_numpy(), again.auc.to_numpy())
    assert (
        toy.summary_markdown(again, replace(SMALL, epochs=EPOCHS), 5) + "\n"
        == (out / "toy_figure1.md").read_text()
    )


def test_warm_start_runs():
    df = toy.run_toy(seeds=1, epochs=10, seed=0, out_dir=None, cfg=replace(SMALL, warm_start=True))
    assert len(df) == 6 and df.auc.between(0, 1).all()


def test_run_restores_torch_threads_and_rng():
    import torch

    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    toy.run_toy(seeds=1, epochs=2, seed=0, out_dir=None, cfg=SMALL)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.rand(3), expected)


def test_config_validation():
    with pytest.raises(ValueError):
        toy.ToyConfig(score="relu")
    with pytest.raises(ValueError):
        toy.ToyConfig(noise_frac=1.0)
    with pytest.raises(ValueError):
        toy.run_toy(seeds=0, out_dir=None)


# -- command line --------------------------------------------------------------------------


def test_cli_flags_parse():
    args = build_parser(only="toy").parse_args(
        [
            "toy",
            "--out-dir",
            "x",
            "--seeds",
            "3",
            "--epochs",
            "7",
            "--seed",
            "2",
            "--margin",
            "0.3",
            "--warm-start",
        ]
    )
    assert (args.out_dir, args.seeds, args.epochs, args.seed, args.margin, args.warm_start) == (
        "x",
        3,
        7,
        2,
        0.3,
        True,
    )


def test_cli_runs_and_prints_the_table(tmp_path, capsys):
    assert (
        cli_main(["toy", "--out-dir", str(tmp_path), "--seeds", "1", "--epochs", "3", "--quiet"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "| AUC-S |" in printed and "| AUC-M (m = 0.5) |" in printed
    assert (tmp_path / "toy_figure1.png").exists() and (tmp_path / "toy_figure1.md").exists()


def test_bsn_score_feeds_the_loss_logits_normalised_over_the_batch():
    import torch

    from deepauc.losses import create_loss
    from deepauc.research.toy.model import _make_loss

    z = torch.randn(40, generator=torch.Generator().manual_seed(0)) * 3
    y = (torch.arange(40) < 6).float()
    under_bsn = _make_loss("AUC-M", 0.15, replace(SMALL, score="bsn", margin=0.1))
    plain = create_loss("auc_m", imratio=0.15, margin=0.1)
    torch.testing.assert_close(under_bsn(z, y), plain(z / z.norm(), y))
    # scale-free: a positive rescaling of the logits leaves the BSN loss unchanged
    torch.testing.assert_close(under_bsn(5 * z, y), under_bsn(z, y))


def test_cli_score_and_lr_name_their_report(tmp_path, capsys):
    argv = ["toy", "--out-dir", str(tmp_path), "--seeds", "1", "--epochs", "3", "--quiet"]
    assert cli_main([*argv, "--score", "bsn", "--margin", "0.1", "--lr", "1"]) == 0
    text = (tmp_path / "toy_figure1_bsn.md").read_text()
    assert "batch score normalisation" in text and "lr 1 " in text
    assert (tmp_path / "toy_figure1_bsn.png").exists() and not (
        tmp_path / "toy_figure1.md"
    ).exists()


def test_module_main_parses_its_own_flags(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        toy.main(["--help"])
    assert exc.value.code == 0
    assert "--noise-frac" in capsys.readouterr().out


# -- head init -----------------------------------------------------------------------------


def test_pipeline_head_init_is_the_factorys_draw():
    """``head_init: pipeline`` draws the output layer through deepauc.models.reset_head:
    bit for bit the factory's draw on an nn.Linear of the same shape, bias zero."""
    import torch
    from torch import nn

    from deepauc.models.factory import init_head
    from deepauc.research.heads import first_head
    from deepauc.research.toy.model import ToyNet

    torch.manual_seed(4)
    net = first_head(ToyNet(64), "pipeline")
    head = net.get_classifier()

    class Holder(nn.Module):  # an nn.Linear behind timm's protocol, for the factory
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 1)

        def get_classifier(self) -> nn.Linear:
            return self.fc

    torch.manual_seed(4)
    ToyNet(64)  # the same draws up to the head's; Holder's layer stands for the new one
    ref = init_head(Holder()).get_classifier()
    assert torch.equal(head.bias, torch.zeros(1))
    assert torch.equal(head.weight, ref.weight)
    torch.manual_seed(4)
    default = ToyNet(64).get_classifier()
    assert float(default.bias.abs().sum()) > 0  # torch's draw has a bias


def test_head_init_option_changes_only_the_head_and_names_the_report(tmp_path):
    cfg = replace(SMALL, head_init="pipeline")
    df = toy.run_toy(seeds=1, epochs=3, seed=0, out_dir=tmp_path, cfg=cfg)
    assert df.auc.between(0, 1).all()
    text = (tmp_path / "toy_figure1_pipeline_head.md").read_text()
    assert "N(0, 0.01²), bias 0" in text
    with pytest.raises(ValueError, match="ce_direction"):
        toy.ToyConfig(head_init="ce_direction")
    args = build_parser(only="toy").parse_args(["toy", "--head-init", "pipeline"])
    assert args.head_init == "pipeline"
