"""Rendering demo images in worker processes and writing them, tracking every file."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2

from deepauc.data.demo.images import Style, encode_jpeg, image_rng, render_lesion
from deepauc.io import atomic_path

# Folder of the external sets, relative to the output directory.
EXTERNAL = Path("external")


def _render_job(job: tuple[int, int, int, bool, Style]) -> bytes:
    seed, stream, index, look, style = job
    return encode_jpeg(render_lesion(image_rng(seed, stream, index), look, style))


def _single_thread() -> None:
    # The pool already uses every core; OpenCV threads would only contend.
    cv2.setNumThreads(1)


class ImageWriter:
    """Renders (in worker processes) and writes images, tracking the files written."""

    def __init__(self, seed: int, root: Path, workers: int = 1):
        self.seed = seed
        self.root = root
        self.written: set[Path] = set()
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> ImageWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    @property
    def count(self) -> int:
        return len(self.written)

    def write(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        self.written.add(path)

    def remove_stale(self) -> int:
        """Delete .jpg files left by an earlier run in the folders this run wrote to."""
        stale = [
            p
            for folder in {p.parent for p in self.written}
            for p in folder.glob("*.jpg")
            if p not in self.written
        ]
        for path in stale:
            path.unlink()
        return len(stale)

    def render_many(self, stream: int, jobs: list[tuple[int, bool, Style]]) -> list[bytes]:
        """JPEG bytes for each (index, look, style); the same whatever the worker count."""
        full = [(self.seed, stream, i, bool(look), style) for i, look, style in jobs]
        if self.workers > 1 and len(full) >= 64:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.workers, initializer=_single_thread)
            return list(self._pool.map(_render_job, full, chunksize=16))
        return [_render_job(job) for job in full]
