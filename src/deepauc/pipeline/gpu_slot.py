"""Run a command on a free GPU of a list (``CUDA_VISIBLE_DEVICES``, one lock file per GPU).

``make all -j4 GPUS=0,1,2,3`` runs every train and predict job through it: one job per GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from deepauc.processes import arm_parent_death_signal, exit_if_orphaned


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


def _die_with(parent_pid: int) -> None:
    """In the child before exec: SIGTERM when the wrapper dies (Linux), or exit if it already has."""
    arm_parent_death_signal(signal.SIGTERM)
    exit_if_orphaned(parent_pid)


def run_on_free_gpu(command: list[str], gpus: list[str], lock_dir: Path) -> int:
    """Run ``command`` with only a free GPU of ``gpus`` visible; its exit status.

    The child inherits the lock's descriptor, so the GPU stays taken until the child and
    everything it started have exited, even if this wrapper is killed first. The child runs
    in its own process group: SIGTERM/SIGINT sent to the wrapper go to that whole group,
    and on Linux the child gets SIGTERM when the wrapper dies (also of SIGKILL).
    """
    gpu, fd = acquire(gpus, lock_dir)
    try:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
        me = os.getpid()
        # the handlers are in place before the child starts, so a signal that comes while it
        # starts is held and passed on once it runs, instead of killing this wrapper alone
        started: list[subprocess.Popen] = []
        held: list[int] = []

        def forward(sig, _frame):
            if not started:
                held.append(sig)
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(started[0].pid, sig)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            child = subprocess.Popen(
                command,
                env=env,
                pass_fds=(fd,),
                start_new_session=True,
                preexec_fn=lambda: _die_with(me),
            )
            started.append(child)
            for sig in held:
                forward(sig, None)
            code = child.wait()
            return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
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
