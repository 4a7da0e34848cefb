"""Child processes that end with the process that started them (Linux's parent-death signal)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

__all__ = ["arm_parent_death_signal", "exit_if_orphaned"]

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def arm_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies, also of SIGKILL (the
    signal survives exec); False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    return False


def exit_if_orphaned(parent_pid: int) -> None:
    """Exit at once when ``parent_pid`` is no longer the parent: it died before the signal was
    armed, so the signal will never come."""
    if os.getppid() != parent_pid:
        os._exit(1)
