"""deepauc report: the folds' mean ± sd, the fold-rank OOF AUC, the partial AUCs, and the
external column end to end from a folds table built with and without --include-external."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from deepauc import cli
from deepauc.data.folds import assign_folds
from deepauc.metrics import pauc_above_tpr
from deepauc.pipeline.pred_files import read_oof, write_pred_dir
from deepauc.pipeline.report import cv_table, write_report
from deepauc.pipeline.report_scores import PAUC_FPR, PAUC_TPR, RANK_OOF, summary_table


def fold_oof(seed=0, n=240, folds=4, n_external=0, shift=None):
    """OOF rows whose fold k's predictions are ``shift[k]`` + a noisy logit (one scale per fold)."""
    rng = np.random.default_rng(seed)
    m = n + n_external
    y = (rng.uniform(size=m) < 0.25).astype(int)
    fold = np.arange(m) % folds
    logit = 1.5 * y + rng.normal(size=m)
    shift = np.zeros(folds) if shift is None else np.asarray(shift, dtype=float)
    return pd.DataFrame(
        {
            "image_name": [f"ISIC_{i:07d}" for i in range(m)],
            "fold": fold,
            "source": ["competition"] * n + ["isic2019"] * n_external,
            "target": y,
            "pred": 1 / (1 + np.exp(-(logit + shift[fold]))),
        }
    )


def test_fold_mean_sd_and_fold_rank_auc_match_sklearn_and_scipy(tmp_path):
    oof = fold_oof(seed=1, n_external=40, shift=[0.0, 2.0, -1.5, 4.0])
    write_pred_dir(tmp_path / "m", oof, None)
    table = cv_table([tmp_path / "m"])
    summary = summary_table(table, [read_oof(tmp_path / "m")]).iloc[0]
    comp = oof[oof["source"] == "competition"]
    per_fold = [
        roc_auc_score(comp.loc[comp["fold"] == k, "target"], comp.loc[comp["fold"] == k, "pred"])
        for k in range(4)
    ]
    assert summary["fold mean"] == pytest.approx(np.mean(per_fold), abs=1e-12)
    assert summary["fold sd"] == pytest.approx(np.std(per_fold, ddof=1), abs=1e-12)

    ranks = comp.groupby("fold")["pred"].transform(lambda s: (rankdata(s) - 1) / (len(s) - 1))
    expected = roc_auc_score(comp["target"], ranks)
    assert summary[RANK_OOF] == pytest.approx(expected, abs=1e-12)
    # the fold models' shifted scales pull the pooled AUC down; ranks within folds undo it
    unshifted = fold_oof(seed=1, n_external=40)
    write_pred_dir(tmp_path / "u", unshifted, None)
    plain = summary_table(cv_table([tmp_path / "u"]), [read_oof(tmp_path / "u")]).iloc[0]
    assert plain[RANK_OOF] == pytest.approx(summary[RANK_OOF], abs=1e-12)
    assert summary["OOF"] < plain["OOF"] - 0.02

    assert summary[PAUC_FPR] == pytest.approx(
        roc_auc_score(comp["target"], comp["pred"], max_fpr=0.2), abs=1e-12
    )
    assert summary[PAUC_TPR] == pytest.approx(
        pauc_above_tpr(comp["target"], comp["pred"], min_tpr=0.8), abs=1e-15
    )
    assert list(summary.index[-1:]) == ["external"]


def test_one_defined_fold_has_a_mean_but_no_sd(tmp_path):
    oof = fold_oof(seed=2, folds=2)
    oof.loc[oof["fold"] == 1, "target"] = 0  # fold 1 holds one class: its AUC is undefined
    oof.loc[oof.index[oof["fold"] == 0][:3], "target"] = [0, 1, 1]
    write_pred_dir(tmp_path / "m", oof, None)
    summary = summary_table(cv_table([tmp_path / "m"]), [read_oof(tmp_path / "m")]).iloc[0]
    assert np.isnan(summary["fold 1"]) and summary["fold mean"] == summary["fold 0"]
    assert np.isnan(summary["fold sd"])
    write_report([tmp_path / "m"], tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()
    fold0 = f"{summary['fold 0']:.4f}"
    assert f"| m | {fold0} |  | {fold0} |" in text  # mean alone, no "± sd"


def training_table(n_comp=120, n_ext=60, seed=3):
    """A merged training table: competition rows by patient, external rows of their own source."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_comp + n_ext):
        external = i >= n_comp
        rows.append(
            {
                "image_name": f"ISIC_{i:07d}",
                "patient_id": f"IP_{i // 3:05d}" if not external else f"EX_{i:05d}",
                "sex": ["male", "female"][i % 2],
                "age_approx": float(20 + (i * 7) % 65),
                "anatom_site_general_challenge": ["torso", "head/neck", "lower extremity"][i % 3],
                "target": int(rng.uniform() < (0.2 if not external else 0.4)),
                "source": "isic2019" if external else "competition",
            }
        )
    return pd.DataFrame(rows)


def oof_of(folds_table, seed=4):
    rng = np.random.default_rng(seed)
    valid = folds_table[folds_table["fold"] >= 0].reset_index(drop=True)
    pred = 1 / (1 + np.exp(-(1.2 * valid["target"] + rng.normal(size=len(valid)))))
    return valid[["image_name", "fold", "source", "target"]].assign(pred=pred)


@pytest.mark.parametrize("include_external", [True, False])
def test_external_column_end_to_end(tmp_path, capsys, include_external):
    folds = assign_folds(training_table(), 3, seed=0, include_external=include_external)
    folds_csv = tmp_path / "folds.csv"
    folds.to_csv(folds_csv, index=False)
    oof = oof_of(folds)
    write_pred_dir(tmp_path / "preds" / "cnn", oof, None)
    out = tmp_path / "cv.md"
    args = ["report", "--preds", str(tmp_path / "preds" / "cnn"), "--out", str(out)]
    assert cli.main([*args, "--folds", str(folds_csv)]) == 0
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| cnn |"))
    ext = oof[oof["source"] != "competition"]
    empty_note = "The `external` column is empty: no external rows were validated"
    if include_external:
        assert len(ext) == 60
        assert row.endswith(f"| {roc_auc_score(ext['target'], ext['pred']):.4f} |")
        assert empty_note not in text
        assert "| isic2019 | 60 |" in text  # the source table scores them apart too
    else:
        assert ext.empty and row.endswith("|  |")
        assert empty_note in text and "INCLUDE_EXTERNAL=1" in text
        assert "| isic2019 |" not in text
    assert "| cnn |" in capsys.readouterr().out


def test_external_rows_of_one_class_are_named(tmp_path):
    oof = fold_oof(seed=5, n_external=10)
    oof.loc[oof["source"] != "competition", "target"] = 0
    write_pred_dir(tmp_path / "m", oof, None)
    write_pred_dir(tmp_path / "n", fold_oof(seed=6), None)
    write_report([tmp_path / "m", tmp_path / "n"], tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()
    assert "- `m`: its 10 external rows hold one class: no AUC" in text
    assert "- `n`: no external rows" in text
    assert "no external rows were validated" not in text
