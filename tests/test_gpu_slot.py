"""GPU slots for the model grid: every job runs, no two concurrent jobs share a device id."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deepauc.pipeline.gpu_slot import parse_gpus

REPO = Path(__file__).resolve().parents[1]
# run as a script: the module needs only the standard library (no torch import per job)
SLOT = [sys.executable, str(REPO / "src" / "deepauc" / "pipeline" / "gpu_slot.py")]
# a fake training job: records its visible device and when it ran, then holds the device
FAKE_JOB = (
    "import json, os, sys, time; t0 = time.time(); time.sleep(0.4); "
    "print(json.dumps([os.environ['CUDA_VISIBLE_DEVICES'], t0, time.time()]), "
    "file=open(sys.argv[1], 'w'))"
)


def _slot(gpus: str, lock_dir: Path, out: Path) -> subprocess.Popen:
    cmd = [*SLOT, "--gpus", gpus]
    cmd += ["--lock-dir", str(lock_dir), "--", sys.executable, "-c", FAKE_JOB, str(out)]
    return subprocess.Popen(cmd)


def test_jobs_share_the_gpus_one_job_per_gpu(tmp_path):
    jobs = [_slot("7,9", tmp_path / "locks", tmp_path / f"job{i}.json") for i in range(5)]
    assert [job.wait(timeout=300) for job in jobs] == [0] * 5
    runs = [json.loads((tmp_path / f"job{i}.json").read_text()) for i in range(5)]
    assert {gpu for gpu, _, _ in runs} <= {"7", "9"}
    for i, (gpu, start, end) in enumerate(runs):
        for other_gpu, other_start, other_end in runs[i + 1 :]:
            if gpu == other_gpu:  # the same device: one after the other
                assert end <= other_start or other_end <= start, runs


def test_the_command_exit_status_comes_back(tmp_path):
    cmd = [*SLOT, "--gpus", "3"]
    cmd += ["--lock-dir", str(tmp_path), "--", sys.executable, "-c", "raise SystemExit(3)"]
    assert subprocess.run(cmd, timeout=60).returncode == 3


@pytest.mark.parametrize("text", ["", "0,0", " , "])
def test_bad_gpu_lists_are_refused(text):
    with pytest.raises(ValueError, match="distinct"):
        parse_gpus(text)


def test_make_routes_train_and_predict_through_a_slot_only_with_gpus():
    def dry(*args):
        cmd = [
            "make",
            "-n",
            "--no-print-directory",
            "-C",
            str(REPO),
            "PY=python",
            "EXP=demo",
            "N_FOLDS=5",
        ]
        return subprocess.run([*cmd, *args, "preds/demo_ce_lite0_64/oof.csv"], capture_output=True,
                              text=True, timeout=60).stdout  # fmt: skip

    with_gpus = [
        line for line in dry("GPUS=0,1").splitlines() if " train " in line or " predict " in line
    ]
    assert len(with_gpus) == 6  # 5 folds + predict
    assert all(
        line.startswith("python -m deepauc.pipeline.gpu_slot --gpus 0,1") for line in with_gpus
    )
    assert "gpu_slot" not in dry()
