"""The one logging set-up of every ``deepauc`` command: messages only, on stderr; under
torchrun each rank's lines carry ``[rank r/w]`` and only rank 0 logs below a warning."""

from __future__ import annotations

import logging


class _CommandHandler(logging.StreamHandler):
    """The stderr handler :func:`setup_logging` installs (told apart from a host's own)."""


def setup_logging(rank: int = 0, world: int = 1) -> None:
    """Configure the root logger for one process (``rank`` of ``world``).

    A second call (train, once it knows its rank) updates the prefix and level. A root
    logger that already has handlers of its host (pytest, a notebook) is left to them, as
    :func:`logging.basicConfig` does.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _CommandHandler)]
    if root.handlers and not ours:
        return
    handler = ours[0] if ours else _CommandHandler()
    prefix = f"[rank {rank}/{world}] " if world > 1 else ""
    handler.setFormatter(logging.Formatter(prefix + "%(message)s"))
    if not ours:
        root.addHandler(handler)
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
