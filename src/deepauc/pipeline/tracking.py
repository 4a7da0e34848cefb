"""Where a run's epochs are watched from another machine: each ``log.csv`` row as TensorBoard
scalars under ``<run dir>/tensorboard/`` (``train.tensorboard: true``), on rank 0 only."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class EpochWriter:
    """Writes the numbers of each epoch's row at step ``epoch``; does nothing when off."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self._writer: Any = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def write(self, row: dict) -> None:
        if self._writer is None:
            return
        step = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self._writer.add_scalar(key, float(value), step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
