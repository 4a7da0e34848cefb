"""Submission files: validated against the sample submission (``deepauc validate-submission``),
written atomically.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd

from deepauc.data.tables import SUBMISSION_COLUMNS, describe_rows, read_sample_submission
from deepauc.io import write_csv

_SHOW = 5


def _some(values, limit: int = _SHOW) -> str:
    values = list(values)
    text = ", ".join(map(str, values[:limit]))
    return text + (f" and {len(values) - limit} more" if len(values) > limit else "")


def validate_submission(
    sub: pd.DataFrame, sample: pd.DataFrame, name: str = "submission"
) -> pd.DataFrame:
    """Check ``sub`` against ``sample``; return it as (image_name, float target) in the
    sample's row order. Raises ValueError naming the first problem found."""
    cols = [str(c) for c in sub.columns]
    if sorted(cols) != sorted(SUBMISSION_COLUMNS) or len(cols) != 2:
        raise ValueError(f"{name}: columns must be exactly {SUBMISSION_COLUMNS}, found {cols}")
    sub = sub.reset_index(drop=True)
    ids = sub["image_name"].astype(str)
    dup = ids.duplicated(keep=False)
    if dup.any():
        raise ValueError(
            f"{name}: {int(ids[dup].nunique())} duplicated image_name(s): {_some(pd.unique(ids[dup]))}"
        )
    expected = pd.Index(sample["image_name"].astype(str))
    missing = expected.difference(pd.Index(ids), sort=False)
    if len(missing):
        raise ValueError(
            f"{name}: {len(missing)} of {len(expected)} image_name(s) of the sample are missing: "
            f"{_some(missing)}"
        )
    extra = pd.Index(ids).difference(expected, sort=False)
    if len(extra):
        raise ValueError(f"{name}: {len(extra)} image_name(s) not in the sample: {_some(extra)}")
    raw = sub["target"]
    target = pd.to_numeric(raw, errors="coerce")
    nonnum = (target.isna() & raw.notna()).to_numpy()
    if nonnum.any():
        raise ValueError(f"{name}: non-numeric target at {describe_rows(sub, nonnum, 'target')}")
    nan = target.isna().to_numpy()
    if nan.any():
        raise ValueError(f"{name}: NaN/empty target at {describe_rows(sub, nan)}")
    target = target.astype(float)
    bad = ~np.isfinite(target.to_numpy()) | (target < 0).to_numpy() | (target > 1).to_numpy()
    if bad.any():
        raise ValueError(
            f"{name}: target outside [0, 1] at {describe_rows(sub.assign(target=target), bad, 'target')}"
        )
    out = pd.DataFrame({"image_name": ids, "target": target}).set_index("image_name")
    return out.loc[expected].reset_index()


def read_submission(path: str | os.PathLike) -> pd.DataFrame:
    """Read a submission CSV as text (so a bad cell is reported, not silently parsed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError as err:
        raise ValueError(f"{path}: empty file") from err


def write_submission(df: pd.DataFrame, sample: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Validate ``df`` against ``sample`` and write it atomically in the sample's order."""
    valid = validate_submission(df, sample, name=str(path))
    return write_csv(valid, path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sample", required=True, help="the competition's sample_submission.csv")
    parser.add_argument("submission", help="submission CSV to check")


def run(args: argparse.Namespace) -> int:
    sample = read_sample_submission(args.sample)
    sub = validate_submission(read_submission(args.submission), sample, name=args.submission)
    print(
        f"{args.submission}: valid ({len(sub)} rows, target in "
        f"[{sub['target'].min():.4g}, {sub['target'].max():.4g}])"
    )
    return 0
