"""The Makefile's own rules, read with `make -n` on placeholder files (nothing runs)."""

import shutil
from pathlib import Path

from helpers import REPO, make_dry_run, make_workdir


def dry_run(work: Path, *args: str) -> list[str]:
    return make_dry_run(work, *args).splitlines()


def test_resize_decodes_each_table_once_for_every_size(tmp_path):
    make_workdir(tmp_path)
    targets = [
        f"data/cache/demo/{s}/index_{t}.csv" for s in (32, 64) for t in ("demo_train", "test")
    ]
    lines = [
        ln for ln in dry_run(tmp_path, "EXP=demo", "SIZES=32 64", *targets) if " resize " in ln
    ]
    assert len(lines) == 2, lines  # one call per table, not one per table and size
    for line in lines:
        assert "--size 32 --size 64" in line


def test_a_source_folder_per_size_and_the_card_switch_reach_the_commands(tmp_path):
    make_workdir(tmp_path)
    big = tmp_path / "r64"
    (big / "test").mkdir(parents=True)
    targets = [
        f"data/cache/demo/{s}/index_{t}.csv" for s in (32, 64) for t in ("demo_train", "test")
    ]
    args = ["EXP=demo", "SIZES=32 64", f"DATA_64={big}", "GPU_MEM=16"]
    lines = [ln for ln in dry_run(tmp_path, *args, *targets) if " resize " in ln]
    train, test = sorted(lines, key=lambda ln: "demo_train" not in ln)
    assert f"--image-root-for 64={big} " in train and "--image-root-for 32" not in train
    assert f"--image-root-for 64={big}/test " in test
    shutil.copytree(REPO / "configs" / "demo", tmp_path / "configs" / "demo")
    model = "models/demo_ce_lite0_64/fold0/model.pt"
    trains = [ln for ln in dry_run(tmp_path, *args, model) if " train " in ln]
    assert trains and all("--set train.gpu_memory_gb=16" in ln for ln in trains)


def test_fold_scheme_and_validated_external_rows_reach_the_folds_command(tmp_path):
    make_workdir(tmp_path)
    (tmp_path / "stamps/demo").mkdir(parents=True)
    (tmp_path / "stamps/demo/data").write_text("")

    def folds_line(*args):
        text = "\n".join(dry_run(tmp_path, "EXP=demo", *args, "folds/demo.csv"))
        lines = [ln for ln in text.replace("\\\n", " ").splitlines() if " folds " in ln]
        assert len(lines) == 1, lines
        return " ".join(lines[0].split())

    plain = folds_line()
    assert "--scheme" not in plain and "--include-external" not in plain
    line = folds_line("FOLD_SCHEME=tfrecord", "INCLUDE_EXTERNAL=1")
    assert line.endswith("--scheme tfrecord --include-external")
