"""``deepauc folds``: patient-leak-free, triple-stratified k-fold assignment, with duplicate
groups kept in one fold (the method: docs/pipeline.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from deepauc.data import duplicates as dup
from deepauc.data.tables import read_train_csv
from deepauc.io import write_csv, write_text
from deepauc.markdown import markdown_table

N_SIZE_BUCKETS = 4
BENIGN_SLACK = 1
# Largest --dup-threshold accepted: a quarter of the hash bits. Unrelated images differ
# in about half of them, so a larger bound calls a large share of them copies.
MAX_THRESHOLD = 64
# A fold whose image count leaves MIN_SIZE_RATIO..MAX_SIZE_RATIO x the mean, or whose
# malignant images fall under max(1, MIN_POSITIVE_RATIO x the mean), is refused: the
# greedy rule keeps folds within a few percent unless one patient or group is too big.
MAX_SIZE_RATIO = 1.5
MIN_SIZE_RATIO = 0.5
MIN_POSITIVE_RATIO = 0.3


class UnbalancedFoldsError(ValueError):
    """The folds cannot be balanced (sizes or malignant counts per fold)."""


def _validated_rows(df: pd.DataFrame, include_external: bool) -> np.ndarray:
    """Boolean mask of the rows that take part in the assignment."""
    if "source" not in df.columns or include_external:
        return np.ones(len(df), dtype=bool)
    return (df["source"].fillna("competition") == "competition").to_numpy()


def patient_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per patient: images, malignant images, external flag and size bucket (0..3)."""
    is_ext = (
        rows["source"].fillna("competition") != "competition"
        if "source" in rows.columns
        else pd.Series(False, index=rows.index)
    )
    pat = (
        rows.assign(_ext=is_ext)
        .groupby("patient_id", sort=True)
        .agg(images=("target", "size"), malignant=("target", "sum"), external=("_ext", "all"))
    )
    edges = np.unique(np.quantile(pat["images"], np.linspace(0, 1, N_SIZE_BUCKETS + 1)[1:-1]))
    pat["bucket"] = np.searchsorted(edges, pat["images"].to_numpy(), side="left")
    pat["has_malignant"] = pat["malignant"] > 0
    return pat


def _assign_patients(pat: pd.DataFrame, n_folds: int, rng: np.random.Generator) -> pd.Series:
    """Fold of each patient by the greedy stratified rule of docs/pipeline.md."""
    order = rng.permutation(len(pat))
    pat = pat.iloc[order].copy()
    pat["_rank"] = np.arange(len(pat))
    pat = pat.sort_values(
        ["has_malignant", "bucket", "external", "images", "_rank"],
        ascending=[False, False, True, False, True],
        kind="stable",
    )
    strata = pat.groupby(["has_malignant", "external", "bucket"], sort=False).ngroup().to_numpy()
    n_strata = int(strata.max()) + 1 if len(strata) else 0
    stratum_count = np.zeros((n_strata, n_folds), dtype=np.int64)
    class_count = np.zeros((2, n_folds), dtype=np.int64)
    mal_images = np.zeros(n_folds, dtype=np.int64)
    images = np.zeros(n_folds, dtype=np.int64)
    folds = np.empty(len(pat), dtype=np.int64)
    sizes = pat["images"].to_numpy()
    malignant = pat["malignant"].to_numpy()
    has_mal = pat["has_malignant"].to_numpy().astype(int)
    keys: tuple[np.ndarray, ...]
    for i in range(len(pat)):
        s, c = strata[i], has_mal[i]
        if c:
            # np.lexsort sorts by the last key first: the list is (e), (d), (c), (b), (a).
            keys = (rng.random(n_folds), images, mal_images, class_count[c], stratum_count[s])
        else:
            # Benign strata may be uneven by one more patient (BENIGN_SLACK) so that
            # image counts can even out; benign patients are plentiful, so this
            # costs nothing visible in the ratios.
            over = stratum_count[s] > stratum_count[s].min() + BENIGN_SLACK
            keys = (rng.random(n_folds), class_count[c], images, over)
        f = int(np.lexsort(keys)[0])
        folds[i] = f
        stratum_count[s, f] += 1
        class_count[c, f] += 1
        mal_images[f] += malignant[i]
        images[f] += sizes[i]
    return pd.Series(folds, index=pat.index, name="fold")


def assign_folds(
    df: pd.DataFrame,
    n_folds: int,
    seed: int,
    include_external: bool = False,
    groups: pd.Series | None = None,
) -> pd.DataFrame:
    """Copy of ``df`` with an integer ``fold`` column (0..n_folds-1, or -1).

    ``df`` needs ``patient_id`` and ``target``; see docs/pipeline.md for the
    method. ``groups`` (one label per row, e.g. :func:`deepauc.data.duplicates.group_labels`)
    replaces the patient id as the unit kept in one fold. Raises ValueError if a fold
    would get no malignant image.
    """
    if n_folds < 2:
        raise ValueError(f"--n-folds must be at least 2, got {n_folds}")
    for col in ("patient_id", "target"):
        if col not in df.columns:
            raise ValueError(f"missing column {col!r}")
    if df["patient_id"].isna().any():
        raise ValueError("empty patient_id in the input (validate it with read_train_csv)")
    unit = df if groups is None else df.assign(patient_id=groups.astype(str))
    mask = _validated_rows(df, include_external)
    rows = unit[mask]
    pat = patient_table(rows)
    if len(pat) < n_folds:
        raise ValueError(f"only {len(pat)} patient(s) for {n_folds} folds")
    rng = np.random.default_rng(seed)
    patient_fold = _assign_patients(pat, n_folds, rng)

    # External rows of a validated patient follow that patient (leak-free CV), so
    # every row whose patient has a fold takes it, and only the others get -1.
    fold = unit["patient_id"].map(patient_fold).fillna(-1).to_numpy().astype(np.int64)
    out = df.copy()
    if "source" not in out.columns:
        # Later stages tell validated from external rows by `source`: make it explicit.
        out["source"] = "competition"
    out["fold"] = fold

    valid = out[out["fold"] >= 0]
    positives = valid.groupby("fold")["target"].sum().reindex(range(n_folds), fill_value=0)
    empty = [int(f) for f in positives.index[positives.to_numpy() == 0]]
    if empty:
        n_pos = int(pat["has_malignant"].sum())
        raise ValueError(
            f"fold(s) {empty} would get no malignant image: only {n_pos} patient(s) "
            f"with a malignant image for {n_folds} folds; use --n-folds {max(2, n_pos)} or fewer"
        )
    return out


def tfrecord_folds(df: pd.DataFrame, n_folds: int, seed: int) -> pd.DataFrame:
    """Copy of ``df`` with the community's folds: the resized sets' TFRecord groups (column
    ``tfrecord``, patient-grouped and stratified by their publisher) dealt into ``n_folds``
    folds as scikit-learn's ``KFold(n_folds, shuffle=True, random_state=seed)`` deals the
    sorted group numbers (15 into 5 at seed 42: the public notebooks' CV). Rows of other
    sources never validate (fold -1)."""
    from sklearn.model_selection import KFold

    from deepauc.data.tables import describe_rows, numeric_column

    if "tfrecord" not in df.columns:
        raise ValueError(
            "--scheme tfrecord needs a 'tfrecord' column (a resized jpeg-melanoma-NxN train.csv)"
        )
    out = df.copy()
    if "source" not in out.columns:
        out["source"] = "competition"
    competition = (out["source"].fillna("competition") == "competition").to_numpy()
    group = numeric_column(out, "tfrecord", "--scheme tfrecord")
    bad = competition & ~(group.notna() & (group >= 0) & (group == group.round())).to_numpy()
    if bad.any():
        raise ValueError(
            f"tfrecord must be a whole number >= 0 on competition rows: {describe_rows(out, bad, 'tfrecord')}"
        )
    groups = np.sort(group[competition].unique()).astype(np.int64)
    if len(groups) < n_folds:
        raise ValueError(f"only {len(groups)} tfrecord group(s) for {n_folds} folds")
    splits = KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(groups)
    fold_of = {int(groups[i]): k for k, (_, valid) in enumerate(splits) for i in valid}
    fold = np.full(len(out), -1, dtype=np.int64)
    fold[competition] = group[competition].astype(np.int64).map(fold_of).to_numpy()
    out["fold"] = fold
    return out


def shared_units(out: pd.DataFrame, unit: pd.Series) -> int:
    """How many units (patients, duplicate groups) have validated rows in two folds or more."""
    valid = (out["fold"] >= 0).to_numpy()
    per_unit = pd.Series(out["fold"].to_numpy()[valid]).groupby(unit.to_numpy()[valid]).nunique()
    return int((per_unit > 1).sum())


def check_balance(out: pd.DataFrame, n_folds: int, unit: pd.Series | None = None) -> None:
    """Raise UnbalancedFoldsError when a fold holds more than MAX_SIZE_RATIO or fewer than
    MIN_SIZE_RATIO times the mean images per fold, or fewer malignant images than
    max(1, MIN_POSITIVE_RATIO x the mean): its CV score would not be comparable.

    The message names the largest units kept whole (``unit``: duplicate groups, else
    patients), the usual cause: one unit too large for a fold.
    """
    valid = out["fold"] >= 0
    folds_ = out.loc[valid, "fold"]
    sizes = folds_.value_counts().reindex(range(n_folds), fill_value=0)
    positives = out.loc[valid].groupby("fold")["target"].sum()
    positives = positives.reindex(range(n_folds), fill_value=0)
    mean_size, mean_pos = sizes.mean(), positives.mean()
    bad_size = (sizes > MAX_SIZE_RATIO * mean_size) | (sizes < MIN_SIZE_RATIO * mean_size)
    bad_pos = positives < max(1.0, MIN_POSITIVE_RATIO * mean_pos)
    if not (bad_size.any() or bad_pos.any()):
        return
    units = (out["patient_id"] if unit is None else unit).astype(str)[valid.to_numpy()]
    largest = units.value_counts().head(3)
    kind = "patient" if unit is None else "group"
    raise UnbalancedFoldsError(
        f"unbalanced folds: images per fold {sizes.tolist()} (mean {mean_size:.0f}, allowed "
        f"{MIN_SIZE_RATIO:g}x..{MAX_SIZE_RATIO:g}x), malignant per fold {positives.tolist()} "
        f"(at least max(1, {MIN_POSITIVE_RATIO:.0%} of the mean {mean_pos:.1f})); largest "
        f"{kind}s kept whole: "
        + ", ".join(f"{k} ({v} images)" for k, v in largest.items())
        + "; a group that large is usually chained near-duplicates (lower --dup-threshold) "
        "or too few patients for --n-folds"
    )


def image_files(df: pd.DataFrame, image_root: str | Path) -> list[str]:
    """Each row's image: ``image_root/image_path``, else the competition's
    ``image_root/jpeg/train/<image_name>.jpg``; all must exist."""
    root = Path(image_root)
    default = "jpeg/train/" + df["image_name"].astype(str) + ".jpg"
    rel = df["image_path"].fillna(default) if "image_path" in df.columns else default
    files = [str(root / p) for p in rel]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image file(s) not found under --image-root {root}: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
        )
    return files


def resolve_duplicates(
    df: pd.DataFrame,
    image_root: str | Path | None = None,
    hash_cache: str | Path | None = None,
    duplicates_csv: str | Path | None = None,
    threshold: int = dup.DEFAULT_THRESHOLD,
    workers: int = 4,
    min_similarity: float = dup.DEFAULT_MIN_SIMILARITY,
    max_group: int | None = None,
) -> tuple[pd.DataFrame, pd.Series, dict]:
    """Rows kept, their duplicate-joined group labels, and a summary for the report.

    Drops the rows marked ``tfrecord == -1`` and the external copies of competition
    images; pairs come from ``duplicates_csv`` and, with ``image_root``, the image hashes
    confirmed by thumbnail correlation. Raises DuplicateChainError when a group joins
    more than ``max_group`` patients (default :func:`duplicates.group_bound`).
    """
    check_threshold(threshold)
    check_similarity(min_similarity)
    summary: dict = {"threshold": threshold, "hashed": image_root is not None}
    summary["min_similarity"] = min_similarity
    if "tfrecord" in df.columns:
        marked = (pd.to_numeric(df["tfrecord"], errors="coerce") == -1).to_numpy()
        summary["marked"] = int(marked.sum())
        df = df[~marked].reset_index(drop=True)
    pairs = [np.empty((0, 2), dtype=np.int64)]
    if duplicates_csv is not None:
        pairs.append(dup.read_published_pairs(duplicates_csv, df["image_name"].astype(str)))
        summary["published"] = len(pairs[-1])
    if image_root is not None:
        is_comp = df.get("source", pd.Series("competition", index=df.index)) == "competition"
        files = image_files(df, image_root)
        hashes = dup.hash_images(files, hash_cache, workers)
        candidates = dup.table_pairs(hashes, np.asarray(is_comp), threshold, variants=True)
        confirmed, _ = dup.confirmed_pairs(files, candidates, min_similarity, workers)
        pairs.append(confirmed)
        summary["hash_candidates"] = len(candidates)
        summary["hash_pairs"] = len(confirmed)
    found = np.concatenate(pairs)
    copies = dup.external_copies(df, found)
    keep = np.ones(len(df), dtype=bool)
    keep[copies["row"].to_numpy()] = False
    new_index = np.cumsum(keep) - 1
    found = found[keep[found[:, 0]] & keep[found[:, 1]]]
    df = df[keep].reset_index(drop=True)
    groups = dup.group_labels(df["patient_id"], new_index[found])
    bound = dup.group_bound(df["patient_id"].nunique()) if max_group is None else max_group
    dup.check_chains(
        df,
        groups,
        bound,
        f"--dup-threshold (now {threshold}) or raise --dup-min-similarity (now {min_similarity})",
    )
    joined = df.groupby(groups.to_numpy())["patient_id"].agg(["nunique", "size"])
    summary["copies"] = copies.drop(columns="row")
    summary["joined"] = joined[joined["nunique"] > 1]
    return df, groups, summary


def check_threshold(value: int) -> int:
    """``value`` if it is a usable hash threshold (an int in 0..MAX_THRESHOLD), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"--dup-threshold must be an integer, got {value!r}")
    if not 0 <= value <= MAX_THRESHOLD:
        raise ValueError(
            f"--dup-threshold must be in 0..{MAX_THRESHOLD} (bits of "
            f"{dup.DCT_SIDE**2 - 1}; unrelated images differ in about half), got {value}"
        )
    return int(value)


def check_similarity(value: float) -> float:
    """``value`` if it is a correlation bound in (0, 1], else ValueError."""
    if not 0 < value <= 1:
        raise ValueError(f"--dup-min-similarity must be in (0, 1], got {value}")
    return float(value)


def _threshold_arg(text: str) -> int:
    try:
        return check_threshold(int(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            str(err) if "must be" in str(err) else f"not an integer: {text!r}"
        ) from err


def _similarity_arg(text: str) -> float:
    try:
        return check_similarity(float(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            str(err) if "must be" in str(err) else f"not a number: {text!r}"
        ) from err


def format_duplicates(summary: dict, examples: int = 20) -> str:
    """The duplicates section of the folds report."""
    lines = ["", "## Duplicates", ""]
    if "marked" in summary:
        lines.append(f"- rows marked tfrecord == -1 (a duplicate), dropped: {summary['marked']}")
    if "published" in summary:
        lines.append(
            f"- pairs of the published duplicates list in this table: {summary['published']}"
        )
    if summary["hashed"]:
        lines.append(
            f"- near-duplicate pairs by image hash (at most {summary['threshold']} of "
            f"{dup.DCT_SIDE**2 - 1} bits differ, any flip or rotation): "
            f"{summary['hash_candidates']}, of which confirmed by thumbnail correlation "
            f">= {summary['min_similarity']}: {summary['hash_pairs']}"
        )
    joined, copies = summary["joined"], summary["copies"]
    lines.append(
        f"- groups of several patients joined by duplicates (one fold each): {len(joined)}"
    )
    lines.append(f"- external images that copy a competition image, dropped: {len(copies)}")
    if len(joined):
        table = joined.rename(columns={"nunique": "patients", "size": "images"})
        table = table.rename_axis("group").reset_index().head(examples)
        lines += ["", f"Joined groups (first {len(table)}):", "", markdown_table(table)]
    if len(copies):
        lines += ["", "Dropped external copies:", "", markdown_table(copies)]
    return "\n".join(lines) + "\n"


def fold_stats(df: pd.DataFrame) -> pd.DataFrame:
    """Per fold (fold >= 0): images, patients, malignant images and patients, ratios,
    mean and max images per patient; plus a last row ``all`` over the validated rows."""
    valid = df[df["fold"] >= 0]

    def stats(part: pd.DataFrame) -> dict:
        per_patient = part.groupby("patient_id")["target"].agg(["size", "sum"])
        return {
            "images": len(part),
            "patients": len(per_patient),
            "malignant_images": int(part["target"].sum()),
            "malignant_patients": int((per_patient["sum"] > 0).sum()),
            "malignant_ratio": float(part["target"].mean()),
            "malignant_patient_ratio": float((per_patient["sum"] > 0).mean()),
            "mean_images_per_patient": float(per_patient["size"].mean()),
            "max_images_per_patient": int(per_patient["size"].max()),
        }

    rows = [{"fold": str(f), **stats(part)} for f, part in valid.groupby("fold", sort=True)]
    rows.append({"fold": "all", **stats(valid)})
    return pd.DataFrame(rows)


def format_report(df: pd.DataFrame, n_folds: int, seed: int, include_external: bool) -> str:
    """Markdown report: the stats table and the largest deviations from the global values."""
    stats = fold_stats(df)
    per_fold = stats[stats["fold"] != "all"]
    total = stats[stats["fold"] == "all"].iloc[0]
    not_validated = int((df["fold"] < 0).sum())
    lines = [
        f"# Folds: {n_folds} folds, seed {seed}, external rows "
        + ("assigned" if include_external else "kept out of validation (fold -1)"),
        "",
        markdown_table(stats),
        "",
        f"- rows with fold -1 (never validated): {not_validated}",
        "- max |fold malignant ratio - global|: "
        f"{(per_fold['malignant_ratio'] - total['malignant_ratio']).abs().max():.4f}",
        "- images per fold: min "
        f"{per_fold['images'].min()}, max {per_fold['images'].max()} "
        f"(spread {(per_fold['images'].max() - per_fold['images'].min()) / per_fold['images'].mean():.1%})",
    ]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train-csv", required=True, help="training table (train.csv columns)")
    parser.add_argument("--out", required=True, help="output CSV: the input rows plus 'fold'")
    parser.add_argument("--n-folds", type=int, default=5, help="number of folds (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--include-external",
        action="store_true",
        help="give non-competition rows folds too (default: fold -1)",
    )
    parser.add_argument("--report", help="also write the fold statistics here (markdown)")
    parser.add_argument(
        "--image-root",
        help="data root of the table's image_path (default images jpeg/train/<name>.jpg): "
        "hash every image and keep near-duplicates in one fold",
    )
    parser.add_argument(
        "--hash-cache", help="CSV of image hashes, reused while files are unchanged"
    )
    parser.add_argument(
        "--duplicates-csv", help="published duplicate pairs (image_name_1, image_name_2)"
    )
    parser.add_argument(
        "--dup-threshold",
        type=_threshold_arg,
        default=dup.DEFAULT_THRESHOLD,
        help=f"largest hash distance (0..{MAX_THRESHOLD} bits) of a candidate pair "
        f"(default {dup.DEFAULT_THRESHOLD})",
    )
    parser.add_argument(
        "--dup-min-similarity",
        type=_similarity_arg,
        default=dup.DEFAULT_MIN_SIMILARITY,
        help="smallest thumbnail correlation that confirms a candidate pair "
        f"(default {dup.DEFAULT_MIN_SIMILARITY})",
    )
    parser.add_argument(
        "--max-dup-group",
        type=int,
        help="most patients one duplicate-joined group may hold "
        f"(default max({dup.MIN_GROUP_BOUND}, 1%% of the patients))",
    )
    parser.add_argument("--workers", type=int, default=4, help="threads for hashing (default 4)")
    parser.add_argument(
        "--scheme",
        choices=["patients", "tfrecord"],
        default="patients",
        help="patients (default): this project's assignment; tfrecord: the resized sets' "
        "TFRecord groups dealt into folds as the public notebooks do (docs/pipeline.md)",
    )


def run(args: argparse.Namespace) -> int:
    df = read_train_csv(args.train_csv)
    groups, summary = None, None
    if args.image_root or args.duplicates_csv or "tfrecord" in df.columns:
        df, groups, summary = resolve_duplicates(
            df,
            args.image_root,
            args.hash_cache,
            args.duplicates_csv,
            args.dup_threshold,
            args.workers,
            args.dup_min_similarity,
            args.max_dup_group,
        )
    try:
        out = _assign(df, args, groups)
    except ValueError as err:
        raise ValueError(f"{args.train_csv}: {err}") from err
    write_csv(out, args.out)
    text = format_report(out, args.n_folds, args.seed, args.include_external)
    if args.scheme == "tfrecord":
        text += _tfrecord_notes(out, groups)
    if summary is not None:
        text += format_duplicates(summary)
    print(text, end="")
    if args.report:
        write_text(text, args.report)
    print(f"wrote {args.out}")
    return 0


def _assign(df: pd.DataFrame, args: argparse.Namespace, groups: pd.Series | None) -> pd.DataFrame:
    if args.scheme == "tfrecord":
        if args.include_external:
            raise ValueError(
                "--scheme tfrecord validates competition rows only: drop --include-external"
            )
        out = tfrecord_folds(df, args.n_folds, args.seed)
        check_balance(out, args.n_folds)
        return out
    out = assign_folds(df, args.n_folds, args.seed, args.include_external, groups)
    check_balance(out, args.n_folds, groups)
    return out


def _tfrecord_notes(out: pd.DataFrame, groups: pd.Series | None) -> str:
    """What the TFRecord scheme carries that this project's assignment would not allow."""
    lines = [
        "",
        "## Scheme: tfrecord (the public notebooks' folds)",
        "",
        f"- patients with validated images in two folds or more: {shared_units(out, out['patient_id'])}",
    ]
    if groups is not None:
        lines.append(
            f"- duplicate-joined groups split across folds: {shared_units(out, groups.astype(str))}"
        )
    return "\n".join(lines) + "\n"
