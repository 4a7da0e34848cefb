"""`deepauc resize` under a killed parent, damaged JPEGs and padded JPEGs.

* SIGKILL of the resizer leaves no worker behind, and a rerun gives the cache an
  uninterrupted run gives, byte for byte.
* A JPEG damaged in the middle (its end marker intact) stops the run with one line naming
  the file, and nothing of it is cached; bytes after the end marker are accepted.
* The run shows a progress bar unless DEEPAUC_PROGRESS=0.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from deepauc.cli import main
from deepauc.data import resize as resize_module
from deepauc.data.image_cache import cache_path, index_path
from deepauc.data.resize import resize_table
from helpers import cpu_subprocess_env

N_IMAGES = 150
SIZE = 400


def _photo(seed: int, h: int = 480, w: int = 640) -> bytes:
    """A JPEG (q95) of a smooth gradient with noise: costly to code, like a photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 / w, y * 255 / h, (x + y) % 256], -1) + rng.normal(0, 20, (h, w, 3))
    ok, buf = cv2.imencode(
        ".jpg", np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 95]
    )
    assert ok
    return buf.tobytes()


def _table(tmp_path: Path, contents: list[bytes]) -> tuple[Path, Path, list[str]]:
    src = tmp_path / "src"
    src.mkdir()
    names = [f"ISIC_{i:07d}" for i in range(len(contents))]
    for name, data in zip(names, contents):
        (src / f"{name}.jpg").write_bytes(data)
    csv = tmp_path / "t.csv"
    pd.DataFrame({"image_name": names}).to_csv(csv, index=False)
    return src, csv, names


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _live_processes(marker: str) -> list[int]:
    """Pids of the processes (zombies aside) whose command line contains ``marker``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in cmdline and state != "Z":
            pids.append(int(entry))
    return pids


def _resize_command(csv, src, cache) -> list[str]:
    return [sys.executable, "-m", "deepauc", "resize", "--csv", str(csv), "--image-root",
            str(src), "--size", str(SIZE), "--out", str(cache), "--workers", "2"]  # fmt: skip


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_sigkill_of_the_resizer_leaves_no_worker_and_rerun_is_identical(tmp_path):
    photos = [_photo(seed) for seed in range(4)]
    src, csv, names = _table(tmp_path, [photos[i % 4] for i in range(N_IMAGES)])
    cache = tmp_path / "cache"
    env = cpu_subprocess_env()
    parent = subprocess.Popen(_resize_command(csv, src, cache), env=env)
    left: list[int] = []
    try:
        size_dir = cache / str(SIZE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = len(list(size_dir.glob("ISIC_*.jpg"))) if size_dir.is_dir() else 0
            if done >= 20 or parent.poll() is not None:
                break
            time.sleep(0.02)
        workers = [p for p in _live_processes(str(cache)) if p != parent.pid]
        assert parent.poll() is None and done < N_IMAGES, "the run ended before the kill"
        assert workers, "no worker process seen"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert not index_path(cache, SIZE, csv).exists()
        deadline = time.monotonic() + 5
        while _live_processes(str(cache)) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _live_processes(str(cache))
        assert left == [], f"workers still alive 5 s after their parent was killed: {left}"
    finally:
        for pid in left:  # a failing run must not leave them behind either
            os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    rerun = subprocess.run(
        _resize_command(csv, src, cache), env=env, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    reference = tmp_path / "reference"
    resize_table(csv, src, [SIZE], reference, workers=1)
    assert _tree(cache) == _tree(reference)


def _damaged(data: bytes, kind: str) -> bytes:
    """``data`` damaged half-way through its entropy-coded data; the end marker stays."""
    middle = len(data) // 2
    rng = np.random.default_rng(3)
    if kind == "zeroed":
        return data[:middle] + bytes(256) + data[middle + 256 :]
    if kind == "inserted":
        junk = rng.integers(0, 255, 64, dtype=np.uint8).tobytes().replace(b"\xff", b"\x00")
        return data[:middle] + junk + data[middle:]
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["zeroed", "inserted"])
@pytest.mark.parametrize("size", [64, 700])  # a 1/8-scale decode and a full one
def test_mid_file_corruption_is_an_error_naming_the_file(tmp_path, capsys, kind, size):
    clean = _photo(0, 768, 1024)
    src, csv, names = _table(tmp_path, [clean, _damaged(clean, kind)])
    bad = src / f"{names[1]}.jpg"
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="corrupt JPEG data") as err:
        resize_table(csv, src, [size], cache)
    assert str(bad) in str(err.value)
    assert not cache_path(cache, size, names[1]).exists()  # nothing of it cached
    assert cache_path(cache, size, names[0]).is_file()  # the good one is
    assert not index_path(cache, size, csv).exists()
    capsys.readouterr()
    argv = ["resize", "--csv", str(csv), "--image-root", str(src), "--size", str(size),
            "--out", str(cache), "--workers", "1"]  # fmt: skip
    assert main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "corrupt JPEG data" in lines[0], lines
    assert not cache_path(cache, size, names[1]).exists()


@pytest.mark.parametrize("trailer", ["zeros", "random"])
def test_bytes_after_the_end_marker_are_accepted(tmp_path, trailer):
    clean = _photo(1)
    rng = np.random.default_rng(5)
    tail = {
        "zeros": bytes(8192),
        "random": rng.integers(0, 255, 10000, dtype=np.uint8).tobytes().replace(b"\xff", b"\x00"),
    }[trailer]
    src, csv, names = _table(tmp_path, [clean, clean + tail])
    cache = tmp_path / "cache"
    assert resize_table(csv, src, [64, 200], cache) == {64: 2, 200: 2}
    for size in (64, 200):
        padded = cache_path(cache, size, names[1]).read_bytes()
        assert padded == cache_path(cache, size, names[0]).read_bytes()


def test_progress_bar_unless_switched_off(tmp_path, capsys, monkeypatch):
    src, csv, _ = _table(tmp_path, [_photo(seed, 40, 60) for seed in range(3)])
    monkeypatch.setenv("DEEPAUC_PROGRESS", "1")
    resize_table(csv, src, [16], tmp_path / "a")
    assert "resize t.csv" in capsys.readouterr().err
    monkeypatch.setenv("DEEPAUC_PROGRESS", "0")
    resize_table(csv, src, [16], tmp_path / "b")
    assert capsys.readouterr().err == ""


def test_without_a_death_signal_a_worker_watches_its_parent(monkeypatch):
    """Where prctl is missing, a thread ends the worker once its parent pid changes."""
    parents = iter([41, 41, 1])
    ended = []
    monkeypatch.setattr(resize_module.os, "getppid", lambda: next(parents))
    monkeypatch.setattr(resize_module.time, "sleep", lambda s: None)
    monkeypatch.setattr(resize_module, "_exit_with_parent", lambda: ended.append(True))
    resize_module._watch_parent(41)
    assert ended == [True]
