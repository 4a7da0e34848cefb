"""The Makefile's report rule, read with `make -n` (nothing runs): each `stage2:stage1` model of
MODELS is compared with its stage 1, stage 1 first, when that stage 1 is a model too."""

from pathlib import Path

from helpers import make_dry_run, make_workdir


def report_line(work: Path, *args: str) -> str:
    stdout = make_dry_run(work, "EXP=demo", *args, "reports/cv_demo.md", timeout=120)
    text = stdout.replace("\\\n", " ")
    lines = [ln for ln in text.splitlines() if " report " in ln]
    assert len(lines) == 1, lines
    return " ".join(lines[0].split())


def test_report_rule_compares_each_stage_two_model_with_its_stage_one(tmp_path):
    make_workdir(tmp_path, configs="demo")

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
