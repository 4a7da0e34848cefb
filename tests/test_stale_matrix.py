"""`make smoke` after each input or variable changes in turn: every output it rebuilds must come
from the new inputs, or make stops with one error line; never exit 0 with a stale output."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = (
    "--n-train 120 --n-patients 40 --n-test 20 --n-test-patients 6 --malignant-ratio 0.1 "
    "--n-isic2019 10 --n-isic2018 4 --n-isic2017 4 --n-malignant 4 --image-size 32 --workers 1"
)
MODELS = "models/smoke_*/fold*/model.pt"
SUBMISSION = "submissions/smoke.csv"
FOLDS = "folds/smoke.csv"


def make(work: Path, data: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = ["make", "--no-print-directory", "-C", str(work), f"PY={sys.executable}"]
    cmd += ["smoke", f"DATA={data}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def demo_data(out: Path, seed: int) -> None:
    cmd = [sys.executable, "-m", "deepauc", "demo-data", "--out", str(out), "--seed", str(seed)]
    subprocess.run([*cmd, *DEMO.split()], check=True, capture_output=True, timeout=300)


def digests(work: Path, patterns: list[str]) -> dict[str, str]:
    return {
        str(p.relative_to(work)): hashlib.sha256(p.read_bytes()).hexdigest()
        for pattern in patterns
        for p in sorted(work.glob(pattern))
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One smoke pipeline on data outside the work folder, ISIC 2018 held back."""
    root = tmp_path_factory.mktemp("matrix")
    work = root / "work"
    work.mkdir()
    shutil.copy(REPO / "Makefile", work / "Makefile")
    shutil.copytree(REPO / "configs", work / "configs")
    data = root / "data"
    demo_data(data, 0)
    shutil.move(data / "external" / "isic2018", root / "isic2018")
    proc = make(work, data)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, work, data


def competition_image(work: Path) -> str:
    """A competition image the smoke subset trains on."""
    folds = pd.read_csv(work / FOLDS, dtype={"image_name": str})
    return str(folds.query("source == 'competition' and fold >= 0")["image_name"].iloc[0])


def fix_label(root: Path, work: Path, data: Path) -> list[str]:
    name = competition_image(work)
    table = pd.read_csv(data / "train.csv", dtype=str, keep_default_na=False)
    row = table["image_name"] == name
    target = 1 - int(table.loc[row, "target"].iloc[0])
    table.loc[row, "target"] = str(target)
    table.loc[row, "benign_malignant"] = "malignant" if target else "benign"
    table.loc[row, "diagnosis"] = "melanoma" if target else "nevus"
    table.to_csv(data / "train.csv", index=False)
    return []


def replace_image(root: Path, work: Path, data: Path) -> list[str]:
    name = competition_image(work)
    target = data / "jpeg" / "train" / f"{name}.jpg"
    other = next(p for p in sorted(target.parent.glob("*.jpg")) if p != target)
    shutil.copy(target, root / "reference.jpg")  # keeps the old times for `touch -r`
    shutil.copyfile(other, target)
    subprocess.run(["touch", "-r", str(root / "reference.jpg"), str(target)], check=True)
    return [f"data/cache/smoke/32/{name}.jpg"]


def add_external(root: Path, work: Path, data: Path) -> list[str]:
    shutil.copytree(root / "isic2018", data / "external" / "isic2018")
    return ["data/interim/smoke_merged_train.csv"]


def other_data(root: Path, work: Path, data: Path) -> list[str]:
    demo_data(root / "other", 5)
    return []


def reversed_sample(root: Path, work: Path, data: Path) -> list[str]:
    sample = pd.read_csv(data / "sample_submission.csv", dtype=str)
    sample.iloc[::-1].to_csv(root / "sample_reversed.csv", index=False)
    return []


def rotated_test_images(root: Path, work: Path, data: Path) -> list[str]:
    src = sorted((data / "jpeg" / "test").glob("*.jpg"))
    out = root / "test_rotated"
    out.mkdir(exist_ok=True)
    for a, b in zip(src, src[1:] + src[:1]):  # every name now holds another image
        shutil.copyfile(b, out / a.name)
    return []


# (case, make variables, change to the inputs, outputs that must change if make exits 0)
CASES = [
    ("SEED", ["SEED=7"], None, [FOLDS, MODELS]),
    ("EXTRA_SETS", ["EXTRA_SETS=--set train.seed=3"], None, [MODELS]),
    ("EXTRA_META_SETS", ["EXTRA_META_SETS=--set epochs=2"], None, ["preds/smoke_meta_mlp/oof.csv"]),
    ("MEMBERS", ["MEMBERS=preds/smoke_ce_lite0_32+meta"], None, [SUBMISSION]),
    ("MODELS", ["MODELS=ce_lite0_32"], None, [SUBMISSION]),
    ("SAMPLE", ["SAMPLE={root}/sample_reversed.csv"], reversed_sample, [SUBMISSION]),
    ("TEST_IMAGES", ["TEST_IMAGES={root}/test_rotated"], rotated_test_images, [SUBMISSION]),
    ("DATA", ["DATA={root}/other"], other_data, [FOLDS, MODELS, SUBMISSION]),
    ("label fixed", [], fix_label, [FOLDS, MODELS]),
    ("image replaced, touch -r", [], replace_image, [MODELS]),
    ("external folder added", [], add_external, [FOLDS, MODELS]),
]


@pytest.mark.parametrize(
    ("case", "variables", "change", "affected"), CASES, ids=[c[0] for c in CASES]
)
def test_a_change_is_redone_or_refused(built, tmp_path, case, variables, change, affected):
    root, base, data = built
    work = tmp_path / "work"
    shutil.copytree(base, work, symlinks=True)  # copy2: make sees the same file times
    saved = {p: p.read_bytes() for p in [data / "train.csv", *(data / "jpeg" / "train").glob("*")]}
    times = {p: p.stat() for p in saved}
    try:
        extra = change(root, work, data) if change else []
        patterns = [*affected, *extra]
        before = digests(work, patterns)
        assert before, patterns
        args = [v.format(root=root) for v in variables]
        if any(a.startswith("DATA=") for a in args):
            data_arg = Path(
                args.pop(next(i for i, a in enumerate(args) if a.startswith("DATA=")))[5:]
            )
        else:
            data_arg = data
        proc = make(work, data_arg, *args)
    finally:
        for p, content in saved.items():
            if p.read_bytes() != content:
                p.write_bytes(content)
                os.utime(p, ns=(times[p].st_atime_ns, times[p].st_mtime_ns))
        shutil.rmtree(data / "external" / "isic2018", ignore_errors=True)
    if proc.returncode != 0:
        errors = [ln for ln in proc.stderr.splitlines() if ": error: " in ln]
        assert len(errors) == 1, proc.stderr[-3000:]
        assert "delete" in errors[0] or "rerun" in errors[0], errors[0]
        return
    after = digests(work, patterns)
    stale = sorted(p for p, h in before.items() if after.get(p) == h)
    assert not stale, f"{case}: make exited 0 but left {stale} as they were\n{proc.stdout[-2000:]}"
