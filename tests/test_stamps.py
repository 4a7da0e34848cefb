"""Stamps (deepauc.pipeline.stamps) and the Makefile's use of them, read with `make -t`/`make -n`
on placeholder data: each variable or input changed in turn reruns the stages that read it."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepauc import cli
from deepauc.pipeline.stamps import check, compose, update

REPO = Path(__file__).resolve().parents[1]


def stamp(out: Path, *args: str) -> list[str]:
    variables = [a[6:] for a in args if a.startswith("--var=")]
    paths = [a[7:] for a in args if a.startswith("--path=")]
    return update(out, compose(variables, paths, []))


def test_stamp_is_rewritten_only_when_its_content_changes(tmp_path):
    out = tmp_path / "s"
    assert stamp(out, "--var=SEED=42") == ["first run"]
    first = out.stat().st_mtime_ns
    time.sleep(0.01)
    assert stamp(out, "--var=SEED=42") == []
    assert out.stat().st_mtime_ns == first
    assert stamp(out, "--var=SEED=7") == ["SEED (42 -> 7)"]
    assert "SEED: 7" in out.read_text()


def test_a_replaced_file_with_its_old_mtime_changes_the_stamp(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    image = data / "a.jpg"
    image.write_bytes(b"AAAA")
    stamp(tmp_path / "s", f"--path=DATA={data}")
    st = image.stat()
    time.sleep(0.01)
    image.write_bytes(b"BBBB")  # same size
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))  # what `touch -r` does
    assert image.stat().st_mtime_ns == st.st_mtime_ns
    changed = stamp(tmp_path / "s", f"--path=DATA={data}")
    assert len(changed) == 1 and changed[0].startswith("DATA (its files changed")


def test_excluded_files_and_relative_spellings_do_not_change_the_stamp(tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "test").mkdir(parents=True)
    (data / "train.csv").write_text("x\n")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "s"
    update(out, compose([], ["DATA=data"], ["data/test"]))
    (data / "test" / "b.jpg").write_bytes(b"new")
    assert update(out, compose([], ["DATA=./data/"], ["./data/test"])) == []


def test_check_refuses_an_output_older_than_its_stamps_or_inputs(tmp_path):
    data = tmp_path / "sample.csv"
    data.write_text("image_name,target\nA,0\n")
    out = tmp_path / "s"
    stamp(out, f"--path=SAMPLE={data}")
    sub = tmp_path / "sub.csv"
    sub.write_text("x")
    check(sub, [out])
    time.sleep(0.01)
    data.write_text("image_name,target\nB,0\n")
    with pytest.raises(ValueError, match="SAMPLE changed since it was made"):
        check(sub, [out])
    stamp(out, f"--path=SAMPLE={data}")
    with pytest.raises(ValueError, match="older than"):
        check(sub, [out])
    assert cli.main(["stamp", "--check", str(sub), str(out)]) == 1


# ------------------------------------------------------------------------- the Makefile


def dry(work: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = ["make", "--no-print-directory", "-C", str(work), f"PY={sys.executable}"]
    base = ["pipeline", "EXP=smoke", "N_FOLDS=2", "DATA=data/demo"]
    return subprocess.run([*cmd, *base, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def touched(tmp_path_factory):
    """The Makefile and placeholder data, every output marked up to date with `make -t`."""
    work = tmp_path_factory.mktemp("stamps")
    shutil.copy(REPO / "Makefile", work / "Makefile")
    shutil.copytree(REPO / "configs", work / "configs")
    demo = work / "data" / "demo"
    for name in ["train.csv", "test.csv", "sample_submission.csv", "jpeg/train/A.jpg",
                 "jpeg/test/T.jpg", "external/isic2019/x.csv"]:  # fmt: skip
        (demo / name).parent.mkdir(parents=True, exist_ok=True)
        (demo / name).write_text(name)
    folders = ["data/interim/smoke", "folds", "data/cache/smoke/32", "submissions", "reports"]
    folders += [
        f"models/smoke_{m}/fold{k}" for m in ("ce_lite0_32", "aucm_lite0_32") for k in (0, 1)
    ]
    folders += [f"preds/smoke_{p}" for p in ("ce_lite0_32", "aucm_lite0_32", "meta_mlp")]
    folders += [f"preds/smoke_{p}_lite0_32+meta" for p in ("ce", "aucm")]
    for folder in folders:  # `make -t` creates files, not folders
        (work / folder).mkdir(parents=True)
    for name in ["test.csv", "sample_submission.csv"]:  # written with the subset's table
        (work / "data/interim/smoke" / name).write_text(name)
    (work / "spare").mkdir()
    (work / "spare" / "T.jpg").write_text("other")
    (work / "spare" / "sample.csv").write_text("other")
    proc = dry(work, "-t")
    assert proc.returncode == 0, proc.stderr
    assert "deepauc" not in dry(work, "-n").stdout
    return work


def replace_image(work: Path) -> None:
    image = work / "data/demo/jpeg/train/A.jpg"
    st = image.stat()
    image.write_text("B.jpg/train/jpeg")  # same size, new content
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))


# (variable or input changed, first stages that must run, stages that must not)
MAKE_CASES = [
    (["SEED=7"], None, [" folds ", "deepauc.data.subset"], []),
    (["EXTRA_SETS=--set train.seed=3"], None, [" train ", " predict "], [" folds ", " meta "]),
    (["EXTRA_META_SETS=--set epochs=2"], None, [" meta "], [" train ", " folds "]),
    (["MEMBERS=preds/smoke_ce_lite0_32+meta"], None, [" ensemble "], [" meta ", " train "]),
    (["MODELS=ce_lite0_32"], None, [" ensemble "], [" train "]),
    (["SAMPLE=spare/sample.csv"], None, ["deepauc.data.subset", " ensemble "], []),
    (["TEST_IMAGES=spare"], None, [" resize --csv data/interim/smoke/test.csv"], [" folds "]),
    (["DATA=data/demo/."], None, [], [" external ", " train "]),  # the same root spelt otherwise
    ([], lambda w: (w / "data/demo/train.csv").write_text("train.csv fixed"), [" external "], []),
    ([], replace_image, [" external ", " folds ", " resize "], []),
    ([], lambda w: (w / "data/demo/external/isic2018").mkdir(), [" external "], []),
]


@pytest.mark.parametrize(("variables", "change", "runs", "skips"), MAKE_CASES)
def test_each_change_reruns_the_stages_that_read_it(
    touched, tmp_path, variables, change, runs, skips
):
    work = tmp_path / "work"
    shutil.copytree(touched, work, symlinks=True)
    # the copy has new absolute paths and ctimes: mark it up to date again first
    assert dry(work, "-t").returncode == 0
    if change:
        change(work)
    proc = dry(work, "-n", *variables)
    assert proc.returncode == 0, proc.stderr
    for stage in runs:
        assert stage in proc.stdout, (stage, proc.stdout)
    for stage in skips:
        assert stage not in proc.stdout, (stage, proc.stdout)


def test_make_submit_needs_no_data_variables_and_refuses_changed_inputs(touched, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(touched, work, symlinks=True)
    assert dry(work, "-t").returncode == 0
    csv = "image_name,target\nT,0.5\n"
    (work / "data/interim/smoke/sample_submission.csv").write_text(csv)
    (work / "submissions/smoke.csv").write_text(csv)
    submit = [
        "make",
        "--no-print-directory",
        "-C",
        str(work),
        f"PY={sys.executable}",
        "KAGGLE=echo",
    ]
    proc = subprocess.run(
        [*submit, "submit", "EXP=smoke"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "submissions/smoke.csv: valid (1 rows" in proc.stdout
    assert (
        "competitions submit -c siim-isic-melanoma-classification -f submissions/smoke.csv"
        in proc.stdout
    )
    (work / "data/demo/test.csv").write_text("test.csv, edited")
    proc = subprocess.run(
        [*submit, "submit", "EXP=smoke"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert "submissions/smoke.csv: TEST_TABLE changed since it was made" in proc.stderr
    assert "competitions submit" not in proc.stdout
