"""Readers that validate the competition tables before any stage uses them; each error names
the file, the 1-based CSV line and the image (docs/pipeline.md)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from deepauc.io import is_safe_name

TRAIN_COLUMNS = [
    "image_name",
    "patient_id",
    "sex",
    "age_approx",
    "anatom_site_general_challenge",
    "diagnosis",
    "benign_malignant",
    "target",
]
TEST_COLUMNS = [
    "image_name",
    "patient_id",
    "sex",
    "age_approx",
    "anatom_site_general_challenge",
]
SUBMISSION_COLUMNS = ["image_name", "target"]
# The columns every reader of the folds table needs: which image sits in which fold.
FOLD_KEY = ("image_name", "fold")
SITE_COLUMN = "anatom_site_general_challenge"

SITES_2020 = [
    "head/neck",
    "upper extremity",
    "lower extremity",
    "torso",
    "palms/soles",
    "oral/genital",
]
SEXES = ["male", "female"]
BENIGN_MALIGNANT = ["benign", "malignant"]
AGE_RANGE = (0.0, 120.0)

# Text columns are read as strings so that an id such as "0001" is not turned into 1.
_TEXT_COLUMNS = [
    "image_name",
    "patient_id",
    "sex",
    SITE_COLUMN,
    "diagnosis",
    "benign_malignant",
    "source",
    "image_path",
    "lesion_id",
]
# Only empty cells mean "missing": "NA" or "null" are values to report, not to hide.
_NA_VALUES = ["", "nan", "NaN"]
# Columns that name an image, in the competition and in the ISIC tables.
ID_COLUMNS = ("image_name", "image", "image_id")
_SHOW = 5
# DataFrame.attrs key: the file line of each row (int64 bytes) of a table read by read_csv_table
CSV_LINES = "csv_lines"


def _file_lines(df: pd.DataFrame, positions) -> list[int]:
    """1-based file line numbers of the rows at ``positions``.

    :func:`read_csv_table` records each row's line (blank lines, which pandas skips,
    would otherwise shift every later number); a frame without that record, or whose
    index no longer points into it, counts the header as line 1 and one line per row.
    """
    record = df.attrs.get(CSV_LINES)
    lines = np.frombuffer(record, dtype=np.int64) if isinstance(record, bytes) else None
    labels = df.index
    if (
        lines is not None
        and pd.api.types.is_integer_dtype(labels)
        and len(labels)
        and labels.min() >= 0
        and labels.max() < len(lines)
    ):
        return [int(lines[labels[p]]) for p in positions]
    return [int(p) + 2 for p in positions]


def line_numbers(df: pd.DataFrame, mask) -> list[int]:
    """1-based CSV line numbers of the rows selected by ``mask`` (header = line 1)."""
    return _file_lines(df, np.flatnonzero(np.asarray(mask, dtype=bool)))


def describe_rows(
    df: pd.DataFrame, mask, value_column: str | None = None, limit: int = _SHOW
) -> str:
    """A short human list of the selected rows: ``line 3 (ISIC_0000001)`` ..., ``and N more``.

    With ``value_column`` each entry also shows the offending value.
    """
    mask = np.asarray(mask, dtype=bool)
    positions = np.flatnonzero(mask)
    id_column = next((c for c in ID_COLUMNS if c in df.columns), None)
    names = df[id_column].to_numpy() if id_column is not None else None
    parts = []
    for p, line in zip(positions[:limit], _file_lines(df, positions[:limit])):
        label = f"line {line}"
        if names is not None:
            label += f" ({names[p]})"
        if value_column is not None:
            value = df[value_column].iloc[p]
            # numpy scalars print as np.int64(2); show the plain Python value.
            label += f": {value.item() if isinstance(value, np.generic) else value!r}"
        parts.append(label)
    text = ", ".join(parts)
    if len(positions) > limit:
        text += f" and {len(positions) - limit} more"
    return text


def check_columns(df: pd.DataFrame, required: Sequence[str], name: str) -> None:
    """Raise ValueError naming the missing columns of ``df`` and any near spelling present."""
    missing = [c for c in required if c not in df.columns]
    if not missing:
        return
    extras = [str(c) for c in df.columns if c not in required]
    hints = []
    for col in missing:
        near = difflib.get_close_matches(col, extras, n=1, cutoff=0.6)
        hints.append(f"{col!r} (found {near[0]!r}; misspelt?)" if near else repr(col))
    raise ValueError(
        f"{name}: missing column(s) {', '.join(hints)}; "
        f"expected {list(required)}, found {[str(c) for c in df.columns]}"
    )


def read_csv_table(
    path: str | os.PathLike, required: Sequence[str], text_columns: Sequence[str] = ()
) -> pd.DataFrame:
    """Read a CSV with text columns as strings and only empty cells as NaN; check columns.

    The competition's text columns, :data:`ID_COLUMNS` and ``text_columns`` are read
    as strings.

    Raises FileNotFoundError if ``path`` does not exist and ValueError if it has no
    data rows, lacks a required column or names an image by a path (:func:`is_safe_name`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        df = pd.read_csv(
            path,
            dtype={
                c: str for c in [*_TEXT_COLUMNS, *ID_COLUMNS, *text_columns, *_id_columns(path)]
            },
            keep_default_na=False,
            na_values=_NA_VALUES,
        )
    except pd.errors.EmptyDataError as err:
        raise ValueError(f"{path}: empty file (no header)") from err
    except pd.errors.ParserError as err:
        reason = " ".join(str(err).split())
        raise ValueError(f"{path}: not a well-formed CSV ({reason})") from None
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
            "save it as UTF-8"
        ) from None
    df.columns = [str(c).strip() for c in df.columns]
    check_columns(df, required, str(path))
    if len(df) == 0:
        raise ValueError(f"{path}: no data rows")
    lines = _data_lines(path)
    if len(lines) == len(df):  # else quoted line breaks: keep counting one line per row
        df.attrs[CSV_LINES] = lines.tobytes()  # bytes: cheap to copy, compares as a whole
    for column in ID_COLUMNS:
        if column in df.columns:
            check_safe_names(df, str(path), column)
    return df


def _id_columns(path: Path) -> list[str]:
    """Header names that hold ids (``*_id``, ``*_name``): text, so ``0296243`` keeps its zero."""
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        return []  # the full read below reports the problem with its own message
    return [c for c in map(str, header) if c.strip().endswith(("_id", "_name"))]


def _data_lines(path: Path) -> np.ndarray:
    """1-based line numbers of a CSV's non-blank lines after the header."""
    with open(path, "rb") as fh:
        filled = [i for i, line in enumerate(fh, 1) if line.strip()]
    return np.asarray(filled[1:], dtype=np.int64)


def check_safe_names(df: pd.DataFrame, name: str, column: str) -> None:
    """Raise ValueError naming the lines whose ``column`` could address a path elsewhere."""
    values = df[column]
    bad = np.array([isinstance(v, str) and not is_safe_name(v) for v in values], dtype=bool)
    if bad.any():
        raise ValueError(
            f"{name}: column {column!r} holds a path, not a plain name (no '/', '\\', ':', "
            f"'..' or control characters allowed) at {describe_rows(df, bad, column)}"
        )


def check_unique_names(df: pd.DataFrame, name: str, column: str = "image_name") -> None:
    """Raise ValueError naming duplicated values of ``column`` and the lines they are on."""
    values = df[column]
    missing = values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
    if missing.any():
        raise ValueError(f"{name}: empty {column} at {describe_rows(df, missing)}")
    dup = values.duplicated(keep=False).to_numpy()
    if dup.any():
        groups = []
        for value in pd.unique(values[dup])[:_SHOW]:
            lines = line_numbers(df, (values == value).to_numpy())
            groups.append(f"{value} (lines {', '.join(map(str, lines))})")
        n = int(values[dup].nunique())
        more = f" and {n - _SHOW} more" if n > _SHOW else ""
        raise ValueError(f"{name}: duplicated {column}: {'; '.join(groups)}{more}")


def numeric_column(df: pd.DataFrame, column: str, name: str) -> pd.Series:
    """``df[column]`` as float; a non-empty cell that is not a number raises ValueError."""
    raw = df[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = (values.isna() & raw.notna()).to_numpy()
    if bad.any():
        raise ValueError(
            f"{name}: column {column!r} is not numeric at {describe_rows(df, bad, column)}"
        )
    return values.astype(float)


def check_vocabulary(df: pd.DataFrame, column: str, allowed: Sequence[str], name: str) -> None:
    """Raise ValueError naming the lines whose ``column`` is neither NaN nor in ``allowed``."""
    values = df[column]
    bad = (values.notna() & ~values.isin(list(allowed))).to_numpy()
    if bad.any():
        raise ValueError(
            f"{name}: unknown value in column {column!r} at "
            f"{describe_rows(df, bad, column)}; allowed: {list(allowed)} or empty"
        )


def map_vocabulary(
    df: pd.DataFrame, column: str, mapping: dict[str, str | None], name: str
) -> pd.Series:
    """``df[column]`` translated through ``mapping`` (a None target means missing).

    A value that is not a key of ``mapping`` raises ValueError naming its lines.
    """
    check_vocabulary(df, column, list(mapping), name)
    return df[column].map(lambda v: (mapping.get(v) or np.nan) if isinstance(v, str) else np.nan)


def one_hot(
    values: pd.Series,
    vocabulary: Sequence[str],
    columns: Sequence[str] | None = None,
    dtype: type = np.float64,
) -> pd.DataFrame:
    """One 0/1 column per word of ``vocabulary`` (named ``columns``, default the words).

    The frame has the index of ``values``; a value outside the vocabulary (NaN
    included) is 0 in every column.
    """
    names = list(vocabulary) if columns is None else list(columns)
    return pd.DataFrame(
        {name: (values == word).to_numpy(dtype=dtype) for name, word in zip(names, vocabulary)},
        index=values.index,
    )


def check_targets(df: pd.DataFrame, name: str, column: str = "target") -> pd.Series:
    """Return ``df[column]`` as int after checking that every value is 0 or 1."""
    values = numeric_column(df, column, name)
    bad = ~values.isin([0.0, 1.0]).to_numpy()
    if bad.any():
        raise ValueError(
            f"{name}: column {column!r} must be 0 or 1, bad at {describe_rows(df, bad, column)}"
        )
    return values.astype(int)


def check_age(df: pd.DataFrame, column: str, name: str) -> pd.Series:
    """``df[column]`` as float after checking it is numeric and in AGE_RANGE (or empty)."""
    age = numeric_column(df, column, name)
    out = (age.notna() & ((age < AGE_RANGE[0]) | (age > AGE_RANGE[1]))).to_numpy()
    if out.any():
        raise ValueError(
            f"{name}: {column} outside [{AGE_RANGE[0]:g}, {AGE_RANGE[1]:g}] at "
            f"{describe_rows(df.assign(**{column: age}), out, column)}"
        )
    return age


def validate_metadata(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """Check patient_id, sex, age_approx and site of a train/test frame; return a clean copy.

    patient_id must be present on every row; sex must be in SEXES, site in
    SITES_2020 and age in AGE_RANGE, each or missing (NaN).
    """
    df = df.copy()
    check_unique_names(df, name)
    pid = df["patient_id"]
    no_pid = (pid.isna() | (pid.astype(str).str.strip() == "")).to_numpy()
    if no_pid.any():
        raise ValueError(f"{name}: empty patient_id at {describe_rows(df, no_pid)}")
    df["age_approx"] = check_age(df, "age_approx", name)
    check_vocabulary(df, "sex", SEXES, name)
    check_vocabulary(df, SITE_COLUMN, SITES_2020, name)
    return df


def validate_train_frame(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """Validate a train-format frame (see :func:`read_train_csv`); return a clean copy.

    ``name`` is used in error messages (normally the file path).
    """
    check_columns(df, TRAIN_COLUMNS, name)
    if len(df) == 0:
        raise ValueError(f"{name}: no data rows")
    df = validate_metadata(df, name)
    df["target"] = check_targets(df, name)
    check_vocabulary(df, "benign_malignant", BENIGN_MALIGNANT, name)
    bm = df["benign_malignant"]
    clash = (bm.notna() & ((bm == "malignant") != (df["target"] == 1))).to_numpy()
    if clash.any():
        raise ValueError(
            f"{name}: benign_malignant disagrees with target at "
            f"{describe_rows(df, clash, 'benign_malignant')}"
        )
    return df


def read_train_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a competition-format ``train.csv``.

    Checks: the eight competition columns exist (a misspelt one is reported with
    its near match), at least one row, unique non-empty image_name, non-empty
    patient_id, target in {0, 1}, age_approx in [0, 120] or empty, sex in SEXES
    or empty, site in SITES_2020 or empty, benign_malignant consistent with
    target. Returns the frame with ``target`` as int and ``age_approx`` as float.
    """
    df = read_csv_table(path, TRAIN_COLUMNS)
    return validate_train_frame(df, str(path))


def read_test_csv(path: str | os.PathLike, check_metadata: bool = True) -> pd.DataFrame:
    """Read a competition-format ``test.csv``: its five columns, unique image_name and, unless
    ``check_metadata`` is False, the metadata checks of train (:func:`validate_metadata`).

    The metadata model passes False: its features check sex, site and age by rules of their own.
    """
    df = read_csv_table(path, TEST_COLUMNS)
    if not check_metadata:
        check_unique_names(df, str(path))
        return df
    return validate_metadata(df, str(path))


def read_folds_table(
    path: str | os.PathLike, required: Sequence[str] = FOLD_KEY, n_folds: int | None = None
) -> pd.DataFrame:
    """Read the folds table ``deepauc folds`` writes (one row per training image and its fold).

    Ids are text (``0296243`` keeps its zero); the ``required`` columns must exist (the error
    lists them). With ``n_folds``, ``target`` (0/1) and ``fold`` (:func:`check_fold_table`)
    are checked and come back as int; other columns are as read: each stage checks its own.
    """
    table = read_csv_table(path, required)
    if n_folds is not None:
        table["target"] = check_targets(table, str(path))
        table["fold"] = check_fold_table(table, str(path), n_folds)
    return table


def read_sample_submission(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``sample_submission.csv``: columns image_name and target, unique names.

    The target column of a sample is a placeholder; it only has to be numeric.
    """
    df = read_csv_table(path, SUBMISSION_COLUMNS)
    check_unique_names(df, str(path))
    df["target"] = numeric_column(df, "target", str(path))
    return df


def check_fold_table(df: pd.DataFrame, name: str, n_folds: int) -> pd.Series:
    """``df['fold']`` as int after checking it against ``n_folds`` and the patients.

    Folds 0..n_folds-1 must each hold rows (-1 marks training-only rows); a patient
    whose rows sit in two of those folds would be scored by a model trained on it.
    """
    folds = numeric_column(df, "fold", name)
    bad = (folds.isna() | (folds != folds.round())).to_numpy()
    if bad.any():
        raise ValueError(
            f"{name}: column 'fold' must be an integer at {describe_rows(df, bad, 'fold')}"
        )
    folds = folds.astype(int)
    found = sorted(int(f) for f in folds.unique() if f >= 0)
    if found != list(range(n_folds)) or (folds < -1).any():
        raise ValueError(
            f"{name}: folds {found} (plus -1 for training-only rows) do not match n_folds="
            f"{n_folds}; rerun `deepauc folds --n-folds {n_folds}` or set n_folds={len(found)}"
        )
    if "patient_id" in df.columns:
        check_patients_in_one_fold(df.assign(fold=folds), name)
    return folds


def check_patients_in_one_fold(df: pd.DataFrame, name: str) -> None:
    """Raise ValueError naming the patients whose rows sit in more than one fold (>= 0)."""
    pid = df["patient_id"]
    rows = df[(df["fold"] >= 0).to_numpy() & pid.notna().to_numpy()]
    spread = rows.groupby("patient_id")["fold"].nunique()
    split = spread[spread > 1]
    if len(split):
        shown = ", ".join(
            f"{p} (folds {sorted(set(rows.loc[rows['patient_id'] == p, 'fold']))})"
            for p in split.index[:_SHOW]
        )
        more = f" and {len(split) - _SHOW} more" if len(split) > _SHOW else ""
        raise ValueError(
            f"{name}: patient(s) split across folds, a leak into validation: {shown}{more}; "
            "rerun `deepauc folds`"
        )
