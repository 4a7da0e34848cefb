"""Atomic file output: every artefact is written beside its target and renamed into place, so
a killed run never leaves a half-written file that ``make`` would take as finished; and the
rule for names that may become one file name."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file 0600; outputs get the usual umask-based mode
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def ensure_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` and check a file can be written in it, before any long computing.

    Raises PermissionError (or another OSError) naming the folder.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".writable.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise type(err)(
            f"{folder}: output folder is not writable ({err.strerror or err})"
        ) from None
    return folder


def write_csv(df, path: str | os.PathLike, **kwargs) -> Path:
    """Write a pandas DataFrame to ``path`` atomically (no index by default)."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)
    return Path(path)


def write_text(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def save_torch(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_torch(path: str | os.PathLike) -> dict:
    """``torch.load`` of a checkpoint dict on CPU, weights only.

    A zero-byte, truncated or corrupt file raises ValueError naming the path, so that
    the CLI reports one line instead of torch's traceback.
    """
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as err:  # the unpickler of damaged bytes raises almost any type
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(
            f"{path}: cannot be read (empty, truncated or corrupt: {reason}); "
            "delete it and rerun the same command"
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a deepauc checkpoint; delete it and rerun the same command")
    return obj


def is_safe_name(value: str) -> bool:
    """True for a name usable as one file name inside a folder.

    No path separator, not ``.`` or ``..``, no drive colon, no control character: an
    image or run name can then never address a file outside its output folder.
    """
    return (
        value not in ("", ".", "..")
        and not any(c in value for c in "/\\:")
        and not any(ord(c) < 32 or ord(c) == 127 for c in value)
    )
