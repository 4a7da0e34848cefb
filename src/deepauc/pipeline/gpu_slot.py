"""Run a command on a free GPU of a list (``CUDA_VISIBLE_DEVICES``, one lock file per GPU).

``make all -j4 GPUS=0,1,2,3`` runs every train and predict job through it: one job per GPU.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path


def acquire(gpus: list[str], lock_dir: Path, poll_s: float = 0.5) -> tuple[str, int]:
    """The first GPU of ``gpus`` whose lock is free, and the open descriptor holding it.

    The lock is the kernel's (``flock``): it goes when the descriptor closes, also when
    the process holding it dies, so a killed job never leaves its GPU taken.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for gpu in gpus:
            fd = os.open(lock_dir / f"gpu{gpu}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return gpu, fd
        time.sleep(poll_s)


def run_on_free_gpu(command: list[str], gpus: list[str], lock_dir: Path) -> int:
    """Run ``command`` with only a free GPU of ``gpus`` visible; its exit status."""
    gpu, fd = acquire(gpus, lock_dir)
    try:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
        return subprocess.call(command, env=env)
    finally:
        os.close(fd)


def parse_gpus(text: str) -> list[str]:
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not gpus or len(set(gpus)) != len(gpus):
        raise ValueError(f"--gpus wants distinct comma-separated device ids, got {text!r}")
    return gpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deepauc.pipeline.gpu_slot",
        description="run a command on a free GPU of a list (one command per GPU at a time)",
    )
    parser.add_argument("--gpus", required=True, help="device ids, e.g. 0,1,2,3")
    parser.add_argument("--lock-dir", type=Path, default=Path(".gpu-slots"))
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")
    try:
        gpus = parse_gpus(args.gpus)
    except ValueError as err:
        parser.error(str(err))
    return run_on_free_gpu(command, gpus, args.lock_dir)


if __name__ == "__main__":
    sys.exit(main())
