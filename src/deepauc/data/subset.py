"""A handful of rows per source of a training table, and of the test table with its sample
submission: the inputs of the smoke run (``make smoke``), which checks every stage on
a user's data layout in minutes. Run as ``python -m deepauc.data.subset``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from deepauc.data.tables import read_sample_submission, read_test_csv, read_train_csv
from deepauc.io import write_csv


def subset_train(df: pd.DataFrame, per_source: int, malignant: int, seed: int) -> pd.DataFrame:
    """Up to ``per_source`` rows of each ``source``, of which up to ``malignant`` are
    malignant images of distinct patients (so that every fold can get one); rows keep
    their order."""
    rng = np.random.default_rng(seed)
    source = df["source"].fillna("competition") if "source" in df.columns else None
    picked: list[np.ndarray] = []
    groups = [df.index] if source is None else [g.index for _, g in df.groupby(source, sort=False)]
    for index in groups:
        rows = df.loc[index]
        positives = rows[rows["target"] == 1].drop_duplicates("patient_id")
        n_pos = min(malignant, len(positives), per_source)
        pos = rng.choice(positives.index.to_numpy(), n_pos, replace=False)
        negatives = rows.index[rows["target"] == 0].to_numpy()
        n_neg = min(per_source - n_pos, len(negatives))
        picked += [pos, rng.choice(negatives, n_neg, replace=False)]
    keep = np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)
    return df.loc[keep].reset_index(drop=True)


def subset_test(
    test: pd.DataFrame, sample: pd.DataFrame, n: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``n`` test rows (in their order) and the sample submission's rows for them."""
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(test), min(n, len(test)), replace=False))
    part = test.iloc[keep].reset_index(drop=True)
    chosen = set(part["image_name"])
    return part, sample[sample["image_name"].isin(chosen)].reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepauc.data.subset", description=__doc__)
    parser.add_argument("--train-csv", required=True, help="training table (external output)")
    parser.add_argument("--test-csv", required=True)
    parser.add_argument("--sample", required=True, help="sample_submission.csv")
    parser.add_argument("--out-train", required=True, help="the training rows kept")
    parser.add_argument("--out-dir", required=True, help="writes test.csv, sample_submission.csv")
    parser.add_argument("--per-source", type=int, default=16, help="rows per source (16)")
    parser.add_argument("--malignant", type=int, default=4, help="malignant rows per source (4)")
    parser.add_argument("--n-test", type=int, default=12, help="test rows (12)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train = subset_train(read_train_csv(args.train_csv), args.per_source, args.malignant, args.seed)
    test, sample = subset_test(
        read_test_csv(args.test_csv), read_sample_submission(args.sample), args.n_test, args.seed
    )
    out = Path(args.out_dir)
    write_csv(test, out / "test.csv")
    write_csv(sample, out / "sample_submission.csv")
    write_csv(train, args.out_train)
    counts = train.groupby(train.get("source", pd.Series("competition", index=train.index)))
    print(counts["target"].agg(["size", "sum"]).rename(columns={"sum": "malignant"}).to_string())
    print(f"wrote {args.out_train} ({len(train)} rows), {out}/test.csv ({len(test)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
