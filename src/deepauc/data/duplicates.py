"""Near-duplicate images: a 255-bit DCT sign hash per image (cached by content), candidate
pairs within a Hamming distance under any of the 8 flips and rotations confirmed by thumbnail
correlation, the published duplicate lists, and the bounded groups the pairs join.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from deepauc.data.image_header import check_pixels, image_size
from deepauc.data.source_stamps import file_sha256, quick_key

HASH_SIDE = 64  # the grey image is reduced to HASH_SIDE x HASH_SIDE before the DCT
DCT_SIDE = 16  # the DCT_SIDE x DCT_SIDE lowest frequencies; their signs are the hash
WORDS = DCT_SIDE * DCT_SIDE // 64
# Largest Hamming distance (of 255 bits) still called a duplicate: between the copies made
# by re-encoding, resizing, flipping or a crop of a few pixels and the distinct images, as
# tests/test_duplicates.py measures.
DEFAULT_THRESHOLD = 24
THUMB_SIDE = 16  # side of the grey thumbnails compared to confirm a hash match
DEFAULT_MIN_SIMILARITY = 0.99  # smallest thumbnail correlation that confirms a hash match
MIN_GROUP_BOUND = 8  # a duplicate-joined group may always hold this many patients
CACHE_COLUMNS = ["path", "size", "mtime_ns", "ctime_ns", "sha256", "hash"]
PUBLISHED_COLUMNS = ["image_name_1", "image_name_2"]
_REDUCED_GREY = (
    (8, cv2.IMREAD_REDUCED_GRAYSCALE_8),
    (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
    (2, cv2.IMREAD_REDUCED_GRAYSCALE_2),
)


# ----------------------------------------------------------------------- hashing


def dct_signs(grey: np.ndarray) -> np.ndarray:
    """DCT_SIDE x DCT_SIDE booleans: the signs of the image's lowest DCT frequencies.

    The DC term (mean brightness) is set False. Signs rather than a median split make
    a flip of the image an exact XOR of the bits: the DCT of a mirrored row negates
    its odd frequencies.
    """
    small = cv2.resize(grey, (HASH_SIDE, HASH_SIDE), interpolation=cv2.INTER_AREA)
    coef = cv2.dct(small.astype(np.float32))[:DCT_SIDE, :DCT_SIDE]
    signs = coef > 0
    signs[0, 0] = False
    return signs


def pack(signs: np.ndarray) -> np.ndarray:
    """(n, DCT_SIDE, DCT_SIDE) booleans -> (n, WORDS) uint64."""
    flat = np.packbits(signs.reshape(len(signs), -1), axis=1)
    return flat.view(">u8").astype(np.uint64)


def unpack(words: np.ndarray) -> np.ndarray:
    """(n, WORDS) uint64 -> (n, DCT_SIDE, DCT_SIDE) booleans (inverse of :func:`pack`)."""
    raw = np.ascontiguousarray(words.astype(">u8")).view(np.uint8)
    return np.unpackbits(raw, axis=1).astype(bool).reshape(len(words), DCT_SIDE, DCT_SIDE)


def dihedral_variants(words: np.ndarray) -> list[np.ndarray]:
    """The hashes of the 8 flips/rotations of each image, identity first."""
    signs = unpack(words)
    odd = np.arange(DCT_SIDE) % 2 == 1
    out = []
    for transpose in (False, True):
        base = signs.transpose(0, 2, 1) if transpose else signs
        for flip_rows in (False, True):
            for flip_cols in (False, True):
                mask = np.outer(odd & flip_rows, np.ones(DCT_SIDE, bool))
                mask ^= np.outer(np.ones(DCT_SIDE, bool), odd & flip_cols)
                out.append(pack(base ^ mask))
    return out


def to_hex(words: np.ndarray) -> list[str]:
    return ["".join(f"{int(w):016x}" for w in row) for row in words]


def from_hex(texts: Iterable[str]) -> np.ndarray:
    rows = [[int(t[i : i + 16], 16) for i in range(0, 16 * WORDS, 16)] for t in texts]
    return np.array(rows, dtype=np.uint64).reshape(-1, WORDS)


def read_grey(path: str | os.PathLike) -> np.ndarray:
    """The image as 8-bit grey, decoded at a reduced JPEG scale when that still leaves
    a short side of at least 2 * HASH_SIDE."""
    flag = cv2.IMREAD_GRAYSCALE
    wh = image_size(path)
    if wh is not None:
        check_pixels(path, wh)
        for factor, reduced in _REDUCED_GREY:
            if min(wh) // factor >= 2 * HASH_SIDE:
                flag = reduced
                break
    grey = cv2.imread(str(path), flag)
    if grey is None:
        raise ValueError(f"{path}: cannot decode image (corrupt or not an image)")
    return grey


def image_hash(path: str | os.PathLike) -> np.ndarray:
    """The (WORDS,) uint64 hash of one image file."""
    return pack(dct_signs(read_grey(path))[None])[0]


def _read_cache(cache: str | os.PathLike | None) -> dict[str, tuple]:
    """path -> (size, mtime_ns, ctime_ns, sha256, hash) from a hash cache; a cache
    without content stamps (an older layout) or unreadable is ignored."""
    if cache is None or not Path(cache).is_file():
        return {}
    try:
        old = pd.read_csv(cache, dtype={"path": str, "sha256": str, "hash": str})
        rows = old[CACHE_COLUMNS].itertuples(index=False, name=None)
        return {p: (int(s), int(m), int(c), sh, h) for p, s, m, c, sh, h in rows}
    except (KeyError, ValueError, pd.errors.ParserError):
        return {}


def hash_images(
    paths: Sequence[str | os.PathLike], cache: str | os.PathLike | None = None, workers: int = 4
) -> np.ndarray:
    """(n, WORDS) hashes of ``paths``. With a ``cache`` CSV, a file whose quick key
    (size, mtime, ctime) matches its row is not read; one whose key changed is read for
    its SHA-256 and hashed again only if the bytes changed. The cache is rewritten."""
    keys = [str(p) for p in paths]
    stats = [quick_key(p) for p in keys]
    known = _read_cache(cache)
    shas: list[str | None] = [None] * len(keys)
    texts: list[str | None] = [None] * len(keys)
    for i, (k, st) in enumerate(zip(keys, stats)):
        row = known.get(k)
        if row is not None and row[:3] == st:
            shas[i], texts[i] = row[3], row[4]
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    with pool:
        stale = [i for i, t in enumerate(texts) if t is None]
        for i, sha in zip(stale, pool.map(file_sha256, [keys[i] for i in stale])):
            shas[i] = sha
            row = known.get(keys[i])
            if row is not None and row[3] == sha:  # touched, same bytes: hash still good
                texts[i] = row[4]
        todo = [i for i, t in enumerate(texts) if t is None]
        # OpenCV decodes and resizes with the GIL released, so threads run in parallel.
        with tqdm(
            total=len(todo),
            desc="hashing images",
            unit="image",
            leave=False,
            mininterval=5,
            disable=not todo or os.environ.get("DEEPAUC_PROGRESS", "1") == "0",
        ) as bar:
            for i, words in zip(todo, pool.map(image_hash, [keys[i] for i in todo])):
                texts[i] = to_hex(words[None])[0]
                bar.update(1)
    if cache is not None and stale:
        from deepauc.io import write_csv

        rows = {k: (k, *st, sh, t) for k, st, sh, t in zip(keys, stats, shas, texts)}
        for p, row in known.items():
            rows.setdefault(p, (p, *row))
        write_csv(pd.DataFrame(list(rows.values()), columns=CACHE_COLUMNS), cache)
    return from_hex(texts)  # type: ignore[arg-type]


# ----------------------------------------------------------------------- matching


def _distance_table(a: np.ndarray, b: np.ndarray, words: slice) -> np.ndarray:
    """Hamming distances of every row of ``a`` to every row of ``b`` over ``words``."""
    d = np.zeros((len(a), len(b)), dtype=np.uint16)
    for w in range(*words.indices(WORDS)):
        d += np.bitwise_count(a[:, w, None] ^ b[None, :, w])
    return d


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distance of each row of ``a`` to the same row of ``b``."""
    return np.bitwise_count(a ^ b).sum(axis=-1)


def close_pairs(
    query: np.ndarray,
    target: np.ndarray,
    threshold: int = DEFAULT_THRESHOLD,
    same: bool = False,
    flips: bool = True,
    chunk: int = 256,
) -> np.ndarray:
    """(k, 2) sorted index pairs (query row, target row) whose hashes differ in at most
    ``threshold`` bits, the query taken in any of its 8 flips/rotations when ``flips``.

    ``same``: ``query`` is ``target``; only pairs with query index < target index.
    """
    return close_pairs_with_variant(query, target, threshold, same, flips, chunk)[:, :2]


def close_pairs_with_variant(
    query: np.ndarray,
    target: np.ndarray,
    threshold: int = DEFAULT_THRESHOLD,
    same: bool = False,
    flips: bool = True,
    chunk: int = 256,
) -> np.ndarray:
    """(k, 3) rows (query row, target row, variant) as :func:`close_pairs`, with the
    flip/rotation (index into :func:`dihedral_variants`) of the query nearest the target."""
    variants = dihedral_variants(query) if flips else [query]
    half = slice(0, WORDS // 2)
    best: dict[tuple[int, int], tuple[int, int]] = {}
    for start in range(0, len(query), chunk):
        stop = min(start + chunk, len(query))
        offset = start if same else 0
        tgt = target[offset:]
        for v, var in enumerate(variants):
            q = var[start:stop]
            # A pair within the threshold is within it on the first half of the bits too;
            # that cheap test leaves few candidates for the full distance.
            qi, ti = np.nonzero(_distance_table(q, tgt, half) <= threshold)
            dist = hamming(q[qi], tgt[ti])
            ok = dist <= threshold
            for a, b, d in zip(qi[ok] + start, ti[ok] + offset, dist[ok]):
                key = (int(a), int(b))
                if (not same or a < b) and (key not in best or int(d) < best[key][0]):
                    best[key] = (int(d), v)
    rows = [(a, b, v) for (a, b), (_, v) in sorted(best.items())]
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def table_pairs(
    hashes: np.ndarray,
    is_competition: np.ndarray,
    threshold: int = DEFAULT_THRESHOLD,
    variants: bool = False,
) -> np.ndarray:
    """Near-duplicate row pairs of a table that involve a competition row: competition
    with competition and external with competition (external rows are never validated,
    so their pairs among themselves cannot leak). ``variants``: a third column holds
    the matched flip/rotation of the first row."""
    comp = np.flatnonzero(is_competition)
    ext = np.flatnonzero(~is_competition)
    inner = close_pairs_with_variant(hashes[comp], hashes[comp], threshold, same=True)
    cross = (
        close_pairs_with_variant(hashes[ext], hashes[comp], threshold) if len(ext) else inner[:0]
    )
    pairs = [
        np.stack([comp[inner[:, 0]], comp[inner[:, 1]], inner[:, 2]], axis=1),
        np.stack([ext[cross[:, 0]], comp[cross[:, 1]], cross[:, 2]], axis=1),
    ]
    out = np.concatenate(pairs).reshape(-1, 3)
    return out if variants else out[:, :2]


def confirmed_pairs(
    paths: Sequence[str | os.PathLike],
    candidates: np.ndarray,
    min_similarity: float = DEFAULT_MIN_SIMILARITY,
    workers: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """(pairs kept (k, 2), every candidate's similarity): the ``candidates`` (rows of
    :func:`table_pairs` with ``variants``) whose thumbnails correlate at least
    ``min_similarity`` under the matched flip. Only the images in a candidate are read."""
    if not len(candidates):
        return candidates[:, :2], np.empty(0)
    rows = np.unique(candidates[:, :2])
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        thumbs = list(pool.map(lambda i: thumbnail(read_grey(paths[i])), rows))
    at = {int(r): k for k, r in enumerate(rows)}
    first = np.stack([thumbs[at[int(a)]] for a in candidates[:, 0]])
    second = np.stack([thumbs[at[int(b)]] for b in candidates[:, 1]])
    r = similarity(first, second, candidates[:, 2])
    return candidates[r >= min_similarity, :2], r


# ----------------------------------------------------------------------- confirming


def dihedral_image(img: np.ndarray, variant: int) -> np.ndarray:
    """``img`` under flip/rotation ``variant``: the picture whose hash is
    ``dihedral_variants(hash of img)[variant]`` (transpose, then rows, then columns)."""
    if variant & 4:
        img = img.swapaxes(0, 1)
    if variant & 2:
        img = img[::-1]
    if variant & 1:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


def thumbnail(grey: np.ndarray) -> np.ndarray:
    """THUMB_SIDE x THUMB_SIDE float32 detail of a grey image, zero mean and unit norm.

    The detail is the thumbnail less its blurred self: what two photographs of one kind
    of object share (a dark vignette, a centred blob, a cell's grid) is mostly smooth,
    and what tells one picture from another is its edges.
    """
    small = cv2.resize(grey, (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_AREA)
    small = small.astype(np.float32)
    detail = small - cv2.GaussianBlur(small, (0, 0), THUMB_SIDE / 8)
    detail -= detail.mean()
    norm = float(np.linalg.norm(detail))
    return detail / norm if norm > 0 else detail


def similarity(thumbs_a: np.ndarray, thumbs_b: np.ndarray, variants: np.ndarray) -> np.ndarray:
    """Per pair, the correlation of thumbnail ``a`` under its matched flip/rotation with
    thumbnail ``b`` (1: same detail, about 0: unrelated)."""
    out = np.empty(len(variants), dtype=np.float64)
    for k, (a, b, v) in enumerate(zip(thumbs_a, thumbs_b, variants)):
        out[k] = float(np.sum(dihedral_image(a, int(v)) * b))
    return out


# ----------------------------------------------------------------------- groups


def read_published_pairs(path: str | os.PathLike, names: pd.Series) -> np.ndarray:
    """Row pairs of the table (image names ``names``) listed in a published duplicates CSV
    (``image_name_1``, ``image_name_2``); pairs naming an image not in the table are skipped."""
    from deepauc.data.tables import read_csv_table

    listed = read_csv_table(path, PUBLISHED_COLUMNS, text_columns=PUBLISHED_COLUMNS)
    row_of = pd.Series(np.arange(len(names)), index=names.to_numpy())
    first = listed["image_name_1"].astype(str).map(row_of)
    second = listed["image_name_2"].astype(str).map(row_of)
    both = first.notna() & second.notna()
    return np.stack([first[both], second[both]], axis=1).astype(np.int64).reshape(-1, 2)


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def group_labels(patient_ids: pd.Series, pairs: np.ndarray) -> pd.Series:
    """Per row, a group label: rows are joined when they share a patient id or form a
    duplicate pair (union-find). The label is the smallest patient id of the group, so
    a row whose patient has no duplicate keeps its own patient id."""
    ids = patient_ids.astype(str).to_numpy()
    codes, uniques = pd.factorize(ids, sort=True)
    parent = list(range(len(uniques)))
    for a, b in pairs:
        ra, rb = _find(parent, int(codes[a])), _find(parent, int(codes[b]))
        if ra != rb:
            # uniques are sorted: the smaller code is the smaller patient id
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([_find(parent, c) for c in range(len(uniques))], dtype=np.int64)
    return pd.Series(uniques[roots[codes]], index=patient_ids.index, name="group")


def external_copies(table: pd.DataFrame, pairs: np.ndarray) -> pd.DataFrame:
    """The external rows that duplicate a competition row: one row per dropped image
    with ``image_name``, ``source`` and the competition image it copies (``copy_of``)."""
    if "source" not in table.columns:
        return pd.DataFrame(
            {"row": np.empty(0, np.int64), "image_name": [], "source": [], "copy_of": []}
        )
    source = table["source"].fillna("competition").to_numpy()
    names = table["image_name"].to_numpy()
    rows = []
    for a, b in pairs:
        for ext, comp in ((a, b), (b, a)):
            if source[ext] != "competition" and source[comp] == "competition":
                rows.append((int(ext), names[ext], source[ext], names[comp]))
    out = pd.DataFrame(rows, columns=["row", "image_name", "source", "copy_of"])
    out["row"] = out["row"].astype(np.int64)
    return out.drop_duplicates("row").sort_values("row").reset_index(drop=True)


# ----------------------------------------------------------------------- chaining


class DuplicateChainError(ValueError):
    """Duplicate pairs joined more patients into one group than the bound allows."""


def group_bound(n_patients: int) -> int:
    """Most patients one duplicate-joined group may hold: max(MIN_GROUP_BOUND, 1%).

    A true copy joins a handful of records; a chain across 1% of all patients is the
    search calling look-alikes copies (and one fold could no longer be balanced).
    """
    return max(MIN_GROUP_BOUND, n_patients // 100)


def check_chains(
    table: pd.DataFrame, groups: pd.Series, bound: int, settings: str, show: int = 3
) -> None:
    """Raise DuplicateChainError naming the largest groups when a group joins more than
    ``bound`` patients; ``settings`` says which thresholds to change."""
    per_group = table.groupby(groups.to_numpy())
    sizes = per_group["patient_id"].nunique().sort_values(ascending=False, kind="stable")
    over = sizes[sizes > bound]
    if over.empty:
        return
    parts = []
    for label in over.index[:show]:
        names = table.loc[groups.to_numpy() == label, "image_name"].astype(str).head(3)
        parts.append(
            f"{int(sizes[label])} patients / {int(per_group.size()[label])} images "
            f"({', '.join(names)} ...)"
        )
    raise DuplicateChainError(
        f"near-duplicate pairs chain {len(over)} group(s) past {bound} patients "
        f"(bound max({MIN_GROUP_BOUND}, 1% of {table['patient_id'].nunique()} patients)); "
        f"largest: {'; '.join(parts)}; if the image search calls look-alikes copies, lower "
        f"{settings}; if the copies are real, raise --max-dup-group"
    )
