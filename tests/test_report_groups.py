"""deepauc report --folds: the subgroup tables (site, sex, age band, image size on competition
rows, source on all rows) against scikit-learn per group, their bands and pooling, refusals."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from deepauc import cli
from deepauc.pipeline.pred_files import read_oof, write_pred_dir
from deepauc.pipeline.report_groups import NO_AUC, age_bands, pool_rare, subgroup_tables

SITES = ["torso", "head/neck", "lower extremity", None]
SIZES = [(6000, 4000), (1872, 1053), (640, 480), (None, None)]


def folds_table(n=200, n_ext=40, seed=0):
    rng = np.random.default_rng(seed)
    m = n + n_ext
    size = [SIZES[i % 4] for i in range(m)]
    table = pd.DataFrame(
        {
            "image_name": [f"ISIC_{i:07d}" for i in range(m)],
            "patient_id": [f"IP_{i // 2:05d}" for i in range(m)],
            "sex": [["male", "female", None][i % 3] for i in range(m)],
            "age_approx": [
                [25.0, 30.0, 44.0, 45.0, 60.0, 75.0, 90.0, None][i % 8] for i in range(m)
            ],
            "anatom_site_general_challenge": [SITES[i % 4] for i in range(m)],
            "target": (rng.uniform(size=m) < 0.3).astype(int),
            "fold": (np.arange(m) // 2) % 3,
            "source": ["competition"] * n + ["isic2019"] * n_ext,
            "width": [w for w, _ in size],
            "height": [h for _, h in size],
        }
    )
    # the 75+ band: one class only
    table.loc[(table["age_approx"] >= 75.0), "target"] = 0
    return table


def write_dirs(tmp_path, table):
    dirs = []
    for k, signal in enumerate((1.0, 2.0)):
        rng = np.random.default_rng(10 + k)
        y = table["target"].to_numpy()
        oof = table[["image_name", "fold", "source", "target"]].assign(
            pred=1 / (1 + np.exp(-(signal * y + rng.normal(size=len(y)))))
        )
        write_pred_dir(tmp_path / f"m{k}", oof, None)
        dirs.append(tmp_path / f"m{k}")
    return dirs


def test_age_bands_by_hand():
    ages = pd.Series([0.0, 29.0, 30.0, 44.0, 45.0, 59.0, 60.0, 74.0, 75.0, 110.0, np.nan])
    assert list(age_bands(ages)) == [
        "<30", "<30", "30-44", "30-44", "45-59", "45-59", "60-74", "60-74", "75+", "75+", "missing"
    ]  # fmt: skip


def test_rare_sizes_pool_into_other():
    labels = pd.Series(["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"] + ["missing"] * 4)
    assert (
        list(pool_rare(labels, keep=2)) == ["a"] * 5 + ["b"] * 3 + ["other"] * 3 + ["missing"] * 4
    )


def test_every_group_auc_is_sklearns_on_its_rows(tmp_path):
    table = folds_table()
    folds_csv = tmp_path / "folds.csv"
    table.to_csv(folds_csv, index=False)
    dirs = write_dirs(tmp_path, table)
    oofs = {d.name: read_oof(d) for d in dirs}
    tables, n_rows = subgroup_tables(oofs, folds_csv)
    assert n_rows == 240
    titles = [t.columns[0] for t in tables]
    assert titles == ["source", "anatomic site", "sex", "age band", "image size"]

    comp = table[table["source"] == "competition"].copy()
    comp["age band"] = age_bands(comp["age_approx"])
    comp["anatomic site"] = comp["anatom_site_general_challenge"].fillna("missing")
    comp["sex"] = comp["sex"].fillna("missing")
    known = comp["width"].notna()
    comp["image size"] = np.where(
        known,
        comp["width"].fillna(0).astype(int).astype(str)
        + "×"
        + comp["height"].fillna(0).astype(int).astype(str),
        "missing",
    )
    frames = {"source": table, **{t: comp for t in titles[1:]}}
    checked = 0
    for result in tables:
        title = result.columns[0]
        rows = frames[title]
        column = rows[title] if title in rows.columns else rows["source"]
        assert set(result[title]) == set(column)
        for _, row in result.iterrows():
            part = rows[column == row[title]]
            assert row["n"] == len(part) and row["positives"] == part["target"].sum()
            for name, oof in oofs.items():
                pred = oof.set_index("image_name").loc[part["image_name"], "pred"]
                if part["target"].nunique() < 2:
                    assert row[name] == NO_AUC
                else:
                    assert row[name] == f"{roc_auc_score(part['target'], pred):.4f}"
                    checked += 1
    assert checked > 20
    ages = tables[3]
    assert list(ages["age band"]) == ["<30", "30-44", "45-59", "60-74", "75+", "missing"]
    assert (ages.loc[ages["age band"] == "75+", ["m0", "m1"]] == NO_AUC).all(axis=None)
    assert tables[2]["sex"].iloc[-1] == "missing"


def test_report_shows_the_tables_only_with_folds_and_refuses_unknown_images(tmp_path, capsys):
    table = folds_table()
    folds_csv = tmp_path / "folds.csv"
    table.drop(columns=["width", "height"]).to_csv(folds_csv, index=False)
    dirs = write_dirs(tmp_path, table)
    out = tmp_path / "cv.md"
    base = ["report", "--preds", *map(str, dirs), "--out", str(out)]
    assert cli.main(base) == 0
    assert "## Where a model fails" not in out.read_text()
    assert cli.main([*base, "--folds", str(folds_csv)]) == 0
    text = out.read_text()
    assert "## Where a model fails" in text and "| age band | n | positives | m0 | m1 |" in text
    assert "| image size |" not in text  # no width/height columns: no size table

    table.iloc[:-1].to_csv(folds_csv, index=False)
    capsys.readouterr()
    assert cli.main([*base, "--folds", str(folds_csv)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lacks 1 image(s)" in err and "ISIC_0000239" in err


def test_rows_not_shared_by_every_model_are_left_out(tmp_path):
    table = folds_table()
    folds_csv = tmp_path / "folds.csv"
    table.to_csv(folds_csv, index=False)
    dirs = write_dirs(tmp_path, table)
    short = read_oof(dirs[1]).iloc[10:]
    write_pred_dir(dirs[1], short, None)
    tables, n_rows = subgroup_tables({d.name: read_oof(d) for d in dirs}, folds_csv)
    assert n_rows == 230
    assert tables[0]["n"].sum() == 230


def test_a_non_numeric_age_is_refused_naming_file_and_line(tmp_path):
    table = folds_table()
    table["age_approx"] = table["age_approx"].astype(object)
    table.loc[4, "age_approx"] = "forty"
    folds_csv = tmp_path / "folds.csv"
    table.to_csv(folds_csv, index=False)
    dirs = write_dirs(tmp_path, table)
    with pytest.raises(ValueError, match=r"folds.csv.*age_approx.*line 6"):
        subgroup_tables({d.name: read_oof(d) for d in dirs}, folds_csv)
