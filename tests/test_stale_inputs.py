"""Inputs that change under a finished stage: numeric-looking ids, fixed labels, replaced
images, n_folds against the table, split patients, swapped OOF files, and the CV report's caveat."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from deepauc import cli
from deepauc.pipeline.experiment import load_experiment
from deepauc.pipeline.pred_files import read_oof, write_pred_dir
from deepauc.pipeline.provenance import ProvenanceMismatch, fold_fingerprint, training_record
from deepauc.pipeline.train import _load_fold_rows, train_fold
from helpers import write_experiment

CPU = __import__("torch").device("cpu")


def numeric_names(tiny: dict) -> pd.DataFrame:
    """Rename every image of ``tiny_data`` to a zero-padded number, in the table and the cache."""
    table = pd.read_csv(tiny["train_csv"], dtype={"image_name": str})
    size_dir = next(tiny["cache"].iterdir())
    mapping = {n: f"0{i:06d}" for i, n in enumerate(table["image_name"])}
    for old, new in mapping.items():
        (size_dir / f"{old}.jpg").rename(size_dir / f"{new}.jpg")
    table["image_name"] = table["image_name"].map(mapping)
    table["benign_malignant"] = np.where(table["target"] == 1, "malignant", "benign")
    table["diagnosis"] = "unknown"
    table.to_csv(tiny["train_csv"], index=False)
    return table


def fake_cnn(tiny: dict, table: pd.DataFrame, name: str = "cnn", seed: int = 0):
    """A CNN prediction dir (scores from a seeded generator) over the table's validated rows."""
    rng = np.random.default_rng(seed)
    oof = table[table["fold"] >= 0][["image_name", "fold", "target"]].copy()
    oof["source"] = "competition"
    oof["pred"] = np.clip(oof["target"] * 0.5 + rng.uniform(size=len(oof)) * 0.5, 0, 1)
    test = pd.read_csv(tiny["test_csv"], dtype={"image_name": str})[["image_name"]]
    test["pred"] = rng.uniform(size=len(test))
    out = tiny["root"] / "preds" / name
    write_pred_dir(out, oof, test, provenance={"folds": fold_fingerprint(table)})
    return out


def test_numeric_image_names_go_through_train_meta_blend_ensemble_and_report(tiny_data):
    table = numeric_names(tiny_data)
    cfg = load_experiment(write_experiment(tiny_data, "ce"))
    train_df, valid_df = _load_fold_rows(cfg, 0)
    assert list(valid_df["image_name"]) == list(table.query("fold == 0")["image_name"])
    assert set(train_df["image_name"]) <= set(table["image_name"])
    assert "0000000" in set(valid_df["image_name"])  # the leading zeros are kept

    root = tiny_data["root"]
    test = pd.read_csv(tiny_data["test_csv"], dtype=str)
    test["image_name"] = [f"00{i:05d}" for i in range(len(test))]
    test.to_csv(tiny_data["test_csv"], index=False)
    meta_yaml = root / "meta.yaml"
    meta_yaml.write_text(
        yaml.safe_dump(
            {
                "name": "meta",
                "train_csv": str(tiny_data["train_csv"]),
                "test_csv": str(tiny_data["test_csv"]),
                "epochs": 2,
                "out_dir": str(root / "preds" / "meta"),
            }
        )
    )
    assert cli.main(["meta", "--config", str(meta_yaml)]) == 0
    cnn = fake_cnn(tiny_data, table)
    blend = root / "preds" / "blend"
    assert (
        cli.main(
            ["blend", "--cnn", str(cnn), "--meta", str(root / "preds/meta"), "--out", str(blend)]
        )
        == 0
    )
    sample = root / "sample.csv"
    test[["image_name"]].assign(target=0).to_csv(sample, index=False)
    ens_yaml = root / "ens.yaml"
    ens_yaml.write_text(
        yaml.safe_dump(
            {
                "name": "ens",
                "sample_submission": str(sample),
                "out": str(root / "sub.csv"),
                "members": [str(blend)],
                "oof_out": str(root / "preds" / "ens"),
            }
        )
    )
    assert cli.main(["ensemble", "--config", str(ens_yaml)]) == 0
    report = root / "cv.md"
    dirs = [str(cnn), str(root / "preds/meta"), str(blend), str(root / "preds/ens")]
    assert (
        cli.main(
            [
                "report",
                "--out",
                str(report),
                "--folds",
                str(tiny_data["train_csv"]),
                "--preds",
                *dirs,
            ]
        )
        == 0
    )
    sub = pd.read_csv(root / "sub.csv", dtype=str)
    assert list(sub["image_name"]) == list(test["image_name"])
    assert set(read_oof(root / "preds/ens")["image_name"]) == set(
        table.query("fold >= 0")["image_name"]
    )
    # the report says, beside the blend and ensemble rows, that their weight saw these rows
    text = report.read_text()
    assert "`blend`: its blend weight was chosen on these same OOF rows" in text
    nested = json.loads((blend / "provenance.json").read_text())["blend"]["nested_auc"]
    assert f"{nested:.4f}" in text
    assert "`ens`: averages blends whose weights were chosen on these same OOF rows" in text
    assert "`cnn`: its blend" not in text and "`meta`: its blend" not in text


def test_a_fixed_label_or_replaced_image_stops_train_and_the_report(tiny_data, capsys):
    cfg = load_experiment(write_experiment(tiny_data, "ce"))
    size_dir = next(tiny_data["cache"].iterdir())
    sources = pd.DataFrame({"image_name": [p.stem for p in sorted(size_dir.glob("*.jpg"))]})
    sources["source_bytes"], sources["source_mtime_ns"] = 100, 1
    sources.to_csv(size_dir / "sources_train.csv", index=False)
    first = training_record(cfg, 0)
    train_fold(cfg, 0, CPU)

    table = pd.read_csv(tiny_data["train_csv"])
    name = table.query("fold == 1")["image_name"].iloc[0]
    sources.loc[sources["image_name"] == name, "source_bytes"] = 101  # the image was replaced
    sources.to_csv(size_dir / "sources_train.csv", index=False)
    assert training_record(cfg, 0)["images"] != first["images"]
    with pytest.raises(ProvenanceMismatch, match="trained on other cached images"):
        train_fold(cfg, 0, CPU)
    sources["source_sha256"] = "ab"  # the content hash wins over size and time when present
    sources.to_csv(size_dir / "sources_train.csv", index=False)
    with_sha = training_record(cfg, 0)["images"]
    sources["source_bytes"] = 7
    sources.to_csv(size_dir / "sources_train.csv", index=False)
    assert training_record(cfg, 0)["images"] == with_sha

    table.loc[table["image_name"] == name, "target"] = (
        1 - table.loc[table["image_name"] == name, "target"]
    )
    table.to_csv(tiny_data["train_csv"], index=False)
    assert training_record(cfg, 0)["labels"] != first["labels"]
    assert cli.main(["train", "--config", str(cfg_path(tiny_data)), "--fold", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained on other labels" in err[0] and "delete" in err[0]


def cfg_path(tiny: dict):
    return tiny["root"] / "ce.yaml"


def test_predictions_made_before_a_label_fix_are_refused_by_blend_and_report(tiny_data, capsys):
    table = pd.read_csv(tiny_data["train_csv"], dtype={"image_name": str})
    old = fake_cnn(tiny_data, table, "old")
    fixed = table.copy()
    name = fixed.query("fold == 2")["image_name"].iloc[0]
    fixed.loc[fixed["image_name"] == name, "target"] = (
        1 - fixed.loc[fixed["image_name"] == name, "target"]
    )
    fixed.to_csv(tiny_data["train_csv"], index=False)
    new = fake_cnn(tiny_data, fixed, "new")
    out = tiny_data["root"] / "blend"
    assert cli.main(["blend", "--cnn", str(new), "--meta", str(old), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"disagree on column 'target' for 1 image(s), e.g. ['{name}']" in err
    assert "a label changed after one of them was predicted; rerun" in err
    report = tiny_data["root"] / "cv.md"
    args = ["report", "--out", str(report), "--folds", str(tiny_data["train_csv"])]
    assert cli.main([*args, "--preds", str(old)]) == 1
    err = capsys.readouterr().err
    assert "holds other labels than" in err and name in err
    assert cli.main([*args, "--preds", str(new)]) == 0


def test_an_oof_file_swapped_with_another_experiments_fails_the_copied_check(tiny_data, capsys):
    table = pd.read_csv(tiny_data["train_csv"], dtype={"image_name": str})
    a, b = fake_cnn(tiny_data, table, "a", seed=1), fake_cnn(tiny_data, table, "b", seed=2)
    shutil.copy(b / "oof.csv", a / "oof.csv")  # same names and folds, other scores
    out = tiny_data["root"] / "blend"
    assert cli.main(["blend", "--cnn", str(a), "--meta", str(b), "--out", str(out)]) == 1
    assert "does not hold the rows its provenance.json records" in capsys.readouterr().err


def test_n_folds_must_match_the_table_and_a_split_patient_is_refused(tiny_data):
    cfg = load_experiment(write_experiment(tiny_data, "ce", n_folds=2))
    with pytest.raises(ValueError, match=r"folds \[0, 1, 2\].*do not match n_folds=2"):
        _load_fold_rows(cfg, 0)
    cfg = load_experiment(write_experiment(tiny_data, "ce"))
    table = pd.read_csv(tiny_data["train_csv"])
    table.loc[0, "patient_id"] = table.query("fold == 1")["patient_id"].iloc[0]
    table["benign_malignant"] = np.where(table["target"] == 1, "malignant", "benign")
    table["diagnosis"] = "unknown"
    table.to_csv(tiny_data["train_csv"], index=False)
    with pytest.raises(ValueError, match=r"patient\(s\) split across folds.*IP_"):
        _load_fold_rows(cfg, 0)
    meta = tiny_data["root"] / "meta.yaml"
    meta.write_text(
        yaml.safe_dump(
            {
                "name": "m",
                "train_csv": str(tiny_data["train_csv"]),
                "test_csv": str(tiny_data["test_csv"]),
            }
        )
    )
    assert cli.main(["meta", "--config", str(meta)]) == 1


def test_the_config_fingerprint_holds_no_paths(tiny_data, monkeypatch):
    yaml_path = write_experiment(tiny_data, "ce")
    monkeypatch.chdir(tiny_data["root"])
    cfg = load_experiment(yaml_path, ["data.train_csv=folds.csv"])
    same = [
        ["data.train_csv=./folds.csv"],
        [f"data.train_csv={tiny_data['root'] / 'moved' / 'folds.csv'}", "data.test_csv=t.csv"],
        ["data.cache_dir=elsewhere"],
    ]
    for overrides in same:
        assert load_experiment(yaml_path, overrides).fingerprint() == cfg.fingerprint(), overrides
    assert load_experiment(yaml_path, ["optim.lr=0.5"]).fingerprint() != cfg.fingerprint()
    # a moved data root: the model trained from the old path is still current
    train_fold(cfg, 0, CPU)
    (tiny_data["root"] / "moved").mkdir()
    shutil.copy(tiny_data["train_csv"], tiny_data["root"] / "moved" / "folds.csv")
    moved = load_experiment(yaml_path, ["data.train_csv=./moved/folds.csv"])
    assert train_fold(moved, 0, CPU) == cfg.run_dir(0) / "model.pt"


def test_numeric_image_names_go_through_train_and_predict(tiny_data):
    """Names like 0296243 stay text from the table through training to the OOF and test files."""
    from deepauc.pipeline.predict import predict_experiment

    table = numeric_names(tiny_data)
    test = pd.read_csv(tiny_data["test_csv"], dtype=str)
    size_dir = next(tiny_data["cache"].iterdir())
    numeric_test = [f"00{i:05d}" for i in range(len(test))]
    for old, new in zip(test["image_name"], numeric_test):
        (size_dir / f"{old}.jpg").rename(size_dir / f"{new}.jpg")
    test.assign(image_name=numeric_test).to_csv(tiny_data["test_csv"], index=False)
    cfg = load_experiment(write_experiment(tiny_data, "ids", tta={"dihedral": 2}))
    for fold in cfg.fold_ids():
        train_fold(cfg, fold, CPU)
    out = predict_experiment(cfg, CPU)
    oof = pd.read_csv(out / "oof.csv", dtype={"image_name": str})
    assert set(oof["image_name"]) == set(table.query("fold >= 0")["image_name"])
    submitted = pd.read_csv(out / "test.csv", dtype={"image_name": str})
    assert list(submitted["image_name"]) == numeric_test
