"""deepauc ensemble: mean and rank averaging, submission order and validation, OOF checks, the
defaults' outputs unchanged, the summary's rank correlations and drop-one AUCs."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from deepauc import cli
from deepauc.config import ConfigError, load_config
from deepauc.pipeline.ensemble import EnsembleConfig, average, run_ensemble
from deepauc.pipeline.pred_files import read_oof, read_test, write_pred_dir

NAMES = ["ISIC_a", "ISIC_b", "ISIC_c", "ISIC_d"]
OOF_NAMES = ["ISIC_1", "ISIC_2", "ISIC_3", "ISIC_4", "ISIC_5"]


def member(root, name, test_pred, oof_pred, order=None):
    """A prediction dir with hand-made numbers; ``order`` permutes its rows on disk."""
    oof = pd.DataFrame(
        {
            "image_name": OOF_NAMES,
            "fold": [0, 0, 1, 1, 1],
            "source": ["competition"] * 4 + ["isic2019"],
            "target": [0, 1, 0, 1, 1],
            "pred": oof_pred,
        }
    )
    test = pd.DataFrame({"image_name": NAMES, "pred": test_pred})
    if order is not None:
        test, oof = test.iloc[order], oof.iloc[order + [4]]
    write_pred_dir(root / name, oof, test)
    return root / name


def setup(tmp_path, method="mean", weights=None):
    a = member(tmp_path, "A", [0.1, 0.4, 0.3, 0.9], [0.1, 0.8, 0.3, 0.6, 0.5])
    b = member(tmp_path, "B", [0.3, 0.2, 0.5, 0.7], [0.2, 0.4, 0.1, 0.9, 0.6], order=[3, 1, 0, 2])
    sample = pd.DataFrame({"image_name": ["ISIC_c", "ISIC_a", "ISIC_d", "ISIC_b"], "target": 0})
    sample.to_csv(tmp_path / "sample_submission.csv", index=False)
    cfg = {
        "name": "ens",
        "members": [str(a), str(b)],
        "method": method,
        "sample_submission": str(tmp_path / "sample_submission.csv"),
        "out": str(tmp_path / "submissions" / "ens.csv"),
        "oof_out": str(tmp_path / "preds" / "ens"),
    }
    if weights is not None:
        cfg["weights"] = weights
    path = tmp_path / "ensemble.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def read_sub(tmp_path):
    return pd.read_csv(tmp_path / "submissions" / "ens.csv")


def test_average_by_hand():
    w = np.array([0.5, 0.5])
    np.testing.assert_allclose(average([[0.1, 0.4], [0.3, 0.2]], w, "mean"), [0.2, 0.3])
    # ranks scaled to [0, 1]: [0.1, 0.4, 0.3] -> [0, 1, .5]; [0.3, 0.2, 0.5] -> [.5, 0, 1]
    np.testing.assert_allclose(
        average([[0.1, 0.4, 0.3], [0.3, 0.2, 0.5]], w, "rank"), [0.25, 0.5, 0.75]
    )
    np.testing.assert_allclose(
        average([[0.0, 1.0], [1.0, 0.0]], np.array([0.75, 0.25]), "mean"), [0.25, 0.75]
    )


def test_mean_submission_in_sample_order(tmp_path):
    path = setup(tmp_path)
    assert cli.main(["ensemble", "--config", str(path)]) == 0
    sub = read_sub(tmp_path)
    assert list(sub.columns) == ["image_name", "target"]
    assert list(sub["image_name"]) == ["ISIC_c", "ISIC_a", "ISIC_d", "ISIC_b"]
    # by hand: a=(0.1+0.3)/2, b=(0.4+0.2)/2, c=(0.3+0.5)/2, d=(0.9+0.7)/2
    np.testing.assert_allclose(sub["target"], [0.4, 0.2, 0.8, 0.3])
    from deepauc.pipeline.submission import validate_submission

    sample = pd.read_csv(tmp_path / "sample_submission.csv")
    validate_submission(sub, sample, "ens.csv")  # raises if invalid

    oof = read_oof(tmp_path / "preds" / "ens")
    assert list(oof["image_name"]) == OOF_NAMES
    np.testing.assert_allclose(oof["pred"], [0.15, 0.6, 0.2, 0.75, 0.55])
    test = read_test(tmp_path / "preds" / "ens")
    assert list(test["image_name"]) == list(sub["image_name"])
    np.testing.assert_allclose(test["pred"], sub["target"])


def test_rank_and_weights(tmp_path):
    path = setup(tmp_path, method="rank", weights=[3, 1])
    run_ensemble(load_config(path, EnsembleConfig))
    sub = read_sub(tmp_path).set_index("image_name")["target"]
    # test ranks, A: a0 b2/3 c1/3 d1; B: a1/3 b0 c2/3 d1; weights 3/4, 1/4
    expect = {"ISIC_a": 1 / 12, "ISIC_b": 0.5, "ISIC_c": 5 / 12, "ISIC_d": 1.0}
    for name, value in expect.items():
        assert sub[name] == pytest.approx(value)


def test_mismatched_oof_rows_error(tmp_path):
    path = setup(tmp_path)
    b = read_oof(tmp_path / "B")
    b.loc[0, "image_name"] = "ISIC_other"
    write_pred_dir(tmp_path / "B", b, read_test(tmp_path / "B"))
    with pytest.raises(ValueError, match=r"B/oof.csv.*different image_name sets.*ISIC_other"):
        run_ensemble(load_config(path, EnsembleConfig))
    assert not (tmp_path / "submissions" / "ens.csv").exists()
    b = read_oof(tmp_path / "A")
    b.loc[0, "target"] = 1
    write_pred_dir(tmp_path / "B", b, read_test(tmp_path / "A"))
    with pytest.raises(ValueError, match="disagree on column 'target'"):
        run_ensemble(load_config(path, EnsembleConfig))


def test_member_missing_test_id_errors(tmp_path, capsys):
    path = setup(tmp_path)
    test = read_test(tmp_path / "A").iloc[:3]
    write_pred_dir(tmp_path / "A", read_oof(tmp_path / "A"), test)
    assert cli.main(["ensemble", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "A/test.csv" in err and "ISIC_d" in err


def test_config_checks(tmp_path):
    path = setup(tmp_path)
    with pytest.raises(ConfigError, match="weights"):
        load_config(path, EnsembleConfig, ["weights=[1]"])
    with pytest.raises(ConfigError, match="method"):
        load_config(path, EnsembleConfig, ["method=median"])
    cfg = load_config(path, EnsembleConfig, ["oof_out=null"])
    assert str(cfg.oof_dir) == "preds/ens"


def test_defaults_write_the_same_files_as_before(tmp_path):
    """With the defaults (selection: fixed) the submission and the prediction dir hold what
    they held before selection and the log existed: these hand-worked bytes; the new files
    are ensemble.md beside them and the log beside the submission."""
    oof = {"image_name": OOF_NAMES, "fold": [0, 0, 1, 1, 1]}
    oof |= {"source": ["competition"] * 4 + ["isic2019"], "target": [0, 1, 0, 1, 1]}
    five = NAMES + ["ISIC_e"]  # five rows: ranks in quarters, exact in binary
    for name, oof_pred, test_pred in [
        ("A", [0.1, 0.8, 0.3, 0.6, 0.5], [0.1, 0.4, 0.3, 0.9, 0.6]),
        ("B", [0.2, 0.4, 0.1, 0.9, 0.6], [0.3, 0.2, 0.5, 0.7, 0.1]),
    ]:
        write_pred_dir(
            tmp_path / name,
            pd.DataFrame(oof | {"pred": oof_pred}),
            pd.DataFrame({"image_name": five, "pred": test_pred}),
            provenance={"folds": "f" * 16},
        )
    sample = pd.DataFrame({"image_name": ["ISIC_c", "ISIC_a", "ISIC_d", "ISIC_b", "ISIC_e"]})
    sample.assign(target=0).to_csv(tmp_path / "sample.csv", index=False)
    members = [str(tmp_path / "A"), str(tmp_path / "B")]
    cfg = {"name": "ens", "members": members, "method": "rank", "weights": [3, 1]}
    cfg |= {"sample_submission": str(tmp_path / "sample.csv"), "out": str(tmp_path / "s/e.csv")}
    cfg |= {"oof_out": str(tmp_path / "preds" / "ens")}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(cfg))
    assert cli.main(["ensemble", "--config", str(tmp_path / "e.yaml")]) == 0

    # ranks/4, A: oof 0 4 1 3 2, test a0 b2 c1 d4 e3; B: oof 1 2 0 4 3, test a2 b1 c3 d4 e0
    # 3/4 A + 1/4 B
    assert (tmp_path / "s/e.csv").read_text() == (
        "image_name,target\nISIC_c,0.375\nISIC_a,0.125\nISIC_d,1.0\nISIC_b,0.4375\nISIC_e,0.5625\n"
    )
    out = tmp_path / "preds" / "ens"
    assert (out / "test.csv").read_text() == (tmp_path / "s/e.csv").read_text().replace(
        "image_name,target", "image_name,pred"
    )
    assert (out / "oof.csv").read_text() == (
        "image_name,fold,source,target,pred\nISIC_1,0,competition,0,0.0625\n"
        "ISIC_2,0,competition,1,0.875\nISIC_3,1,competition,0,0.1875\n"
        "ISIC_4,1,competition,1,0.8125\nISIC_5,1,isic2019,1,0.5625\n"
    )
    record = json.loads((out / "provenance.json").read_text())
    assert sorted(record) == ["folds", "inputs", "labels", "oof_rows", "version"]
    assert record["folds"] == "f" * 16 and record["inputs"] == members
    assert sorted(p.name for p in out.iterdir()) == [
        "ensemble.md",
        "oof.csv",
        "provenance.json",
        "test.csv",
    ]
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["e.csv", "log.csv"]


def test_summary_tables_against_scipy_and_sklearn(tmp_path):
    """The rank correlations and drop-one AUCs are those of the rows matched by image_name
    (B's rows are stored in another order)."""
    path = setup(tmp_path, method="mean", weights=[3, 1])
    result = run_ensemble(load_config(path, EnsembleConfig))
    a = read_oof(tmp_path / "A").set_index("image_name")
    b = read_oof(tmp_path / "B").set_index("image_name").loc[a.index]
    comp = (a["source"] == "competition").to_numpy()
    rho = spearmanr(a["pred"][comp], b["pred"][comp]).statistic
    np.testing.assert_allclose(result.correlation.to_numpy(), [[1, rho], [rho, 1]])
    assert list(result.correlation.index) == ["A", "B"]
    y = a["target"][comp]
    # without A only B is left, and the other way round
    expect = [roc_auc_score(y, b["pred"][comp]), roc_auc_score(y, a["pred"][comp])]
    np.testing.assert_allclose(result.drop_one["OOF"], expect)
    whole = roc_auc_score(y, 0.75 * a["pred"][comp] + 0.25 * b["pred"][comp])
    assert result.oof_auc == pytest.approx(whole)
    np.testing.assert_allclose(result.drop_one["change"], np.array(expect) - whole)
    md = (tmp_path / "preds" / "ens" / "ensemble.md").read_text()
    assert "## Rank correlation" in md and f"| A | 1.000 | {rho:.3f} |" in md
    assert "## Drop one" in md and "Greedy" not in md


def test_selection_config_checks(tmp_path):
    path = setup(tmp_path)
    with pytest.raises(ConfigError, match="greedy selection sets the weights"):
        load_config(path, EnsembleConfig, ["selection=greedy", "weights=[1,2]"])
    with pytest.raises(ConfigError, match="candidates: 'all' needs selection: greedy"):
        load_config(path, EnsembleConfig, ["candidates=all"])
    with pytest.raises(ConfigError, match="greedy_steps must be >= 1"):
        load_config(path, EnsembleConfig, ["selection=greedy", "greedy_steps=0"])
    with pytest.raises(ConfigError, match="candidates"):
        load_config(path, EnsembleConfig, ["selection=greedy", "candidates=some"])
    with pytest.raises(ConfigError, match="candidates: listed more than once"):
        load_config(path, EnsembleConfig, ["selection=greedy", "candidates=[a,a]"])
    cfg = load_config(path, EnsembleConfig, ["selection=greedy", "candidates=[preds/x]"])
    assert cfg.candidates == ["preds/x"]
    assert cfg.log_path == tmp_path / "submissions" / "log.csv"
    cfg = load_config(path, EnsembleConfig, ["submission_log=elsewhere/log.csv"])
    assert str(cfg.log_path) == "elsewhere/log.csv"
