"""deepauc meta: features, per-fold MLP/LightGBM runs, output format, config checks."""

import numpy as np
import pandas as pd
import pytest
import yaml

from deepauc import cli
from deepauc.config import ConfigError, load_config
from deepauc.metrics import roc_auc
from deepauc.pipeline.metadata_model import MetaConfig, build_features, patient_image_counts
from deepauc.pipeline.pred_files import read_oof, read_test, read_test_folds

SITES = ["head/neck", "upper extremity", "lower extremity", "torso", "palms/soles", "oral/genital"]


def make_tables(seed=0, n=600, n_test=120, folds=3, n_external=0, age_effect=3.0):
    """A folds table and a test table where older patients are far more often malignant."""
    rng = np.random.default_rng(seed)

    def meta(m, prefix):
        pid = rng.integers(0, max(m // 4, 1), size=m)
        age = rng.choice(np.arange(20, 90, 5), size=m).astype(float)
        age[rng.uniform(size=m) < 0.05] = np.nan
        sex = rng.choice(["male", "female"], size=m).astype(object)
        sex[rng.uniform(size=m) < 0.05] = np.nan
        site = rng.choice(SITES, size=m).astype(object)
        site[rng.uniform(size=m) < 0.05] = np.nan
        return pd.DataFrame(
            {
                "image_name": [f"ISIC_{prefix}{i:06d}" for i in range(m)],
                "patient_id": [f"IP_{prefix}{p:05d}" for p in pid],
                "sex": sex,
                "age_approx": age,
                "anatom_site_general_challenge": site,
            }
        )

    m = n + n_external
    train = meta(m, "0")
    z = age_effect * (np.nan_to_num(train["age_approx"].to_numpy(), nan=55.0) - 55) / 20 - 2.5
    y = (rng.uniform(size=m) < 1 / (1 + np.exp(-z))).astype(int)
    train["diagnosis"] = np.where(y == 1, "melanoma", "nevus")
    train["benign_malignant"] = np.where(y == 1, "malignant", "benign")
    train["target"] = y
    train["source"] = ["competition"] * n + ["isic2019"] * n_external
    train["image_path"] = "x.jpg"
    # folds by patient: meta refuses a patient split across folds
    patient = train["patient_id"].str[-5:].astype(int).to_numpy()[:n]
    train["fold"] = np.concatenate([patient % folds, np.full(n_external, -1)])
    return train, meta(n_test, "9")


def write_config(tmp_path, model, **extra):
    train, test = make_tables(n_external=50)
    train.to_csv(tmp_path / "folds.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    cfg = {
        "name": f"meta_{model}",
        "train_csv": str(tmp_path / "folds.csv"),
        "test_csv": str(tmp_path / "test.csv"),
        "model": model,
        "hidden": [16, 8],
        "epochs": 5,
        "batch_size": 64,
        "lr": 0.01,
        "lightgbm": {"n_estimators": 30, "num_leaves": 4, "min_child_samples": 10},
        "out_dir": str(tmp_path / "preds" / f"meta_{model}"),
        **extra,
    }
    path = tmp_path / f"meta_{model}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, train, test


def test_features_one_hot_missing_and_no_nan():
    train, test = make_tables(seed=1)
    test.loc[0, ["sex", "anatom_site_general_challenge", "age_approx"]] = np.nan
    x_train, x_test, names = build_features(train, test)
    assert "sex_missing" in names and "site_missing" in names and "age_missing" in names
    assert {"sex_male", "sex_female", "site_head_neck", "site_oral_genital"} <= set(names)
    assert x_train.shape == (len(train), len(names)) and x_test.shape == (len(test), len(names))
    assert np.isfinite(x_train).all() and np.isfinite(x_test).all()
    col = {n: i for i, n in enumerate(names)}
    sex_cols = [col[c] for c in ("sex_male", "sex_female", "sex_missing")]
    site_cols = [col[c] for c in names if c.startswith("site_")]
    np.testing.assert_array_equal(x_train[:, sex_cols].sum(1), 1)  # exactly one level per row
    np.testing.assert_array_equal(x_test[:, site_cols].sum(1), 1)
    assert x_test[0, col["sex_missing"]] == 1 and x_test[0, col["site_missing"]] == 1
    assert x_test[0, col["age"]] == 0 and x_test[0, col["age_missing"]] == 1
    known = train["age_approx"].notna().to_numpy()
    ages = x_train[known, col["age"]]
    assert abs(ages.mean()) < 1e-5 and abs(ages.std() - 1) < 1e-4  # standardised on train


def test_patient_image_counts_within_each_table():
    train = pd.DataFrame(
        {
            "patient_id": ["a", "b", "a", "a", np.nan],
            "age_approx": 50.0,
            "sex": "male",
            "anatom_site_general_challenge": "torso",
            "image_name": list("vwxyz"),
        }
    )
    test = pd.DataFrame(
        {
            "patient_id": ["a", "c"],
            "age_approx": 50.0,
            "sex": "male",
            "anatom_site_general_challenge": "torso",
            "image_name": ["t1", "t2"],
        }
    )
    np.testing.assert_array_equal(patient_image_counts(train), [3, 1, 3, 3, 1])
    x_train, x_test, names = build_features(train, test)
    c = names.index("log1p_patient_images")
    np.testing.assert_allclose(x_train[:, c], np.log1p([3, 1, 3, 3, 1]), rtol=1e-6)
    np.testing.assert_allclose(
        x_test[:, c], np.log1p([1, 1]), rtol=1e-6
    )  # "a" counted in test only


def test_unknown_site_names_table_line_and_value():
    train, test = make_tables(seed=2)
    train.loc[3, "anatom_site_general_challenge"] = "anterior torso"
    with pytest.raises(
        ValueError, match=r"folds.csv.*anatom_site_general_challenge.*line 5.*anterior torso"
    ):
        build_features(train, test, "folds.csv", "test.csv")


@pytest.mark.parametrize("model", ["mlp", "lightgbm"])
def test_cli_run_writes_prediction_format(tmp_path, model, capsys):
    path, train, test = write_config(tmp_path, model)
    assert cli.main(["meta", "--config", str(path)]) == 0
    out = tmp_path / "preds" / f"meta_{model}"
    printed = capsys.readouterr().out
    assert "fold 2:" in printed and "OOF AUC (competition rows)" in printed

    oof = read_oof(out)
    assert list(pd.read_csv(out / "oof.csv").columns) == [
        "image_name",
        "fold",
        "source",
        "target",
        "pred",
    ]
    validated = train[train["fold"] >= 0]
    assert sorted(oof["image_name"]) == sorted(validated["image_name"])  # each validated row once
    merged = oof.merge(validated, on="image_name", suffixes=("", "_t"))
    assert (merged["fold"] == merged["fold_t"]).all() and (
        merged["target"] == merged["target_t"]
    ).all()
    assert oof["pred"].between(0, 1).all()

    t = read_test(out)
    assert list(t["image_name"]) == list(test["image_name"])  # test rows in order
    tf = read_test_folds(out)
    assert list(tf.columns) == ["image_name", "fold0", "fold1", "fold2"]
    np.testing.assert_allclose(t["pred"], tf[["fold0", "fold1", "fold2"]].mean(axis=1), rtol=1e-9)


def test_mlp_is_deterministic_and_learns_age(tmp_path):
    path, train, _ = write_config(tmp_path, "mlp", epochs=15)
    for run in ("a", "b"):
        assert cli.main(["meta", "--config", str(path), "--set", f"out_dir={tmp_path / run}"]) == 0
    a, b = read_oof(tmp_path / "a"), read_oof(tmp_path / "b")
    np.testing.assert_array_equal(a["pred"], b["pred"])
    comp = a[a["source"] == "competition"]
    assert roc_auc(comp["target"], comp["pred"]) > 0.7


def test_lightgbm_learns_age(tmp_path):
    path, _, _ = write_config(tmp_path, "lightgbm")
    assert cli.main(["meta", "--config", str(path), "--set", "use_external=true"]) == 0
    oof = read_oof(tmp_path / "preds" / "meta_lightgbm")
    comp = oof[oof["source"] == "competition"]
    assert roc_auc(comp["target"], comp["pred"]) > 0.7


def test_config_defaults_and_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: m\ntrain_csv: a.csv\ntest_csv: b.csv\n")
    cfg = load_config(path, MetaConfig)
    assert cfg.hidden == [256, 128] and cfg.model == "mlp" and cfg.use_external is False
    assert str(cfg.output_dir) == "preds/m"
    with pytest.raises(ConfigError, match="model"):
        load_config(path, MetaConfig, ["model=xgboost"])
    with pytest.raises(ConfigError, match="lightgbm.num_leafs"):
        load_config(path, MetaConfig, ["lightgbm.num_leafs=3"])
    with pytest.raises(ConfigError, match="dropout"):
        load_config(path, MetaConfig, ["dropout=1.5"])


# ---- image_features: width, height and bytes of each row's image file
def test_image_facts_from_the_published_layouts(tmp_path):
    import cv2

    from deepauc.data.image_facts import image_facts
    from deepauc.data.tables import read_csv_table
    from layout_fixtures import write_kaggle2020, write_resized2020

    for writer, from_table in ((write_resized2020, True), (write_kaggle2020, False)):
        root = writer(tmp_path / writer.__name__)
        merged = tmp_path / f"{writer.__name__}.csv"
        assert (
            cli.main(["external", "--train-csv", str(root / "train.csv"), "--out", str(merged)])
            == 0
        )
        table = read_csv_table(merged, ["image_name", "image_path"])
        facts = image_facts(table, root, str(merged))
        for (_, row), (_, got) in zip(table.iterrows(), facts.iterrows()):
            path = root / row["image_path"]
            assert got["bytes"] == path.stat().st_size
            if from_table:  # the resized set's columns: the original's size, not the file's
                assert (got["width"], got["height"]) == (float(row["width"]), float(row["height"]))
            else:
                h, w = cv2.imread(str(path)).shape[:2]
                assert (got["width"], got["height"]) == (w, h)


def test_image_facts_missing_file_names_the_line(tmp_path):
    from deepauc.data.image_facts import image_facts

    table = pd.DataFrame({"image_name": ["a", "b"], "image_path": ["a.jpg", "b.jpg"]})
    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"t.csv: image file not found for line 3 .*b.jpg"):
        image_facts(table, tmp_path, "t.csv")


def test_the_meta_model_learns_from_image_size_when_asked(tmp_path):
    """Malignant rows' files are larger photographs: with image_features LightGBM finds it;
    without, on a table whose ages say nothing, it cannot."""
    import cv2

    train, test = make_tables(n=300, n_test=40, age_effect=0.0)
    rng = np.random.default_rng(0)
    for df, folder in ((train, tmp_path / "train"), (test, tmp_path / "test")):
        folder.mkdir()
        malignant = df["target"].to_numpy() if "target" in df else np.zeros(len(df), int)
        for name, m in zip(df["image_name"], malignant):
            side = int(rng.integers(40, 60)) * (2 if m else 1)
            pixels = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
            cv2.imwrite(str(folder / f"{name}.jpg"), pixels)
    train["image_path"] = "train/" + train["image_name"] + ".jpg"
    train.to_csv(tmp_path / "folds.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    base = {
        "name": "meta_img",
        "train_csv": str(tmp_path / "folds.csv"),
        "test_csv": str(tmp_path / "test.csv"),
        "model": "lightgbm",
        "lightgbm": {"n_estimators": 30, "num_leaves": 4, "min_child_samples": 10},
    }
    aucs = {}
    for on in (False, True):
        cfg = dict(base, out_dir=str(tmp_path / f"p{on}"), image_features=on)
        if on:
            cfg.update(image_root=str(tmp_path), test_image_root=str(tmp_path / "test"))
        path = tmp_path / f"m{on}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        assert cli.main(["meta", "--config", str(path)]) == 0
        oof = read_oof(tmp_path / f"p{on}")
        aucs[on] = roc_auc(oof["target"], oof["pred"])
    assert aucs[True] > 0.95 and aucs[False] < 0.7, aucs


def test_image_features_need_both_folders(tmp_path):
    path, _, _ = write_config(tmp_path, "mlp", image_features=True, image_root=str(tmp_path))
    with pytest.raises(ConfigError, match="image_features needs image_root and test_image_root"):
        load_config(path, MetaConfig)
