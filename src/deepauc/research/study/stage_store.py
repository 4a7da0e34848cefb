"""The first stage of the paper's two-stage runs (a whole CE run) kept on disk: every second
stage of one seed (lr factors, head inits, CE continued) starts from the same snapshot."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from deepauc.io import atomic_path
from deepauc.research.study.evaluation import EpochTracker
from deepauc.research.study.jobs import Job

__all__ = ["load_stage", "save_stage", "stage_path"]


class RunContext(Protocol):
    """What of a run's context (``training.RunContext``) a CE stage depends on and changes
    (the generator and the tracker in place)."""

    @property
    def spec(self) -> Any: ...
    @property
    def tspec(self) -> Any: ...
    @property
    def abl(self) -> Any: ...
    @property
    def p(self) -> float: ...
    @property
    def gen(self) -> torch.Generator: ...
    @property
    def tracker(self) -> EpochTracker | None: ...


_PACKAGE = Path(__file__).resolve().parents[2]
# the code a CE stage runs: a change here must not reuse a snapshot trained by the old code
_TRAINING_SOURCES = (
    "research/study/training.py",
    "research/study/nets.py",
    "research/study/sampling.py",
    "research/study/splits.py",
    "research/study/evaluation.py",
    "research/datasets.py",
    "research/heads.py",
    "optim.py",
    "losses.py",
)


def _code_digest() -> str:
    h = hashlib.sha1(torch.__version__.encode())
    for rel in _TRAINING_SOURCES:
        h.update((_PACKAGE / rel).read_bytes())
    return h.hexdigest()


# read when the code is imported: the files may change while a long study runs the old code
_CODE_DIGEST = _code_digest()


def stage_path(directory: Path, ce_job: Job, ctx: RunContext, epochs: int) -> Path:
    """Where the CE stage ``ce_job`` of ``epochs`` epochs is kept: named by everything it is
    trained from (the job, the run's settings with its overrides, p, the training code)."""
    blob = json.dumps(
        [
            list(dataclasses.astuple(ce_job)),
            dataclasses.asdict(ctx.spec),
            dataclasses.asdict(ctx.tspec),
            dataclasses.asdict(ctx.abl),
            ctx.p,
            epochs,
            ctx.tracker is not None,
            _CODE_DIGEST,
        ],
        sort_keys=True,
        default=str,
    )
    return directory / f"{hashlib.sha1(blob.encode()).hexdigest()[:20]}.pt"


def save_stage(path: Path, model: nn.Module, ctx: RunContext, stats: dict[str, Any]) -> None:
    """Write the model, both random states, the epoch tracker and the stage's stats; the file
    appears whole or not at all (two workers may train the same stage at once)."""
    state = {
        "model": model.state_dict(),
        "gen": ctx.gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "tracker": _tracker_state(ctx),
        "stats": stats,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_stage(path: Path, model: nn.Module, ctx: RunContext) -> dict[str, Any] | None:
    """Restore the snapshot at ``path`` into ``model`` and ``ctx``; its stats, or None when
    there is none (or it cannot be read: the stage is then trained again)."""
    try:
        state = torch.load(path, weights_only=False)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError):
        return None
    model.load_state_dict(state["model"])
    ctx.gen.set_state(state["gen"])
    torch.set_rng_state(state["torch_rng"])
    if ctx.tracker is not None:
        for field, value in state["tracker"].items():
            setattr(ctx.tracker, field, value)
    return dict(state["stats"])


def _tracker_state(ctx: RunContext) -> dict[str, Any] | None:
    if ctx.tracker is None:
        return None
    return {
        f.name: getattr(ctx.tracker, f.name)
        for f in dataclasses.fields(ctx.tracker)
        if f.name != "data"
    }
