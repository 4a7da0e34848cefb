"""The device check (bench/gpu_check.py) as its CPU dry run, so that it cannot rot unseen."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import gpu_check  # noqa: E402

SECTIONS = [
    "Environment",
    "Parity: PESG, CPU against the device",
    "Parity: fp16 GradScaler step against fp32",
    "Parity: SyncBatchNorm converters",
    "Pipeline: CE, AUC-M from it, checkpoint, resume, TTA",
    "Memory: the 16 GB settings in fp16 under a 16 GB cap",
    "Throughput: training step per backbone",
    "Throughput: the training loader",
    "Throughput: loader-fed training and TTA at B5@384",
]


def _section(text: str, title: str) -> str:
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def bare_env() -> dict[str, str]:
    """The environment of a bare start: no PYTHONPATH, no venv activated."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def test_make_gpu_check_cpu_dry_run_writes_every_section(tmp_path):
    out = tmp_path / "check.md"
    cmd = ["make", "--no-print-directory", "-C", str(REPO), f"PY={sys.executable}"]
    cmd += ["gpu-check", "DEVICE=cpu", f"GPU_CHECK_OUT={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=bare_env())
    text = out.read_text() if out.exists() else ""
    assert proc.returncode == 0, proc.stderr[-2000:] + text[-3000:]
    assert text.startswith("# Device check: cpu, tiny sizes (dry run)")
    assert re.findall(r"^## (.+)$", text, re.M) == SECTIONS
    assert f"| torch | {torch.__version__} |" in _section(text, "Environment")
    # this checkout's code, found without PYTHONPATH (not an installed deepauc)
    assert f"| deepauc imported from | {REPO / 'src' / 'deepauc'} |" in text
    parity = _section(text, SECTIONS[1])
    for path in ["fused", "foreach"]:
        for dual in ["normalized", "paper", "closed_form"]:
            assert re.search(rf"\| {path} \| [\d.]+ \| {dual} \| 0 \| 0 \| True \|", parity)
    assert re.search(r"\| α \| 0\.\d+ \| 0\.\d+ \| 0 \|", _section(text, SECTIONS[2]))
    syncbn = _section(text, SECTIONS[3])
    assert "| timm.layers.convert_sync_batchnorm (used) | 0 |" in syncbn
    torch_diff = re.search(
        r"\| torch\.nn\.SyncBatchNorm\.convert_sync_batchnorm \| ([\d.e+-]+) \|", syncbn
    )
    assert float(torch_diff.group(1)) > 0.1
    pipeline = _section(text, SECTIONS[4])
    # CPU: bitwise resume, and a control run that also differs by 0
    assert re.search(
        r"\| same again, uninterrupted \(control\) .* vs uninterrupted: 0 \|", pipeline
    )
    assert re.search(
        r"\| same, killed after its checkpoint, resumed .* vs uninterrupted: 0 \|", pipeline
    )
    assert re.search(r"\d+ views/s, OOF AUC [\d.]+", pipeline)
    memory = _section(text, SECTIONS[5])
    # every recipe's 16 GB setting, as its config's train.memory table gives it
    for config, batch, micro, ckpt in [
        ("siim/ce_b3_256.yaml", 96, 48, False), ("siim/ce_b5_384.yaml", 48, 16, False),
        ("siim/ce_b6_512.yaml", 24, 12, True), ("siim/aucm_b6_512.yaml", 24, 12, True),
        ("kaggle/ce_b3_256.yaml", 64, 64, False), ("kaggle/ce_b5_384.yaml", 20, 20, False),
    ]:  # fmt: skip
        row = rf"\| {re.escape(config)} \| \S+ \| {batch} \| {micro} \| {ckpt} \| [\d.]+ \| ran \|"
        assert re.search(row, memory), memory
    for title in SECTIONS[6:]:
        assert "skipped: needs CUDA" in _section(text, title)


def test_a_failing_or_overrunning_section_leaves_the_others(tmp_path, monkeypatch):
    def slow(plan):
        time.sleep(5)
        return "never"

    def broken(plan):
        raise RuntimeError("no such kernel")

    monkeypatch.setattr(
        gpu_check,
        "SECTIONS",
        [("First", lambda plan: "first body"), ("Slow", slow), ("Broken", broken),
         ("Last", lambda plan: "last body")],
    )  # fmt: skip
    plan = gpu_check.Plan.for_device(torch.device("cpu"), tmp_path, 0.0)
    plan.section_seconds = 1
    out = tmp_path / "report.md"
    assert gpu_check.run_sections(plan, out) == 2
    text = out.read_text()
    assert "## First\n\nfirst body" in text and "## Last\n\nlast body" in text
    assert "FAILED: SectionTimeout: over its 1 s limit" in _section(text, "Slow")
    assert "FAILED: RuntimeError: no such kernel" in _section(text, "Broken")


def test_a_long_section_gets_its_longer_limit(tmp_path, monkeypatch):
    def memory_16gb_section(plan):  # named as the real one: LONG_SECTIONS doubles its limit
        time.sleep(1.5)
        return "finished"

    def other_section(plan):
        time.sleep(1.5)
        return "never"

    monkeypatch.setattr(
        gpu_check, "SECTIONS", [("Long", memory_16gb_section), ("Other", other_section)]
    )
    plan = gpu_check.Plan.for_device(torch.device("cpu"), tmp_path, 0.0)
    plan.section_seconds = 1
    out = tmp_path / "report.md"
    assert gpu_check.run_sections(plan, out) == 1
    assert _section(out.read_text(), "Long").strip().startswith("finished")
    assert "over its 1 s limit" in _section(out.read_text(), "Other")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal needs a host without CUDA")
def test_cuda_check_without_cuda_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cuda", "--out", str(tmp_path / "x.md")])


NO_ALBUMENTATIONS = "import sys; sys.modules['albumentations'] = None; "


def test_bare_start_without_albumentations_runs_the_sections_that_need_none(tmp_path):
    out = tmp_path / "out" / "check.md"
    script = NO_ALBUMENTATIONS + (
        "import runpy; sys.argv = ['bench/gpu_check.py', '--device', 'cpu', '--out', "
        f"{str(out)!r}, '--only', 'environment', '--only', 'pesg_parity', '--only', "
        "'grad_scaler', '--only', 'syncbn']; runpy.run_path('bench/gpu_check.py', "
        "run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=bare_env(), capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    text = out.read_text() if out.exists() else ""
    assert proc.returncode == 0, proc.stderr[-2000:] + text[-3000:]
    assert re.findall(r"^## (.+)$", text, re.M) == SECTIONS[:4]
    assert "FAILED" not in text
    assert re.search(r"\| albumentations \| missing \(\w*Error\) \|", _section(text, "Environment"))


def test_pipeline_modules_import_without_albumentations():
    script = NO_ALBUMENTATIONS + (
        "import deepauc.pipeline.runtime, deepauc.pipeline.experiment, "
        "deepauc.pipeline.train, deepauc.pipeline.predict, deepauc.data.augment as a; "
        "a.build_train_transform(a.AugmentConfig())"
    )
    env = {**bare_env(), "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    # every module imports; only building the training transform needs albumentations
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "build_train_transform" in proc.stderr, proc.stderr
    assert lines[-1].startswith("ModuleNotFoundError: import of albumentations halted")


def test_device_run_script_installs_nothing_else_and_reports_to_out(tmp_path):
    # no carried wheels (an empty folder): the check runs on what the interpreter has
    (tmp_path / "whl").mkdir()
    env = {**bare_env(), "OUT": str(tmp_path / "out"), "DEVICE": "cpu", "PY": sys.executable}
    env["WHL"] = str(tmp_path / "whl")
    cmd = ["bash", str(REPO / "bench" / "device_run.sh"), "--only", "environment"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    report = tmp_path / "out" / "gpu-check.md"
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"no wheels in {tmp_path / 'whl'}/" in proc.stderr
    assert re.findall(r"^## (.+)$", report.read_text(), re.M) == ["Environment"]
    unset = {k: v for k, v in env.items() if k != "OUT"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=unset, capture_output=True, text=True)
    assert proc.returncode != 0 and "set OUT" in proc.stderr
