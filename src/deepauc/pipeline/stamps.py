"""``deepauc stamp``: a file holding the make variables and a listing digest of the input files
one group of pipeline stages reads, rewritten only when that content changes (docs/pipeline.md)."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

from deepauc.data.source_stamps import quick_key

EXCLUDES = "excluded"
HEADER = "# deepauc stamp: what the stages that depend on this file read; rewritten on change\n"


def _split(item: str, flag: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
    return key, value


def listing(root: Path, excludes: list[Path]) -> tuple[int, str]:
    """(file count, digest) of every file under ``root`` but ``excludes``.

    Each file counts by relative path, size, mtime_ns and ctime_ns: ctime changes when a
    file is replaced even if its old mtime is restored (``touch -r``), and a stat is cheap
    enough for tens of thousands of images. Symbolic links are followed.
    """
    if root.is_file():
        return 1, hashlib.sha256(" ".join(map(str, quick_key(root))).encode()).hexdigest()[:16]
    skip = {str(p) for p in excludes}
    lines = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if os.path.join(folder, d) not in skip)
        for name in files:
            path = os.path.join(folder, name)
            if path in skip:
                continue
            rel = os.path.relpath(path, root)
            lines.append("\t".join([rel, *map(str, quick_key(path))]) + "\n")
    lines.sort()
    return len(lines), hashlib.sha256("".join(lines).encode()).hexdigest()[:16]


def path_entry(value: str, excludes: list[Path]) -> str:
    """``<absolute path> files=N listing=<digest>``, or ``<absolute path> absent``."""
    if not value:
        return "(none)"
    root = Path(os.path.realpath(value))
    if not root.exists():
        return f"{root} absent"
    n, digest = listing(root, [p for p in excludes if p != root])
    return f"{root} files={n} listing={digest}"


def compose(variables: list[str], paths: list[str], excludes: list[str]) -> dict[str, str]:
    """The stamp's entries, in the order given: variables as given, paths resolved and listed."""
    skip = [Path(os.path.realpath(p)) for p in excludes if p]
    entries: dict[str, str] = {}
    for item in variables:
        key, value = _split(item, "--var")
        entries[key] = " ".join(value.split())
    for item in paths:
        key, value = _split(item, "--path")
        entries[key] = path_entry(value, skip)
    if skip:
        entries[EXCLUDES] = " ".join(map(str, skip))
    return entries


def render(entries: dict[str, str]) -> str:
    return HEADER + "".join(f"{k}: {v}\n" for k, v in entries.items())


def parse(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(": ")
            out[key] = value
    return out


def changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """One phrase per changed key: ``SEED (42 -> 7)``, ``DATA (its files changed)``."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if a and b and a.partition(" ")[0] == b.partition(" ")[0] and "listing=" in b:
            was, now = a.partition(" ")[2], b.partition(" ")[2]
            out.append(f"{key} (its files changed: {was} -> {now})")
        else:
            out.append(f"{key} ({a or 'unset'} -> {b or 'unset'})")
    return out


def update(out: Path, entries: dict[str, str]) -> list[str]:
    """Write ``out`` when its content differs; return the changed keys' phrases."""
    text = render(entries)
    old = out.read_text() if out.is_file() else None
    if old == text:
        return []
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, out)  # whole or not at all
    return ["first run"] if old is None else changes(parse(old), entries)


def check(output: Path, stamps: list[Path]) -> None:
    """Raise ValueError unless ``output`` is newer than every stamp and their inputs are unchanged.

    The recorded paths are listed again with the recorded exclusions, so a data file
    replaced after ``output`` was made is caught without repeating the make variables.
    """
    if not output.is_file():
        raise ValueError(f"{output}: no such file; run the pipeline (make all / make smoke) first")
    for stamp in stamps:
        if not stamp.is_file():
            raise ValueError(f"{stamp}: no such stamp; rerun the make target that built {output}")
        old = parse(stamp.read_text())
        if stamp.stat().st_mtime_ns > output.stat().st_mtime_ns:
            raise ValueError(
                f"{output} is older than {stamp} (its inputs changed after it was made); rerun "
                "make with the same variables to rebuild it"
            )
        excludes = [Path(p) for p in old.get(EXCLUDES, "").split()]
        for key, value in old.items():
            if "listing=" not in value and not value.endswith(" absent"):
                continue
            now = path_entry(value.split()[0], excludes)
            if now != value:
                raise ValueError(
                    f"{output}: {key} changed since it was made ({'; '.join(changes({key: value}, {key: now}))}); "
                    "rerun make with the same variables to rebuild it"
                )


def recorded(stamps: list[Path], key: str) -> str:
    """The path or value ``key`` holds in the first stamp that records it."""
    for stamp in stamps:
        value = parse(stamp.read_text()).get(key) if stamp.is_file() else None
        if value:
            return value.split()[0]
    raise ValueError(f"{key} is not recorded in {', '.join(map(str, stamps))}")


class _InOrder(argparse.Action):
    """Keep --stamp/--var/--path/--exclude in command-line order: each applies to the last --stamp."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, "items", None) or [])
        items.append((self.dest, values))
        namespace.items = items


def groups(items: list[tuple[str, str]]) -> list[tuple[Path, dict[str, list[str]]]]:
    """``[(stamp file, {"var": [...], "path": [...], "exclude": [...]})]`` from ordered items."""
    out: list[tuple[Path, dict[str, list[str]]]] = []
    for kind, value in items:
        if kind == "stamp":
            out.append((Path(value), {"var": [], "path": [], "exclude": []}))
        elif not out:
            raise ValueError(f"--{kind} {value!r} comes before any --stamp FILE")
        else:
            out[-1][1][kind].append(value)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, text in [
        (
            "--stamp",
            "a stamp file to write (e.g. stamps/<EXP>/train-data); the flags after it fill it",
        ),
        ("--var", "KEY=VALUE, recorded as is"),
        ("--path", "KEY=PATH: its absolute path and a stat listing of its files"),
        ("--exclude", "a folder or file left out of this stamp's listings"),
    ]:
        parser.add_argument(flag, dest=flag[2:], action=_InOrder, help=text)
    parser.add_argument(
        "--check",
        metavar="OUTPUT",
        help="refuse OUTPUT if made before STAMPS or their inputs changed",
    )
    parser.add_argument(
        "--print", metavar="KEY", help="print the path or value KEY records in STAMPS"
    )
    parser.add_argument("stamps", nargs="*", help="stamp files read by --check and --print")


def run(args: argparse.Namespace) -> int:
    stamps = [Path(p) for p in args.stamps]
    if args.check:
        check(Path(args.check), stamps)
    if args.print:
        print(recorded(stamps, args.print))
    for out, spec in groups(getattr(args, "items", None) or []):
        changed = update(out, compose(spec["var"], spec["path"], spec["exclude"]))
        if changed and changed != ["first run"]:
            print(
                f"{out}: changed: {'; '.join(changed)}; the stages that read it run again",
                file=sys.stderr,
            )
    return 0
