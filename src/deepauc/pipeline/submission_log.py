"""The submission log (``submissions/log.csv``): one row per submission file ``deepauc ensemble``
writes, keyed by the file's sha256, with its CV AUCs and an ``lb_score`` the user fills in."""

from __future__ import annotations

import contextlib
import csv
import datetime
import hashlib
import io
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

from deepauc.io import write_text

LOG_COLUMNS = [
    "time_utc",
    "submission",
    "sha256",
    "name",
    "config",
    "method",
    "selection",
    "members",
    "weights",
    "oof_auc",
    "oof_auc_fold_rank",
    "nested_auc",
    "lb_score",
]
# columns that hold a number or nothing (lb_score stays empty until the user fills it in)
NUMBER_COLUMNS = ["oof_auc", "oof_auc_fold_rank", "nested_auc", "lb_score"]
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_row(row: dict[str, str], where: str) -> None:
    """Raise ValueError naming ``where`` (file and line) for a cell the log cannot hold."""
    try:
        datetime.datetime.strptime(row["time_utc"], TIME_FORMAT)
    except ValueError:
        raise ValueError(
            f"{where}: time_utc {row['time_utc']!r} is not of the form 2026-01-31T12:00:00Z"
        ) from None
    if not _SHA256.fullmatch(row["sha256"]):
        raise ValueError(f"{where}: sha256 {row['sha256']!r} is not 64 lowercase hex digits")
    for column in NUMBER_COLUMNS:
        text = row[column].strip()
        if not text:
            continue
        try:
            float(text)
        except ValueError:
            raise ValueError(
                f"{where}: {column} {row[column]!r} is not a number (leave it empty or write one, "
                "e.g. 0.9412)"
            ) from None


def parse_log(text: str, path: str | os.PathLike) -> list[tuple[int, dict[str, str]]]:
    """The rows of a log's text with the line each ends on; a malformed log raises ValueError
    naming the file and line. Blank lines are skipped; an empty file holds no rows."""
    if not text.strip():
        return []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
        if header != LOG_COLUMNS:
            raise ValueError(
                f"{path}: line 1: the header must be {','.join(LOG_COLUMNS)} (found "
                f"{','.join(header)!r}); move the file aside to start a new log"
            )
        rows = []
        for fields in reader:
            if not fields:
                continue
            where = f"{path}: line {reader.line_num}"
            if len(fields) != len(LOG_COLUMNS):
                raise ValueError(
                    f"{where}: {len(fields)} field(s), expected {len(LOG_COLUMNS)} "
                    f"({','.join(LOG_COLUMNS)})"
                )
            row = dict(zip(LOG_COLUMNS, fields))
            _check_row(row, where)
            rows.append((reader.line_num, row))
    except csv.Error as err:
        raise ValueError(f"{path}: line {reader.line_num}: not valid CSV ({err})") from None
    return rows


def read_log(path: str | os.PathLike) -> tuple[str, list[tuple[int, dict[str, str]]]]:
    """The log's text and its checked rows; ("", []) when there is no log yet."""
    path = Path(path)
    if not path.exists():
        return "", []
    try:
        # bytes decoded as they are: no newline translation, so earlier rows stay byte for byte
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text; it is not a submission log") from None
    return text, parse_log(text, path)


def format_number(value: float | None) -> str:
    """A log cell for an AUC: six decimals, or empty when there is none (None or NaN)."""
    if value is None or math.isnan(value):
        return ""
    return f"{value:.6f}"


def utc_now() -> str:
    """The current time in the log's format (UTC, seconds)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime(TIME_FORMAT)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` so two runs appending at once both keep their row;
    without ``fcntl`` (not POSIX) the read-append-rename runs unlocked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - POSIX has it
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def append_entry(path: str | os.PathLike, row: dict[str, str]) -> tuple[bool, str]:
    """Append ``row`` (every LOG_COLUMNS key) to the log at ``path``, unless a row with the
    same sha256 is there already.

    The earlier rows are kept byte for byte; the new text is written beside the log and renamed
    onto it. Returns whether a row was added and a sentence saying what happened.
    """
    path = Path(path)
    missing = [c for c in LOG_COLUMNS if c not in row]
    if missing:
        raise ValueError(f"{path}: internal error, log row without {missing}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent):
        text, rows = read_log(path)
        for line, old in rows:
            if old["sha256"] == row["sha256"]:
                return False, (
                    f"{path}: {row['submission']} (sha256 {row['sha256'][:12]}...) is already "
                    f"logged at line {line} ({old['time_utc']}); nothing appended"
                )
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if not text.strip():
            text = ""
            writer.writerow(LOG_COLUMNS)
        elif not text.endswith("\n"):
            text += "\n"
        writer.writerow([row[c] for c in LOG_COLUMNS])
        write_text(text + buf.getvalue(), path)
    return True, f"{path}: logged {row['submission']} (sha256 {row['sha256'][:12]}...)"
