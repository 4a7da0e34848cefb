"""deepauc blend: weight choice, nested estimate, prob/rank scales, output formats."""

import numpy as np
import pandas as pd
import pytest

from deepauc import cli
from deepauc.metrics import roc_auc
from deepauc.pipeline.blend import (
    blend_dirs,
    blend_scores,
    choose_weight,
    nested_weights,
    weight_grid,
)
from deepauc.pipeline.pred_files import read_oof, read_test, scaled_ranks, write_pred_dir

N, N_TEST = 600, 80


def make_pair(root, seed=0, meta_signal=1.0, n_external=0, shuffle_meta=True, test_folds=False):
    """CNN and metadata prediction dirs over the same rows; returns their paths and labels."""
    rng = np.random.default_rng(seed)
    m = N + n_external
    y = (rng.uniform(size=m) < 0.15).astype(int)
    y[:2] = [0, 1]
    base = pd.DataFrame(
        {
            "image_name": [f"ISIC_{i:07d}" for i in range(m)],
            "fold": np.arange(m) % 4,
            "source": ["competition"] * N + ["malignant"] * n_external,
            "target": y,
        }
    )
    tnames = [f"ISIC_9{i:06d}" for i in range(N_TEST)]
    dirs = {}
    for name, signal in (("cnn", 1.2), ("meta", meta_signal)):
        oof = base.copy()
        oof["pred"] = 1 / (1 + np.exp(-(signal * y + rng.normal(size=m))))
        test = pd.DataFrame({"image_name": tnames, "pred": rng.uniform(size=N_TEST)})
        if name == "meta" and shuffle_meta:  # row order must not matter
            oof = oof.sample(frac=1.0, random_state=seed).reset_index(drop=True)
            test = test.iloc[::-1].reset_index(drop=True)
        tf = None
        if test_folds:
            tf = pd.DataFrame(
                {
                    "image_name": test["image_name"],
                    "fold0": test["pred"],
                    "fold1": test["pred"] ** 2,
                }
            )
        write_pred_dir(root / name, oof, test, tf)
        dirs[name] = root / name
    return dirs["cnn"], dirs["meta"]


def test_scaled_ranks():
    np.testing.assert_allclose(scaled_ranks([3.0, 1.0, 2.0]), [1.0, 0.0, 0.5])
    np.testing.assert_allclose(scaled_ranks([1.0, 1.0, 2.0]), [0.25, 0.25, 1.0])
    np.testing.assert_allclose(scaled_ranks([7.0]), [0.5])


def test_chosen_weight_is_grid_maximiser():
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=500) < 0.2).astype(int)
    cnn = y + rng.normal(size=500)
    meta = y + rng.normal(size=500)
    grid = weight_grid(11)
    w, aucs = choose_weight(y, cnn, meta, grid)
    direct = [roc_auc(y, (1 - g) * cnn + g * meta) for g in grid]
    np.testing.assert_allclose(aucs, direct, atol=1e-12)
    assert w == grid[int(np.argmax(direct))]
    assert 0.0 < w < 1.0  # two equally informative, independent models: a real mix wins


def test_nested_uses_other_folds_only():
    rng = np.random.default_rng(1)
    y = (rng.uniform(size=400) < 0.25).astype(int)
    folds = np.arange(400) % 4
    cnn, meta = y + rng.normal(size=400), y + rng.normal(size=400)
    grid = weight_grid(21)
    nested = nested_weights(y, folds, cnn, meta, grid)
    for k in range(4):
        out = folds != k
        w_k, _ = choose_weight(y[out], cnn[out], meta[out], grid)
        assert nested["weights"][k] == w_k
        np.testing.assert_allclose(
            nested["pred"][folds == k], blend_scores(cnn, meta, w_k)[folds == k]
        )
    assert nested["auc"] == pytest.approx(roc_auc(y, nested["pred"]))


@pytest.mark.parametrize("method", ["prob", "rank"])
def test_blend_dirs_outputs_and_w0(tmp_path, method):
    cnn_dir, meta_dir = make_pair(tmp_path, seed=2, n_external=40, test_folds=True)
    out = tmp_path / "blend"
    res = blend_dirs(cnn_dir, meta_dir, out, method=method, steps=21)
    cnn = read_oof(cnn_dir)
    comp = cnn[cnn["source"] == "competition"]
    # w = 0 reproduces the CNN's own AUC (ranks are monotone, so on either scale)
    assert res["fixed"][0.0] == pytest.approx(roc_auc(comp["target"], comp["pred"]), abs=1e-12)
    assert res["grid_auc"][0] == pytest.approx(res["fixed"][0.0], abs=1e-12)
    assert res["auc_chosen"] == pytest.approx(res["grid_auc"].max())
    assert res["auc_chosen"] >= res["fixed"][0.5] - 1e-12
    assert sorted(res["nested"]["weights"]) == [0, 1, 2, 3] and 0.5 < res["nested"]["auc"] < 1.0

    oof = pd.read_csv(out / "oof.csv")
    assert list(oof.columns) == ["image_name", "fold", "source", "target", "pred"]
    assert list(oof["image_name"]) == list(cnn["image_name"])
    assert (oof["source"] == "malignant").sum() == 40
    test = pd.read_csv(out / "test.csv")
    assert list(test.columns) == ["image_name", "pred"]
    assert list(test["image_name"]) == list(read_test(cnn_dir)["image_name"])
    tf = pd.read_csv(out / "test_folds.csv")
    assert list(tf.columns) == ["image_name", "fold0", "fold1"]
    if method == "rank":
        assert oof["pred"].between(0, 1).all() and test["pred"].between(0, 1).all()
    md = (out / "blend.md").read_text()
    assert "optimistic" in md and "nested" in md and "0.50" in md


def test_blended_values_match_formula(tmp_path):
    cnn_dir, meta_dir = make_pair(tmp_path, seed=3)
    out = tmp_path / "b"
    blend_dirs(cnn_dir, meta_dir, out, method="prob", weight=0.3)
    cnn = read_oof(cnn_dir).set_index("image_name")
    meta = read_oof(meta_dir).set_index("image_name")
    oof = read_oof(out).set_index("image_name")
    np.testing.assert_allclose(
        oof["pred"], 0.7 * cnn["pred"] + 0.3 * meta.loc[cnn.index, "pred"], rtol=1e-12
    )
    t_cnn = read_test(cnn_dir).set_index("image_name")["pred"]
    t_meta = read_test(meta_dir).set_index("image_name")["pred"]
    t = read_test(out).set_index("image_name")["pred"]
    np.testing.assert_allclose(t, 0.7 * t_cnn + 0.3 * t_meta.loc[t_cnn.index], rtol=1e-12)


def test_rank_test_blend_does_not_depend_on_oof(tmp_path):
    cnn_dir, meta_dir = make_pair(tmp_path, seed=4, shuffle_meta=False)
    blend_dirs(cnn_dir, meta_dir, tmp_path / "b1", method="rank", weight=0.5)
    oof = read_oof(cnn_dir)
    oof["pred"] = oof["pred"] ** 3 + 5  # a different OOF, same test
    write_pred_dir(cnn_dir, oof, read_test(cnn_dir))
    blend_dirs(cnn_dir, meta_dir, tmp_path / "b2", method="rank", weight=0.5)
    pd.testing.assert_frame_equal(read_test(tmp_path / "b1"), read_test(tmp_path / "b2"))


def test_noise_meta_gets_small_weight(tmp_path):
    cnn_dir, meta_dir = make_pair(tmp_path, seed=5, meta_signal=0.0)
    res = blend_dirs(cnn_dir, meta_dir, tmp_path / "b", method="prob", steps=21)
    assert res["w_chosen"] <= 0.2
    assert res["fixed"][1.0] < 0.6  # the metadata model really is noise


def test_cli_and_mismatched_rows(tmp_path, capsys):
    cnn_dir, meta_dir = make_pair(tmp_path, seed=6)
    rc = cli.main(
        [
            "blend",
            "--cnn",
            str(cnn_dir),
            "--meta",
            str(meta_dir),
            "--out",
            str(tmp_path / "AM"),
            "--method",
            "rank",
            "--steps",
            "11",
        ]
    )
    assert rc == 0
    assert "nested" in capsys.readouterr().out
    oof = read_oof(meta_dir).iloc[:-1]
    write_pred_dir(meta_dir, oof, read_test(meta_dir))
    with pytest.raises(ValueError, match="different image_name sets"):
        blend_dirs(cnn_dir, meta_dir, tmp_path / "x")
    assert not (tmp_path / "x").exists()
