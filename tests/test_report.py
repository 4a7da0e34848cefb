"""deepauc report: CV table values, figures, external rows apart, format checks."""

import numpy as np
import pandas as pd
import pytest

from deepauc import cli
from deepauc.metrics import roc_auc
from deepauc.pipeline.pred_files import read_oof, score_oof, write_pred_dir
from deepauc.pipeline.provenance import ProvenanceMismatch, fold_fingerprint
from deepauc.pipeline.report import cv_table, write_report


def make_pred_dir(path, seed=0, n=300, folds=3, n_external=0, signal=1.0):
    """A prediction dir with random OOF/test predictions that carry some signal."""
    rng = np.random.default_rng(seed)
    m = n + n_external
    y = (rng.uniform(size=m) < 0.2).astype(int)
    y[:2] = [0, 1]
    y[n : n + 2] = [0, 1] if n_external >= 2 else y[n : n + 2]
    oof = pd.DataFrame(
        {
            "image_name": [f"ISIC_{i:07d}" for i in range(m)],
            "fold": np.arange(m) % folds,
            "source": ["competition"] * n + ["isic2019"] * n_external,
            "target": y,
            "pred": 1 / (1 + np.exp(-(signal * y + rng.normal(size=m)))),
        }
    )
    test = pd.DataFrame(
        {"image_name": [f"ISIC_9{i:06d}" for i in range(50)], "pred": rng.uniform(size=50)}
    )
    write_pred_dir(path, oof, test)
    return oof


def test_table_equals_direct_auc(tmp_path):
    oof_a = make_pred_dir(tmp_path / "A", seed=1)
    oof_b = make_pred_dir(tmp_path / "B", seed=2, signal=2.0)
    table = cv_table([tmp_path / "A", tmp_path / "B"])
    assert list(table.columns) == ["model", "fold 0", "fold 1", "fold 2", "OOF", "external"]
    assert list(table["model"]) == ["A", "B"]
    for i, oof in enumerate([oof_a, oof_b]):
        row = table.iloc[i]
        for k in range(3):
            part = oof[oof["fold"] == k]
            assert row[f"fold {k}"] == pytest.approx(
                roc_auc(part["target"], part["pred"]), abs=1e-12
            )
        assert row["OOF"] == pytest.approx(roc_auc(oof["target"], oof["pred"]), abs=1e-12)
        assert np.isnan(row["external"])


def test_external_rows_scored_apart(tmp_path):
    oof = make_pred_dir(tmp_path / "X", seed=3, n=200, n_external=100)
    comp = oof[oof["source"] == "competition"]
    ext = oof[oof["source"] != "competition"]
    scores = score_oof(read_oof(tmp_path / "X"))
    assert scores["OOF"] == pytest.approx(roc_auc(comp["target"], comp["pred"]), abs=1e-12)
    assert scores["external"] == pytest.approx(roc_auc(ext["target"], ext["pred"]), abs=1e-12)
    table = cv_table([tmp_path / "X"])
    assert table.loc[0, "external"] == pytest.approx(scores["external"], abs=1e-12)
    assert table.loc[0, "OOF"] != pytest.approx(roc_auc(oof["target"], oof["pred"]), abs=1e-9)
    fold0 = comp[comp["fold"] == 0]
    assert scores["fold 0"] == pytest.approx(roc_auc(fold0["target"], fold0["pred"]), abs=1e-12)


def test_cli_writes_markdown_and_pngs(tmp_path, capsys):
    make_pred_dir(tmp_path / "preds" / "cnn", seed=4)
    make_pred_dir(tmp_path / "preds" / "meta", seed=5, n_external=60)
    out = tmp_path / "reports" / "cv_demo.md"
    rc = cli.main(
        [
            "report",
            "--preds",
            str(tmp_path / "preds" / "cnn"),
            str(tmp_path / "preds" / "meta"),
            "--out",
            str(out),
            "--title",
            "Demo CV",
        ]
    )
    assert rc == 0
    text = out.read_text()
    assert text.startswith("# Demo CV")
    assert "| cnn |" in text and "| meta |" in text
    for png in ("cv_demo_roc.png", "cv_demo_hist.png"):
        data = (out.parent / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert "| model |" in capsys.readouterr().out
    assert not list(out.parent.glob(".*tmp"))  # atomic writes leave no temp files


def test_bad_oof_is_reported_with_file_and_line(tmp_path, capsys):
    oof = make_pred_dir(tmp_path / "A", seed=6)
    oof.loc[4, "pred"] = np.nan
    oof.to_csv(tmp_path / "A" / "oof.csv", index=False)
    with pytest.raises(ValueError, match=r"oof.csv.*'pred'.*line 6"):
        cv_table([tmp_path / "A"])
    assert (
        cli.main(["report", "--preds", str(tmp_path / "A"), "--out", str(tmp_path / "r.md")]) == 1
    )
    assert "oof.csv" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        cv_table([tmp_path / "missing"])


def test_no_curves_figure_without_recorded_models(tmp_path):
    make_pred_dir(tmp_path / "cnn", seed=7)
    out = tmp_path / "cv.md"
    out.with_name("cv_curves.png").write_bytes(b"from an earlier report")
    write_report([tmp_path / "cnn"], out)
    assert "training curves" not in out.read_text()
    assert not out.with_name("cv_curves.png").exists()


def test_folds_table_is_compared_with_the_recorded_assignment(tmp_path):
    oof = make_pred_dir(tmp_path / "plain", seed=8)
    write_pred_dir(tmp_path / "cnn", oof, None, provenance={"folds": fold_fingerprint(oof)})
    folds_csv = tmp_path / "folds.csv"
    oof[["image_name", "fold"]].to_csv(folds_csv, index=False)
    dirs = [tmp_path / "plain", tmp_path / "cnn"]
    write_report(dirs, tmp_path / "cv.md", folds_csv=folds_csv)

    oof.assign(fold=(oof["fold"] + 1) % 3)[["image_name", "fold"]].to_csv(folds_csv, index=False)
    with pytest.raises(ProvenanceMismatch, match="cnn was predicted under another fold") as err:
        write_report(dirs, tmp_path / "cv2.md", folds_csv=folds_csv)
    assert str(folds_csv) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "cv2.md").exists()
    write_report([tmp_path / "plain"], tmp_path / "cv3.md", folds_csv=folds_csv)  # no record
