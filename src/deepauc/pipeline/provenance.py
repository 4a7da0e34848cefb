"""Records of what made each output (config, package version, fold assignment, input weights),
and the checks that refuse an output made from other inputs."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd

from deepauc.data.source_stamps import file_sha256, read_sources, sources_files
from deepauc.data.tables import describe_rows, read_folds_table
from deepauc.io import load_torch, write_text

PROVENANCE_FILE = "provenance.json"


class ProvenanceMismatch(ValueError):
    """An output was made from other inputs than the current ones."""


def package_version() -> str:
    from deepauc import __version__

    return __version__


def fold_fingerprint(table: pd.DataFrame) -> str:
    """Hash of the sorted (image_name, fold) pairs of a training table.

    Two tables share it exactly when every image sits in the same fold, whatever the
    row order or the other columns.
    """
    pairs = sorted(zip(table["image_name"].astype(str), table["fold"].astype(int)))
    text = "".join(f"{name}\t{fold}\n" for name, fold in pairs)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def folds_of_table(path: str | os.PathLike) -> str:
    """:func:`fold_fingerprint` of the training table at ``path`` (image names read as text)."""
    return folds_of_frame(read_folds_table(path, ["image_name", "fold"]), str(path))


def folds_of_frame(table: pd.DataFrame, name: str) -> str:
    """:func:`fold_fingerprint` of a folds table already read (``name``: its file, for errors)."""
    folds = pd.to_numeric(table["fold"], errors="coerce")
    bad = (folds.isna() | (folds != folds.round())).to_numpy()
    if bad.any():
        raise ValueError(
            f"{name}: column 'fold' must be an integer at {describe_rows(table, bad, 'fold')}"
        )
    return fold_fingerprint(table.assign(fold=folds.astype(int)))


def file_fingerprint(path: str | os.PathLike) -> str:
    """Hash of a file's bytes (e.g. the stage-1 ``model.pt`` a stage-2 run starts from)."""
    return file_sha256(path)[:16]


def _hash_lines(lines: list[str]) -> str:
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()[:16]


def labels_fingerprint(table: pd.DataFrame) -> str:
    """Hash of the sorted (image_name, target) pairs: changes when a label is fixed."""
    names, targets = table["image_name"].astype(str), table["target"].astype(int)
    return _hash_lines([f"{n}\t{t}\n" for n, t in zip(names, targets)])


def diagnoses_fingerprint(table: pd.DataFrame) -> str:
    """Hash of the sorted (image_name, diagnosis) pairs: the auxiliary classes' source
    (a table without the column hashes as such; training then stops naming it)."""
    names = table["image_name"].astype(str)
    diagnoses = table.get("diagnosis", pd.Series("-", index=table.index)).fillna("").astype(str)
    return _hash_lines([f"{n}\t{d}\n" for n, d in zip(names, diagnoses)])


def oof_rows_fingerprint(oof: pd.DataFrame) -> str:
    """Hash of an OOF file's rows (name, fold, target, score): ties the record to the file.

    Scores are hashed at 6 significant digits, which survive the CSV round trip of float32, so an
    OOF file of another experiment under the same folds does not match this record.
    """
    rows = zip(
        oof["image_name"].astype(str),
        oof["fold"].astype(int),
        oof["target"].astype(int),
        oof["pred"],
    )
    return _hash_lines([f"{n}\t{f}\t{t}\t{float(p):.5e}\n" for n, f, t, p in rows])


def write_pred_provenance(out_dir: str | os.PathLike, record: dict, oof: pd.DataFrame) -> Path:
    """Write ``<out_dir>/provenance.json``: ``record`` plus the fingerprint of ``oof``'s rows."""
    full = {
        **record,
        "labels": labels_fingerprint(oof),
        "oof_rows": oof_rows_fingerprint(oof),
        "version": package_version(),
    }
    return write_text(
        json.dumps(full, indent=1, sort_keys=True) + "\n", Path(out_dir) / PROVENANCE_FILE
    )


def read_pred_provenance(pred_dir: str | os.PathLike, oof: pd.DataFrame) -> dict | None:
    """The record of a prediction directory, checked against its ``oof.csv`` rows.

    None when the directory has no record (written by hand or by an older version).
    """
    path = Path(pred_dir) / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{path}: not a valid provenance record ({err}); rerun the stage that wrote {pred_dir}"
        ) from None
    if not isinstance(record, dict) or "folds" not in record:
        raise ValueError(
            f"{path}: not a valid provenance record (no 'folds'); rerun the stage that wrote {pred_dir}"
        )
    if record.get("oof_rows") != oof_rows_fingerprint(oof):
        raise ProvenanceMismatch(
            f"{Path(pred_dir) / 'oof.csv'} does not hold the rows its {PROVENANCE_FILE} "
            f"records (edited or copied after it was written); delete {pred_dir} and rerun "
            "the stage that writes it"
        )
    return record


def common_folds(records: dict[str, dict | None]) -> str | None:
    """The one fold fingerprint shared by the recorded prediction dirs (None if none recorded).

    Raises ProvenanceMismatch naming two directories made under different fold assignments.
    """
    seen: dict[str, str] = {}
    for name, record in records.items():
        if record is not None:
            seen.setdefault(record["folds"], name)
    if len(seen) > 1:
        (fp_a, a), (fp_b, b) = list(seen.items())[:2]
        raise ProvenanceMismatch(
            f"{a} and {b} were predicted under different fold assignments "
            f"({fp_a} vs {fp_b}); rerun the stale one's predict or meta after the folds "
            "table changed"
        )
    return next(iter(seen), None)


def check_model_record(saved: dict, path: Path, expected: dict, train_csv: str, redo: str) -> None:
    """Raise ProvenanceMismatch unless ``saved`` (a loaded ``model.pt``) matches ``expected``.

    ``expected`` holds ``fingerprint`` (config), ``folds`` and ``init_from`` (stage-1
    weights or None); ``redo`` says what to delete to retrain.
    """
    if saved.get("fingerprint") != expected["fingerprint"]:
        raise ProvenanceMismatch(
            f"{path} was trained with a different config than the current one; "
            f"delete {redo} to retrain (or restore the config it came from)"
        )
    record = saved.get("provenance")
    if not isinstance(record, dict):
        raise ProvenanceMismatch(
            f"{path} has no record of the fold assignment it trained under; delete {redo} to retrain"
        )
    if record.get("folds") != expected["folds"]:
        raise ProvenanceMismatch(
            f"{path} was trained under another fold assignment ({train_csv} changed); "
            f"delete {redo} to retrain"
        )
    checked = [("labels", "labels", train_csv), ("diagnoses", "diagnoses", train_csv)]
    checked += [("images", "cached images", train_csv)]
    checked += [("pseudo", "pseudo-labelled test rows", "data.pseudo_csv")]
    for key, what, table in checked:
        if key in expected and record.get(key) != expected[key]:
            cause = (
                f"has no record of the {what} it trained on (an older version made it)"
                if key not in record
                else f"was trained on other {what} than the current ones ({table} or the "
                "cache changed since)"
            )
            raise ProvenanceMismatch(f"{path} {cause}; delete {redo} to retrain")
    if "init_from" in expected and record.get("init_from") != expected["init_from"]:
        raise ProvenanceMismatch(
            f"{path} was trained from other stage-1 weights than the current ones; "
            f"delete {redo} to retrain"
        )


def _fold_rows(cfg) -> pd.DataFrame:
    """The rows any fold of ``cfg`` trains or validates on (fold -1 rows only with external)."""
    table = read_folds_table(cfg.data.train_csv, ["image_name", "target", "fold"])
    folds = pd.to_numeric(table["fold"], errors="coerce")
    return table[((folds >= 0) | bool(cfg.data.use_external)).to_numpy()]


def cache_fingerprint(cache_dir, size: int, names, skip: str | None = None) -> str:
    """Hash of the cache's source stamps of ``names`` at ``size``.

    The stamps come from every ``sources_<stem>.csv`` of ``cache_dir/<size>`` but
    ``sources_<skip>.csv`` (the test table): ``(image_name, source_sha256)`` where that
    column exists, else ``(image_name, source_bytes, source_mtime_ns)``. A name no record
    lists hashes as ``-`` (a cache written before records existed).
    """
    stamps: dict[str, set[str]] = {}
    for path in sources_files(cache_dir, size):
        if skip is not None and path.stem == f"sources_{skip}":
            continue
        table = read_sources(path)
        if "source_sha256" in table.columns:
            cols = [table["source_sha256"].astype(str)]
        else:
            cols = [table[c].astype(str) for c in ("source_bytes", "source_mtime_ns") if c in table]
        for name, *parts in zip(table["image_name"], *cols):
            stamps.setdefault(name, set()).add(" ".join(parts))
    wanted = sorted(set(map(str, names)))
    return _hash_lines([f"{n}\t{'|'.join(sorted(stamps.get(n, {'-'})))}\n" for n in wanted])


def training_record(cfg, fold: int) -> dict:
    """What fold ``fold`` of experiment ``cfg`` trains from: config, folds, labels, cached
    images (their source stamps), stage-1 weights.

    For stage 2 the stage-1 ``model.pt`` must itself have trained under the current fold
    assignment, else its weights have seen this fold's validation rows.
    """
    folds = folds_of_table(cfg.data.train_csv)
    rows = _fold_rows(cfg)
    labels = labels_fingerprint(rows)
    init_from = None
    if cfg.model.init_from:
        stage1 = Path(str(cfg.model.init_from)) / f"fold{fold}" / "model.pt"
        if stage1.is_file():
            saved = load_torch(stage1)
            check_model_record(
                saved,
                stage1,
                {"fingerprint": saved.get("fingerprint"), "folds": folds, "labels": labels},
                cfg.data.train_csv,
                str(cfg.model.init_from),
            )
            init_from = file_fingerprint(stage1)
    # the auxiliary classes come from the diagnoses: keyed only where used, so other runs'
    # records stay as they were
    aux = {"diagnoses": diagnoses_fingerprint(rows)} if cfg.model.aux_classes else {}
    return {
        **aux,
        "fingerprint": cfg.fingerprint(),
        "folds": folds,
        "labels": labels,
        "images": cache_fingerprint(
            cfg.data.cache_dir,
            cfg.data.image_size,
            rows["image_name"],
            Path(cfg.data.test_csv).stem,
        ),
        "init_from": init_from,
        "version": package_version(),
    }
