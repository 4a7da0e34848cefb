"""GPU slots for the model grid: every job runs, no two concurrent jobs share a device id."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
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


# a job that writes its pid, then waits; with "ignore" it survives SIGTERM. SIGINT is set
# to Python's own handler because a runner started in the background of a shell without job
# control (nohup cmd &) passes SIGINT down ignored, and Python then leaves it ignored
HOLDER = (
    "import os, signal, sys, time; "
    "signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[2] == 'ignore' and signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"
)


def _holder(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, int]:
    pid_file = tmp_path / f"{mode}.pid"
    cmd = [*SLOT, "--gpus", "0", "--lock-dir", str(tmp_path / "locks"), "--"]
    wrapper = subprocess.Popen([*cmd, sys.executable, "-c", HOLDER, str(pid_file), mode])
    deadline = time.time() + 60
    while not (pid_file.is_file() and pid_file.read_text()):
        assert time.time() < deadline and wrapper.poll() is None
        time.sleep(0.05)
    return wrapper, int(pid_file.read_text())


def _lock_free(lock_dir: Path) -> bool:
    fd = os.open(lock_dir / "gpu0.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if (
            Path(f"/proc/{pid}/stat").is_file()
            and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
        ):
            return True  # exited, not yet reaped
        time.sleep(0.05)
    return False


def test_a_killed_wrapper_keeps_the_gpu_taken_until_its_job_exits(tmp_path):
    wrapper, job = _holder(tmp_path, "ignore")
    os.kill(wrapper.pid, signal.SIGKILL)
    wrapper.wait(timeout=30)
    time.sleep(0.5)
    assert not _gone(job, timeout=0.5)  # the job ignores SIGTERM: still running ...
    assert not _lock_free(tmp_path / "locks")  # ... so its GPU is still taken
    os.kill(job, signal.SIGKILL)
    assert _gone(job)
    deadline = time.time() + 10
    while not _lock_free(tmp_path / "locks"):
        assert time.time() < deadline
        time.sleep(0.05)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_job_dies_with_its_wrapper_killed_by_sigkill(tmp_path):
    wrapper, job = _holder(tmp_path, "default")
    os.kill(wrapper.pid, signal.SIGKILL)
    wrapper.wait(timeout=30)
    assert _gone(job)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_wrapper_reaches_the_job_and_comes_back(tmp_path, sig):
    wrapper, job = _holder(tmp_path, "default")
    os.kill(wrapper.pid, sig)
    assert wrapper.wait(timeout=30) == 128 + sig
    assert _gone(job)
    assert _lock_free(tmp_path / "locks")
