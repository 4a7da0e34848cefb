"""The Kaggle route of docs/real-data.md: every documented `make` command run on a mock,
read-only `/kaggle/input` with the resized sets' layout, the platform's interpreter given
as `PY=` (no venv built), the `kaggle` experiment's configs, and the EDA notebook."""

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from deepauc.pipeline.experiment import load_experiment
from layout_fixtures import (
    write_kaggle2020,
    write_resized2019,
    write_resized2020,
    write_sample_submission,
)

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "real-data.md"
# generated competition rows beside the fixed ones, so that both smoke folds get a positive
N_EXTRA = 12
# saved activations per image with 16-bit autocast (docs: the users' hardware), GiB
ACTIVATIONS_GIB = {("tf_efficientnet_b3", 256): 0.13, ("tf_efficientnet_b5", 384): 0.46}


def documented_make_commands() -> list[list[str]]:
    """Every `make` line of the doc's bash blocks, split as the shell would."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.S)
    lines = [ln.split("  #")[0].strip() for block in blocks for ln in block.splitlines()]
    return [shlex.split(ln) for ln in lines if ln.startswith("make ")]


def _set_writable(root: Path, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~bits)


@pytest.fixture
def kaggle_input(tmp_path):
    """A read-only mock /kaggle/input: the competition folder (CSVs and sample submission),
    Deotte's resized 2020 set without a sample submission, the resized ISIC 2019 set; and a
    competition download as data/siim for the non-Kaggle commands."""
    root = tmp_path / "kaggle" / "input"
    write_resized2020(root / "jpeg-melanoma-384x384", N_EXTRA, sample_submission=False)
    write_resized2019(root / "jpeg-isic2019-384x384")
    write_sample_submission(root / "siim-isic-melanoma-classification" / "sample_submission.csv")
    siim = write_kaggle2020(tmp_path / "siim", n_extra=N_EXTRA)
    for folder in (root, siim):
        _set_writable(folder, False)
    yield root, siim
    for folder in (root, siim):
        _set_writable(folder, True)


def workdir(tmp_path: Path) -> Path:
    """The repository's Makefile and configs in a fresh folder, as a clone has them."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(REPO / "Makefile", work / "Makefile")
    shutil.copytree(REPO / "configs", work / "configs")
    return work


def run_make(work: Path, args: list[str], **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "DEEPAUC_PROGRESS": "0", "PYTHONPATH": str(REPO / "src"), **env}
    full_env.pop("PY", None)
    full_env.update(env)
    cmd = ["make", "--no-print-directory", "-C", str(work), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=full_env)


def localised(cmd: list[str], kaggle_root: Path, siim: Path) -> list[str]:
    """The documented command on this machine: the mock inputs, this interpreter."""
    out = []
    for arg in cmd[1:]:
        arg = arg.replace("/kaggle/input", str(kaggle_root)).replace("data/siim", str(siim))
        out.append(f"PY={sys.executable}" if arg == "PY=python" else arg)
    return out


def first_target(cmd: list[str]) -> str:
    return next(a for a in cmd[1:] if not a.startswith("-") and "=" not in a)


def test_the_doc_documents_the_runs():
    targets = [first_target(cmd) for cmd in documented_make_commands()]
    assert {"smoke", "pipeline", "all", "submit"} <= set(targets), targets


def test_documented_smoke_runs_on_a_read_only_kaggle_input(tmp_path, kaggle_input):
    kaggle_root, siim = kaggle_input
    work = workdir(tmp_path)
    smokes = [c for c in documented_make_commands() if first_target(c) == "smoke"]
    assert smokes
    for cmd in smokes:  # for real: every stage on the mock inputs
        proc = run_make(work, localised(cmd, kaggle_root, siim))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "submissions/smoke.csv: valid" in proc.stdout
        assert not (work / ".venv").exists()  # the platform's interpreter, no venv
    carry_over_to_a_new_session(tmp_path, work, localised(smokes[-1], kaggle_root, siim))


CARRIED = ["folds", "models", "preds", "data/interim", "stamps"]


def carry_over_to_a_new_session(tmp_path: Path, work: Path, args: list[str]) -> None:
    """docs/real-data.md's carry-over: a fresh checkout given the carried folders (not the
    resize cache) reruns the same line without training or scoring anything again."""
    (tmp_path / "next-session").mkdir()
    fresh = workdir(tmp_path / "next-session")
    for name in CARRIED:
        shutil.copytree(work / name, fresh / name, symlinks=True)
    models = {p.relative_to(work): p.read_bytes() for p in work.glob("models/*/fold*/model.pt")}
    assert models
    proc = run_make(fresh, args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    kept = set(re.findall(r"(models/\S+/model\.pt) exists: fold \d+ already trained", out))
    assert kept == {str(rel) for rel in models}, out[-3000:]
    for rel, data in models.items():
        assert (fresh / rel).read_bytes() == data  # not retrained
    reused = re.findall(r"(\d+) of (\d+) view blocks reused", out)
    assert reused and all(a == b for a, b in reused), out[-3000:]  # predict scored nothing
    submission = "submissions/smoke.csv"
    assert (fresh / submission).read_bytes() == (work / submission).read_bytes()


def test_documented_gpu_runs_resolve_on_a_read_only_kaggle_input(tmp_path, kaggle_input):
    """What each documented GPU run would run (make -n), every data path resolved."""
    kaggle_root, siim = kaggle_input
    work = workdir(tmp_path)
    runs = [c for c in documented_make_commands() if first_target(c) in ("all", "pipeline")]
    assert len(runs) >= 4
    for cmd in runs:
        args = localised(cmd, kaggle_root, siim)
        given = [] if any(a.startswith("PY=") for a in args) else [f"PY={sys.executable}"]
        proc = run_make(work, ["-n", *args, *given])
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert " train --config " in proc.stdout and " predict --config " in proc.stdout
        assert "-m venv" not in proc.stdout
    # the kaggle pipeline: its two models on both GPUs, its cache sizes, its sample
    kaggle = next(c for c in runs if "EXP=kaggle" in c)
    text = run_make(work, ["-n", *localised(kaggle, kaggle_root, siim)]).stdout
    assert "configs/kaggle/aucm_b5_384.yaml" in text and "configs/kaggle/ce_b3_256.yaml" in text
    assert "b6_512" not in text and "--size 256 --size 384" in text
    assert "--gpus 0,1" in text
    assert f"sample_submission={kaggle_root}/siim-isic-melanoma-classification/" in text


def test_resized_set_without_sample_stops_in_one_line_naming_sample(tmp_path, kaggle_input):
    kaggle_root, _ = kaggle_input
    work = workdir(tmp_path)
    data = kaggle_root / "jpeg-melanoma-384x384"
    proc = run_make(work, [f"PY={sys.executable}", "smoke", f"DATA={data}"])
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if "***" in ln]
    assert "SAMPLE=" in errors[0] and str(data) in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (work / "data").exists()  # stopped before any stage


@pytest.mark.parametrize("how", ["command line", "environment"])
def test_py_given_builds_no_venv(tmp_path, how):
    work = workdir(tmp_path)
    given = [f"PY={sys.executable}"] if how == "command line" else []
    env = {"PY": sys.executable} if how == "environment" else {}
    proc = run_make(work, ["-n", "demo", *given], **env)
    assert proc.returncode == 0, proc.stderr
    assert f"{sys.executable} -m deepauc demo-data" in proc.stdout
    assert "-m venv" not in proc.stdout and "pip install" not in proc.stdout
    # a real target: the demo data, generated by the given interpreter
    demo = "DEMO_ARGS=--n-train 300 --n-patients 80 --n-test 40 --n-test-patients 10"
    real = run_make(work, [*given, "data/demo/train.csv", demo], **env)
    assert real.returncode == 0, real.stderr
    assert (work / "data/demo/train.csv").is_file() and not (work / ".venv").exists()


def test_kaggle_configs_fit_a_t4():
    """fp16 (no native bf16 on a T4), 8 TTA views, batches within 16 GB by the measured
    activations per image, no more loader workers than two jobs share 4 vCPUs with."""
    configs = sorted((REPO / "configs/kaggle").glob("[ac]*_*.yaml"))
    assert len(configs) == 4
    for path in configs:
        cfg = load_experiment(str(path))
        assert cfg.name == f"kaggle_{path.stem}"
        assert cfg.train.amp == "fp16"
        assert cfg.tta.dihedral + cfg.tta.n_random == 8
        gib = ACTIVATIONS_GIB[(cfg.model.backbone, cfg.data.image_size)] * cfg.train.batch_size
        assert gib <= 12, (path, gib)  # 16 GB less weights, optimizer and workspace
        assert cfg.train.num_workers <= 2
        if cfg.model.init_from:
            assert cfg.model.init_from == f"models/kaggle_ce_{path.stem.split('_', 1)[1]}"


def test_eda_notebook_runs_on_the_resized_layout(kaggle_input, tmp_path):
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    kaggle_root, _ = kaggle_input
    nb = nbformat.read(REPO / "notebooks" / "eda.ipynb", as_version=4)
    os.environ["DEEPAUC_DATA"] = str(kaggle_root / "jpeg-melanoma-384x384")
    try:
        nbclient.NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        ).execute()
    finally:
        del os.environ["DEEPAUC_DATA"]
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert f"{6 + N_EXTRA} training images" in text


def test_the_docs_time_estimate_is_the_scripts():
    """The table in docs/real-data.md is what the documented command prints today."""
    cmd = "python bench/siim_estimate.py --experiment kaggle"
    doc = DOC.read_text()
    assert cmd in doc
    proc = subprocess.run(
        [sys.executable, *cmd.split()[1:]], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    table = [ln for ln in proc.stdout.splitlines() if ln.startswith("|")]
    assert len(table) == 5 and "| all |" in table[-1]
    for line in table:
        assert line in doc, line
