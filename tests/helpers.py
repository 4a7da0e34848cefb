"""Test helpers shared by several test files: the tiny data set's images and experiment YAMLs,
and a copy of the Makefile read with `make -n` (nothing runs)."""

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import yaml

SIZE = 32
REPO = Path(__file__).resolve().parents[1]
# the data files the Makefile's demo rules start from, as placeholders (no rule runs)
DEMO_INPUTS = ("data/demo/train.csv", "data/demo/test.csv", "data/interim/demo_train.csv")


def lesion_image(rng: np.random.Generator, positive: bool) -> np.ndarray:
    img = np.full((SIZE, SIZE, 3), (200, 160, 140), np.uint8) + rng.integers(
        0, 20, (SIZE, SIZE, 3), dtype=np.uint8
    )
    radius = int(rng.integers(9, 13) if positive else rng.integers(4, 8))
    colour = (40, 40, 120) if positive else (60, 90, 140)  # BGR
    cv2.circle(img, (SIZE // 2, SIZE // 2), radius, colour, -1)
    return img


def write_experiment(tiny: dict, name: str, **sections) -> Path:
    """An experiment YAML over ``tiny_data`` with small, fast settings; ``sections`` override."""
    cfg = {
        "name": name,
        "n_folds": 3,
        "data": {
            "train_csv": str(tiny["train_csv"]),
            "test_csv": str(tiny["test_csv"]),
            "cache_dir": str(tiny["cache"]),
            "image_size": SIZE,
        },
        "model": {"backbone": "mobilenetv3_small_050", "pretrained": False, "drop_rate": 0.0},
        "loss": {"name": "ce"},
        "optim": {"name": "adam", "lr": 1e-3},
        "schedule": {"name": "constant", "epochs": 1},
        "train": {"batch_size": 8, "max_steps_per_epoch": 3, "seed": 0},
        "tta": {"dihedral": 8, "batch_size": 16},
        "models_dir": str(tiny["root"] / "models"),
        "preds_dir": str(tiny["root"] / "preds"),
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    path = tiny["root"] / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def cpu_subprocess_env() -> dict[str, str]:
    """The environment for a ``deepauc`` subprocess that must run on CPU, one thread each.

    No GPU visible: on a GPU host the bitwise checks would meet cuDNN and bf16
    non-determinism, and a second rank would pick a device a one-GPU machine lacks.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DEEPAUC_PROGRESS": "0"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.pop("WORLD_SIZE", None)
    return env


def make_workdir(
    work: Path, configs: str | None = None, inputs: Sequence[str] = DEMO_INPUTS
) -> Path:
    """``work`` with a copy of the Makefile, of ``configs/<configs>`` (``""``: all of
    ``configs/``; None: none) and a placeholder file for each of ``inputs``."""
    shutil.copy(REPO / "Makefile", work / "Makefile")
    if configs is not None:
        shutil.copytree(REPO / "configs" / configs, work / "configs" / configs)
    for name in inputs:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text("image_name\n")
    return work


def make_dry_run(
    work: Path,
    *args: str,
    flags: Sequence[str] = (),
    py: str = sys.executable,
    check: bool = True,
    timeout: int = 60,
) -> str:
    """The commands ``make -n`` prints in ``work`` for ``args`` (variables and targets);
    ``flags``: more make options; ``check``: the make must succeed."""
    cmd = ["make", "-n", *flags, "--no-print-directory", "-C", str(work), f"PY={py}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc.stdout
