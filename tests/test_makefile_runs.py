"""Variants of one experiment side by side (RUN, NO_EXTERNAL, SETS_<stem>), read with `make -n`."""

from pathlib import Path

from helpers import make_dry_run, make_workdir


def _work(tmp_path: Path) -> Path:
    inputs = ["data/demo/train.csv", "data/demo/test.csv", "data/demo/sample_submission.csv"]
    make_workdir(tmp_path, "demo", inputs)
    (tmp_path / "data/demo/external/isic2019").mkdir(parents=True)
    return tmp_path


def _dry(work: Path, *args: str) -> list[str]:
    return make_dry_run(work, "pipeline", "EXP=demo", *args, flags=["-B"]).splitlines()


def _commands(lines: list[str], stage: str) -> list[str]:
    return [ln for ln in lines if f"-m deepauc {stage} " in ln]


def test_a_run_names_every_output_and_shares_the_data_and_image_cache(tmp_path):
    lines = _dry(_work(tmp_path), "RUN=demo_b")
    text = "\n".join(ln for ln in lines if "deepauc stamp" not in ln)
    for stage in ["train", "predict"]:
        for ln in _commands(lines, stage):
            stem = "aucm_lite0_64" if "aucm" in ln else "ce_lite0_64"
            assert f"--set name=demo_b_{stem} " in ln + " "
            assert "--set data.train_csv=folds/demo_b.csv" in ln
            assert "--set data.cache_dir=data/cache/demo " in ln
    for ln in _commands(lines, "train"):
        if "aucm" in ln:
            assert "--set model.init_from=models/demo_b_ce_lite0_64" in ln
    assert "--out data/interim/demo_b_train.csv --report reports/external_demo_b.md" in text
    assert "--set name=demo_b_meta_mlp" in text and "--set name=demo_b_ensemble" in text
    assert "--set out=submissions/demo_b.csv" in text and "--out reports/cv_demo_b.md" in text
    assert "--compare preds/demo_b_ce_lite0_64 preds/demo_b_aucm_lite0_64" in text
    # nothing of the experiment's own run is written or read, but its data and cache
    for own in ["folds/demo.csv", "preds/demo_ce", "models/demo_ce", "submissions/demo.csv"]:
        assert own not in text
    stamps = [ln for ln in lines if "deepauc stamp" in ln]
    assert stamps and all("--stamp stamps/demo_b/cnn" in ln for ln in stamps)
    assert "stamps/demo/" not in "\n".join(stamps)


def test_without_a_run_the_commands_name_nothing_new(tmp_path):
    lines = _dry(_work(tmp_path))
    assert not any("--set name=" in ln for ln in _commands(lines, "train"))
    assert not any("--set name=" in ln for ln in _commands(lines, "meta"))
    assert not any("NO_EXTERNAL" in ln or "SETS_" in ln for ln in lines)


def test_no_external_drops_every_external_folder_and_is_stamped(tmp_path):
    work = _work(tmp_path)
    with_ext = "\n".join(_dry(work, "RUN=demo_e"))
    assert "--isic2019-dir data/demo/external/isic2019" in with_ext
    lines = _dry(work, "RUN=demo_n", "NO_EXTERNAL=1")
    text = "\n".join(lines)
    assert "-dir data/demo/external" not in text
    assert "--out data/interim/demo_n_train.csv" in text
    stamps = [ln for ln in lines if "deepauc stamp" in ln]
    assert stamps and all("--var NO_EXTERNAL=1" in ln for ln in stamps)


def test_one_models_overrides_reach_only_its_commands_and_its_stamp(tmp_path):
    lines = _dry(_work(tmp_path), "RUN=demo_m1", "SETS_aucm_lite0_64=--set loss.margin=1.0")
    runs = _commands(lines, "train") + _commands(lines, "predict")
    aucm = [ln for ln in runs if "aucm_lite0_64.yaml" in ln]
    ce = [ln for ln in runs if "ce_lite0_64.yaml" in ln and "aucm" not in ln]
    assert len(aucm) == 4 and len(ce) == 4  # 3 folds and the prediction, each
    assert all("--set loss.margin=1.0" in ln for ln in aucm)
    assert not any("loss.margin" in ln for ln in ce)
    stamps = [ln for ln in lines if "deepauc stamp" in ln]
    assert all("--var 'SETS_aucm_lite0_64=--set loss.margin=1.0'" in ln for ln in stamps)
