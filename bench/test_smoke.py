"""Smoke test of the benchmark suite itself (not run by `make test`; no timing is asserted).

pytest bench/test_smoke.py      # about a minute on 2 cores
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def test_quick_suite_runs_and_writes_tables(tmp_path):
    out = tmp_path / "results.md"
    cmd = [
        sys.executable, str(BENCH / "run.py"), "--quick", "--reps", "1", "--warmup", "0",
        "--only", "optim_step,metric,tta", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for title in ["### Optimizer step", "### Metric", "### Inference with 8-view TTA"]:
        assert title in text
    assert "| torch |" in text and "| cpu |" in text
    assert "FAILED" not in text


def test_unknown_benchmark_is_refused():
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--only", "nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "unknown benchmark" in proc.stderr
