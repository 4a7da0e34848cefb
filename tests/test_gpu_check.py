"""The device check (bench/gpu_check.py) as its CPU dry run, so that it cannot rot unseen."""

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
    "Throughput: training step per backbone",
    "Throughput: the training loader",
    "Throughput: loader-fed training and TTA at B5@384",
]


def _section(text: str, title: str) -> str:
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_make_gpu_check_cpu_dry_run_writes_every_section(tmp_path):
    out = tmp_path / "check.md"
    cmd = ["make", "--no-print-directory", "-C", str(REPO), f"PY={sys.executable}"]
    cmd += ["gpu-check", "DEVICE=cpu", f"GPU_CHECK_OUT={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    text = out.read_text() if out.exists() else ""
    assert proc.returncode == 0, proc.stderr[-2000:] + text[-3000:]
    assert text.startswith("# Device check: cpu, tiny sizes (dry run)")
    assert re.findall(r"^## (.+)$", text, re.M) == SECTIONS
    assert f"| torch | {torch.__version__} |" in _section(text, "Environment")
    parity = _section(text, SECTIONS[1])
    for path, dual in [("fused", "normalized"), ("fused", "paper"), ("foreach", "paper")]:
        assert re.search(rf"\| {path} \| [\d.]+ \| {dual} \| 0 \| 0 \| True \|", parity)
    assert re.search(r"\| α \| 0\.\d+ \| 0\.\d+ \| 0 \|", _section(text, SECTIONS[2]))
    syncbn = _section(text, SECTIONS[3])
    assert "| timm.layers.convert_sync_batchnorm (used) | 0 |" in syncbn
    torch_diff = re.search(
        r"\| torch\.nn\.SyncBatchNorm\.convert_sync_batchnorm \| ([\d.e+-]+) \|", syncbn
    )
    assert float(torch_diff.group(1)) > 0.1
    pipeline = _section(text, SECTIONS[4])
    assert "max |Δ weights| vs uninterrupted: 0 |" in pipeline  # CPU: bitwise resume
    assert re.search(r"\d+ views/s, OOF AUC [\d.]+", pipeline)
    for title in SECTIONS[5:]:
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal needs a host without CUDA")
def test_cuda_check_without_cuda_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cuda", "--out", str(tmp_path / "x.md")])
