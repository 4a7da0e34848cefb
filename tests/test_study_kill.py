"""A study killed by SIGKILL leaves none of its worker processes training."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import cpu_subprocess_env
from test_study_round2 import write_config


def _pool_workers(parent_pid: int) -> list[int]:
    """The live multiprocessing workers whose parent is ``parent_pid``."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if int(stat[1]) == parent_pid and stat[0] != "Z" and b"spawn_main" in cmdline:
            pids.append(int(entry))
    return pids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's parent-death signal")
def test_sigkill_of_the_study_ends_its_workers(tmp_path):
    long_runs = [{"name": "digits", "epochs": 400, "batch_size": 16, "imratios": [0.1]}]
    config = write_config(tmp_path, workers=2, datasets=long_runs)
    cmd = [sys.executable, "-m", "deepauc", "study", "--config", config]
    study = subprocess.Popen(cmd, env=cpu_subprocess_env(), stdout=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = _pool_workers(study.pid)
        assert len(workers) == 2 and study.poll() is None, "the study's two workers never ran"
        time.sleep(3)  # past the workers' start, into their first runs
        assert study.poll() is None, "the study ended before the kill"
        study.send_signal(signal.SIGKILL)
        study.wait()
        deadline = time.monotonic() + 10
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, workers)), "workers still alive 10 s after the study's SIGKILL"
    finally:
        for pid in filter(_alive, workers):
            os.kill(pid, signal.SIGKILL)
        if study.poll() is None:
            study.kill()
            study.wait()
