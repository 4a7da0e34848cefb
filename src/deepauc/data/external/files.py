"""File helpers of the external merge: image lookup by name, relative paths, digests."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

DOWNSAMPLED_SUFFIX = "_downsampled"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Files beside ISIC images that are not images of a lesion (ISIC 2017 superpixel maps,
# segmentation masks): never indexed, so they cannot stand in for a listed image.
NOT_LESION_SUFFIXES = ("_superpixels", "_segmentation")
# How many names an error message lists before "and N more".
SHOW = 5


def listed(names: list[str]) -> str:
    """The first SHOW names, comma-separated, and how many more there are."""
    more = f" and {len(names) - SHOW} more" if len(names) > SHOW else ""
    return f"{', '.join(names[:SHOW])}{more}"


def strip_suffix(name: str) -> str:
    """The image name without the ``_downsampled`` suffix of some ISIC 2019 files."""
    return name[: -len(DOWNSAMPLED_SUFFIX)] if name.endswith(DOWNSAMPLED_SUFFIX) else name


def index_images(folder: Path) -> dict[str, Path]:
    """Map file stem -> path for every image under ``folder`` (recursive, sorted walk).

    When two files share a stem, the first in sorted path order wins. Superpixel maps
    and segmentation masks are skipped.
    """
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for fname in sorted(filenames):
            stem, ext = os.path.splitext(fname)
            if ext.lower() in IMAGE_EXTENSIONS and not stem.endswith(NOT_LESION_SUFFIXES):
                found.setdefault(stem, Path(dirpath) / fname)
    return found


def find_file(folder: Path, name: str) -> Path:
    """``folder/name``, else the first file of that name below ``folder``."""
    direct = folder / name
    if direct.is_file():
        return direct
    matches = sorted(folder.rglob(name))
    if not matches:
        raise FileNotFoundError(f"{folder}: no {name} in this folder or below")
    return matches[0]


def resolve_images(names: Iterable[str], index: dict[str, Path], where: str) -> list[Path]:
    """The image file of each name; raise FileNotFoundError listing the missing ones."""
    names = list(names)
    missing = [n for n in names if n not in index]
    if missing:
        raise FileNotFoundError(
            f"{where}: {len(missing)} image file(s) not found: {listed(missing)}"
        )
    return [index[n] for n in names]


def relative_posix(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as a POSIX string (may start with ``../``)."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """BLAKE2b-128 hex digest of the file's bytes."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
