"""The Makefile's report rule, read with `make -n` (nothing runs): each `stage2:stage1` model of
MODELS is compared with its stage 1, stage 1 first, when that stage 1 is a model too."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def report_line(work: Path, *args: str) -> str:
    cmd = ["make", "-n", "--no-print-directory", "-C", str(work), f"PY={sys.executable}"]
    proc = subprocess.run(
        [*cmd, "EXP=demo", *args, "reports/cv_demo.md"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.replace("\\\n", " ")
    lines = [ln for ln in text.splitlines() if " report " in ln]
    assert len(lines) == 1, lines
    return " ".join(lines[0].split())


def test_report_rule_compares_each_stage_two_model_with_its_stage_one(tmp_path):
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    shutil.copytree(REPO / "configs" / "demo", tmp_path / "configs" / "demo")
    for name in ["data/demo/train.csv", "data/demo/test.csv", "data/interim/demo_train.csv"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("image_name\n")

    line = report_line(tmp_path)
    pair = "--compare preds/demo_ce_lite0_64 preds/demo_aucm_lite0_64"
    assert line.endswith(pair) and line.count("--compare") == 1

    # x2's stage 1 is no model of the set: nothing to compare it with
    for stem in ("ce_x", "aucm_x", "aucm_y", "x2"):
        (tmp_path / "configs" / "demo" / f"{stem}.yaml").write_text("name: placeholder\n")
    for fold in range(3):  # the outside stage-1 run x2 starts from, trained elsewhere
        (tmp_path / f"models/demo_other/fold{fold}").mkdir(parents=True)
        (tmp_path / f"models/demo_other/fold{fold}/model.pt").write_text("")
    line = report_line(tmp_path, "MODELS=ce_x aucm_x:ce_x aucm_y:ce_x x2:other")
    assert "--compare preds/demo_ce_x preds/demo_aucm_x" in line
    assert "--compare preds/demo_ce_x preds/demo_aucm_y" in line
    assert line.count("--compare") == 2
