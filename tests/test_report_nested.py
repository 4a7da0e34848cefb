"""The report beside a greedy ensemble's row: its nested (held-out fold) estimate when the
ensemble recorded one, the caveat that its weights were chosen on these OOF rows when not."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from deepauc import cli
from deepauc.pipeline.pred_files import read_oof, write_pred_dir
from deepauc.pipeline.report import NESTED, write_report

N = 120
CAVEAT = "weights chosen on these OOF rows"


def members(root, recorded: bool) -> list[str]:
    """Three prediction dirs over one set of OOF rows, with or without provenance records."""
    rng = np.random.default_rng(3)
    target = (rng.random(N) < 0.3).astype(int)
    target[:2] = [0, 1]
    dirs = []
    for i, noise in enumerate((0.8, 1.2, 2.0)):
        oof = pd.DataFrame(
            {
                "image_name": [f"ISIC_{k:04d}" for k in range(N)],
                "fold": np.arange(N) % 3,
                "source": "competition",
                "target": target,
                "pred": 1 / (1 + np.exp(-(1.5 * target + noise * rng.normal(size=N)))),
            }
        )
        test = pd.DataFrame({"image_name": [f"ISIC_t{k}" for k in range(4)], "pred": 0.5})
        d = root / "preds" / f"m{i}"
        write_pred_dir(d, oof, test, provenance={"folds": "0" * 16} if recorded else None)
        dirs.append(str(d))
    pd.DataFrame({"image_name": [f"ISIC_t{k}" for k in range(4)], "target": 0}).to_csv(
        root / "sample.csv", index=False
    )
    return dirs


def ensemble(root, dirs, selection: str) -> str:
    out = root / "preds" / f"ens_{selection}"
    cfg = {
        "name": f"ens_{selection}",
        "members": dirs,
        "method": "rank",
        "selection": selection,
        "sample_submission": str(root / "sample.csv"),
        "out": str(root / "submissions" / f"{selection}.csv"),
        "oof_out": str(out),
    }
    path = root / f"{selection}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli.main(["ensemble", "--config", str(path)]) == 0
    return str(out)


def row_of(text: str, name: str) -> dict[str, str]:
    """The report table's row of model ``name``, cell by column."""
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == name:
            return dict(zip(header, cells))
    raise AssertionError(f"no row {name}")


def caveat_of(text: str, name: str) -> str:
    """The line of the weight caveats (the list below their heading) that names ``name``."""
    section = text.split("Weights chosen on the scored rows:\n")[1].split("\n\n")[0]
    (line,) = [ln for ln in section.splitlines() if ln.startswith(f"- `{name}`:")]
    return line


def test_a_recorded_nested_estimate_stands_beside_the_ensemble_row(tmp_path, capsys):
    dirs = members(tmp_path, recorded=True)
    greedy = ensemble(tmp_path, dirs, "greedy")
    nested = json.loads((tmp_path / greedy / "provenance.json").read_text())["ensemble"][
        "nested_auc"
    ]
    oof = read_oof(greedy)
    in_sample = roc_auc_score(oof["target"], oof["pred"])
    assert f"{nested:.4f}" != f"{in_sample:.4f}"  # the two numbers can be told apart

    out = tmp_path / "cv.md"
    summary = write_report([dirs[0], greedy], out)
    text = out.read_text()
    row = row_of(text, "ens_greedy")
    assert row["OOF"] == f"{in_sample:.4f}" and row[NESTED] == f"{nested:.4f}"
    assert row_of(text, "m0")[NESTED] == ""  # nothing was chosen on m0's rows
    assert list(summary.columns).index(NESTED) == list(summary.columns).index("OOF") + 1
    line = caveat_of(text, "ens_greedy")
    assert f"the nested estimate (members chosen on the other folds) is {nested:.4f}" in line
    assert CAVEAT not in line
    assert f"`{NESTED}`:" in text  # the column is explained


def test_without_a_recorded_estimate_the_row_says_its_weights_were_chosen_here(tmp_path):
    dirs = members(tmp_path, recorded=False)
    greedy = ensemble(tmp_path, dirs, "greedy")
    assert not (tmp_path / greedy / "provenance.json").exists()
    assert "## Greedy selection" in (tmp_path / greedy / "ensemble.md").read_text()

    out = tmp_path / "cv.md"
    write_report([dirs[0], greedy], out)
    text = out.read_text()
    assert row_of(text, "ens_greedy")[NESTED] == ""
    line = caveat_of(text, "ens_greedy")
    assert CAVEAT in line and "no nested estimate is recorded" in line


@pytest.mark.parametrize("recorded", [True, False])
def test_a_fixed_ensemble_gets_no_nested_column_nor_caveat(tmp_path, recorded):
    dirs = members(tmp_path, recorded=recorded)
    fixed = ensemble(tmp_path, dirs, "fixed")
    out = tmp_path / "cv.md"
    summary = write_report([dirs[0], fixed], out)
    text = out.read_text()
    assert NESTED not in summary.columns and NESTED not in text
    assert "Weights chosen on the scored rows" not in text and "optimistic" not in text
