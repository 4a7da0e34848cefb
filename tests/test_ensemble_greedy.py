"""deepauc ensemble with selection: greedy (the no-TTA dirs among the candidates) and the
submission log every run appends to, end to end through the CLI."""

import csv
import hashlib
import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from deepauc import cli
from deepauc.pipeline.pred_files import read_oof, read_test, write_pred_dir

N, N_TEST = 150, 6


def write_member(root, name, oof_pred, test_pred, order):
    names = [f"ISIC_{i:03d}" for i in range(N)]
    rng = np.random.default_rng(99)
    target = (rng.random(N) < 0.35).astype(int)
    oof = pd.DataFrame(
        {
            "image_name": names,
            "fold": np.arange(N) % 3,
            "source": ["competition"] * (N - 6) + ["isic2019"] * 6,
            "target": target,
            "pred": oof_pred(target),
        }
    )
    test = pd.DataFrame({"image_name": [f"ISIC_t{i}" for i in range(N_TEST)], "pred": test_pred})
    write_pred_dir(root / name, oof.iloc[order], test, provenance={"folds": "0" * 16})


@pytest.fixture
def family(tmp_path):
    """preds/ with x (8-view TTA that blurs the signal), x-notta (the signal), x+meta, y+meta."""
    rng = np.random.default_rng(5)
    noise = {k: rng.normal(0, 1, N) for k in ("x", "tta", "meta", "y")}
    preds = tmp_path / "preds"

    def sig(z):
        return 1 / (1 + np.exp(-z))

    dirs = {
        "x-notta": lambda t: sig(2 * t + 0.8 * noise["x"]),
        "x": lambda t: sig(2 * t + 0.8 * noise["x"] + 2.5 * noise["tta"]),
        "x+meta": lambda t: sig(2 * t + 0.8 * noise["x"] + 2.5 * noise["tta"] + noise["meta"]),
        "y+meta": lambda t: sig(2 * t + 1.0 * noise["y"]),
    }
    for i, (name, pred) in enumerate(dirs.items()):
        order = list(np.random.default_rng(i).permutation(N))  # each stored in its own order
        write_member(preds, name, pred, rng.random(N_TEST), order)
    sample = pd.DataFrame({"image_name": [f"ISIC_t{i}" for i in range(N_TEST)][::-1]})
    sample.assign(target=0).to_csv(tmp_path / "sample.csv", index=False)
    return tmp_path


def config(root, **keys):
    cfg = {
        "name": "ens",
        "members": [str(root / "preds" / "x+meta"), str(root / "preds" / "y+meta")],
        "method": "rank",
        "sample_submission": str(root / "sample.csv"),
        "out": str(root / "submissions" / "ens.csv"),
        "oof_out": str(root / "preds" / "ens"),
        **keys,
    }
    path = root / "ensemble.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def log_rows(root):
    with open(root / "submissions" / "log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def scaled_ranks(x):
    return (rankdata(x) - 1) / (len(x) - 1)


def test_greedy_chooses_the_no_tta_dir_on_oof(family, capsys):
    root = family
    path = config(root, selection="greedy", candidates="all")
    assert cli.main(["ensemble", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    (row,) = log_rows(root)
    members, weights = row["members"].split(";"), [float(w) for w in row["weights"].split(";")]
    names = [m.rsplit("/", 1)[1] for m in members]
    # the TTA dir blurs the signal the no-TTA dir holds: OOF chooses no-TTA, never TTA
    assert "x-notta" in names and "x" not in names
    assert "y+meta" in names  # another model's independent errors: averaging gains
    assert sum(weights) == pytest.approx(1.0)

    # the written OOF and submission are the weighted rank means of the chosen dirs
    ens = read_oof(root / "preds" / "ens").set_index("image_name")
    expect = sum(
        w * pd.Series(scaled_ranks(o["pred"]), index=o["image_name"])
        for w, o in zip(weights, map(read_oof, members))
    )
    np.testing.assert_allclose(ens["pred"], expect.loc[ens.index], atol=1e-6)
    sub = pd.read_csv(root / "submissions" / "ens.csv").set_index("image_name")["target"]
    expect = sum(
        w * pd.Series(scaled_ranks(t["pred"]), index=t["image_name"])
        for w, t in zip(weights, map(read_test, members))
    )
    np.testing.assert_allclose(sub, expect.loc[sub.index], atol=1e-6)

    comp = ens[ens["source"] == "competition"]
    assert float(row["oof_auc"]) == pytest.approx(
        roc_auc_score(comp["target"], comp["pred"]), abs=1e-6
    )
    assert row["selection"] == "greedy" and row["nested_auc"] and row["lb_score"] == ""
    record = json.loads((root / "preds" / "ens" / "provenance.json").read_text())
    assert record["inputs"] == members
    assert record["ensemble"]["candidates"] == [
        str(root / "preds" / d) for d in ("x+meta", "y+meta", "x", "x-notta")
    ]
    assert float(row["nested_auc"]) == pytest.approx(record["ensemble"]["nested_auc"], abs=1e-6)
    md = (root / "preds" / "ens" / "ensemble.md").read_text()
    assert "## Greedy selection" in md and f"**{float(row['nested_auc']):.4f}**" in md
    # the AUC after the last step is the written ensemble's
    path = md.split("## Greedy selection")[1].split("In-sample")[0]
    steps = [line for line in path.splitlines() if re.match(r"\| \d+ \| ", line)]
    assert steps and steps[-1].endswith(f"| {float(row['oof_auc']):.4f} |")
    assert "x-notta" in out and "logged" in out


def test_greedy_among_the_members_only_or_a_list(family):
    root = family
    path = config(root, selection="greedy")
    assert cli.main(["ensemble", "--config", str(path)]) == 0
    record = json.loads((root / "preds" / "ens" / "provenance.json").read_text())
    assert [p.rsplit("/", 1)[1] for p in record["ensemble"]["candidates"]] == ["x+meta", "y+meta"]
    path = config(root, selection="greedy", candidates=[str(root / "preds" / "x-notta")])
    assert cli.main(["ensemble", "--config", str(path)]) == 0
    record = json.loads((root / "preds" / "ens" / "provenance.json").read_text())
    assert [p.rsplit("/", 1)[1] for p in record["ensemble"]["candidates"]] == [
        "x+meta",
        "y+meta",
        "x-notta",
    ]
    # two different submissions, two rows
    assert len(log_rows(root)) == 2


def test_every_submission_is_logged_once(family, capsys):
    root = family
    path = config(root)
    assert cli.main(["ensemble", "--config", str(path)]) == 0
    sub = root / "submissions" / "ens.csv"
    (row,) = log_rows(root)
    assert row["sha256"] == hashlib.sha256(sub.read_bytes()).hexdigest()
    assert row["submission"] == str(sub) and row["config"] == str(path)
    assert row["name"] == "ens" and row["method"] == "rank" and row["selection"] == "fixed"
    assert row["weights"] == "0.5;0.5" and row["nested_auc"] == ""
    ens = read_oof(root / "preds" / "ens")
    comp = ens[ens["source"] == "competition"]
    assert float(row["oof_auc"]) == pytest.approx(
        roc_auc_score(comp["target"], comp["pred"]), abs=1e-6
    )
    capsys.readouterr()

    before = (root / "submissions" / "log.csv").read_bytes()
    assert cli.main(["ensemble", "--config", str(path)]) == 0
    assert "already logged at line 2" in capsys.readouterr().out
    assert (root / "submissions" / "log.csv").read_bytes() == before

    path = config(root, weights=[3, 1])
    assert cli.main(["ensemble", "--config", str(path)]) == 0
    assert [r["weights"] for r in log_rows(root)] == ["0.5;0.5", "0.75;0.25"]
    assert (root / "submissions" / "log.csv").read_bytes().startswith(before)


def test_malformed_log_stops_the_run_before_it_writes(family, capsys):
    root = family
    log = root / "submissions" / "log.csv"
    log.parent.mkdir()
    log.write_text("time_utc,submission\n")
    assert cli.main(["ensemble", "--config", str(config(root))]) == 1
    err = capsys.readouterr().err.strip()
    assert f"{log}: line 1: the header must be" in err and "\n" not in err
    assert not (root / "submissions" / "ens.csv").exists()
    assert not (root / "preds" / "ens").exists()
