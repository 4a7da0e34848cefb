"""The registry of external sources: each source's option, the published layouts it reads
in the order they are tried, how each layout is recognised, what reads it into training
rows, and what an unrecognised folder's error says was looked for (docs/data-layouts.md)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from deepauc.data.external.malignant_v2 import MALIGNANT_V2_CSVS, load_malignant_v2
from deepauc.data.external.resized import load_resized2019
from deepauc.data.external.sources import (
    load_isic2017,
    load_isic2018,
    load_isic2018_task3,
    load_isic2019,
    load_malignant,
)
from deepauc.data.layouts import (
    HAM_METADATA,
    ISIC2017_COLUMNS,
    ISIC2018_GROUND_TRUTH,
    ISIC2019_GROUND_TRUTH,
    ISIC2019_METADATA,
    MALIGNANT_CSV,
    Layout,
    csv_header,
    is_resized_table,
    unknown_layout,
)

Folder = str | os.PathLike
# (the folder, every CSV file below it) -> True if the folder holds the layout.
Matcher = Callable[[Path, list[Path]], bool]
# (the folder, the data root image paths are relative to) -> training rows.
Reader = Callable[[Folder, Path], pd.DataFrame]


@dataclass(frozen=True)
class LayoutSpec:
    """One published layout of an external set: how it is recognised and read."""

    name: str
    looked_for: str  # what the error for an unrecognised folder lists for this layout
    matches: Matcher
    read: Reader


@dataclass(frozen=True)
class SourceSpec:
    """One external source (the ``source`` column's value) and the layouts it reads."""

    name: str
    help: str  # the help of its ``--<name>-dir`` option
    layouts: tuple[LayoutSpec, ...]

    @property
    def option(self) -> str:
        return f"--{self.name}-dir"


def _names(csvs: list[Path]) -> set[str]:
    return {p.name for p in csvs}


def _is_isic2017(folder: Path, csvs: list[Path]) -> bool:
    return any(
        "GroundTruth" in p.name and set(ISIC2017_COLUMNS) <= set(csv_header(p)) for p in csvs
    )


def _is_malignant(folder: Path, csvs: list[Path]) -> bool:
    return (folder / MALIGNANT_CSV).is_file() or len(list(folder.glob("*.csv"))) == 1


_ISIC2019 = LayoutSpec(
    "isic2019",
    f"{ISIC2019_GROUND_TRUTH} + {ISIC2019_METADATA} (official ISIC 2019)",
    lambda folder, csvs: ISIC2019_GROUND_TRUTH in _names(csvs),
    load_isic2019,
)
_RESIZED2019 = LayoutSpec(
    "resized2019",
    "train.csv with columns tfrecord,width,height + train/ (jpeg-isic2019-NxN)",
    lambda folder, csvs: (folder / "train").is_dir() and is_resized_table(folder / "train.csv"),
    load_resized2019,
)
_ISIC2018_TASK3 = LayoutSpec(
    "isic2018_task3",
    f"{ISIC2018_GROUND_TRUTH} (ISIC 2018 challenge, Task 3)",
    lambda folder, csvs: ISIC2018_GROUND_TRUTH in _names(csvs),
    load_isic2018_task3,
)
_HAM10000 = LayoutSpec(
    "ham10000",
    f"{HAM_METADATA} (HAM10000, Kaggle/Dataverse)",
    lambda folder, csvs: HAM_METADATA in _names(csvs),
    load_isic2018,
)
_ISIC2017 = LayoutSpec(
    "isic2017",
    "*GroundTruth*.csv with columns image_id,melanoma,seborrheic_keratosis",
    _is_isic2017,
    load_isic2017,
)
_MALIGNANT_V2 = LayoutSpec(
    "malignant_v2",
    f"any of {', '.join(MALIGNANT_V2_CSVS)} (malignant-v2-NxN)",
    lambda folder, csvs: bool(_names(csvs) & set(MALIGNANT_V2_CSVS)),
    load_malignant_v2,
)
_MALIGNANT = LayoutSpec(
    "malignant",
    f"{MALIGNANT_CSV} or exactly one *.csv (extra malignant images)",
    _is_malignant,
    load_malignant,
)

# In merge priority order: on a repeated image the earlier source's row is kept.
EXTERNAL_SOURCES: dict[str, SourceSpec] = {
    spec.name: spec
    for spec in (
        SourceSpec(
            "isic2019",
            "folder with ISIC_2019_Training_GroundTruth.csv, _Metadata.csv, images, "
            "or a jpeg-isic2019-NxN folder (train.csv, train/); none: competition rows only",
            (_ISIC2019, _RESIZED2019),
        ),
        SourceSpec(
            "isic2018",
            "folder with ISIC2018_Task3_Training_GroundTruth.csv (ISIC challenge) "
            "or HAM10000_metadata.csv (Kaggle/Dataverse), and images",
            (_ISIC2018_TASK3, _HAM10000),
        ),
        SourceSpec(
            "isic2017", "folder with ISIC 2017 part 3 ground truth and images", (_ISIC2017,)
        ),
        SourceSpec(
            "malignant",
            "folder with malignant.csv and images, or a malignant-v2-NxN folder "
            "(train_malig_1/2/3.csv, images)",
            (_MALIGNANT_V2, _MALIGNANT),
        ),
    )
}


def layout_spec(name: str) -> LayoutSpec:
    """The external layout called ``name`` (KeyError for none)."""
    for source in EXTERNAL_SOURCES.values():
        for spec in source.layouts:
            if spec.name == name:
                return spec
    raise KeyError(name)


def detect_external(folder: Folder, source: str) -> Layout:
    """The layout of an external folder given for ``source`` (a key of EXTERNAL_SOURCES).

    Raises FileNotFoundError for a missing folder and ValueError, listing the files
    looked for, for a folder in none of the layouts ``source`` reads.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such directory")
    csvs = sorted(folder.rglob("*.csv"))
    layouts = EXTERNAL_SOURCES[source].layouts
    for spec in layouts:
        if spec.matches(folder, csvs):
            return Layout(spec.name, folder)
    raise unknown_layout(folder, [spec.looked_for for spec in layouts], source)


def unknown_source(name: str) -> ValueError:
    """The one-line error for a source name the registry does not hold."""
    return ValueError(f"unknown external source {name!r}; known: {', '.join(EXTERNAL_SOURCES)}")


def parse_external(value: str) -> tuple[str, str]:
    """``SOURCE=DIR`` (the ``--external`` option) as (source, folder)."""
    source, sep, folder = value.partition("=")
    if not sep or not folder:
        raise argparse.ArgumentTypeError(f"expected SOURCE=DIR, got {value!r}")
    if source not in EXTERNAL_SOURCES:
        raise argparse.ArgumentTypeError(str(unknown_source(source)))
    return source, folder


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--<source>-dir`` option per registered source, then ``--external SOURCE=DIR``."""
    for spec in EXTERNAL_SOURCES.values():
        parser.add_argument(spec.option, dest=f"{spec.name}_dir", help=spec.help)
    parser.add_argument(
        "--external",
        action="append",
        type=parse_external,
        default=[],
        metavar="SOURCE=DIR",
        help=f"an external source's folder, repeatable; SOURCE is one of "
        f"{', '.join(EXTERNAL_SOURCES)} (the same as --SOURCE-dir DIR)",
    )


def source_folders(
    folders: tuple[Folder | None, ...],
    named: Mapping[str, Folder | None],
    external: Mapping[str, Folder] | list[tuple[str, Folder]] | None = None,
) -> dict[str, Folder]:
    """Each given source's folder, in registry (priority) order.

    ``folders`` are positional folders in registry order, ``named`` maps
    ``<source>_dir`` to a folder (None: not given) and ``external`` maps a source to a
    folder. A source given twice with two different folders raises ValueError.
    """
    if len(folders) > len(EXTERNAL_SOURCES):
        raise TypeError(f"at most {len(EXTERNAL_SOURCES)} positional external folders")
    pairs = list(zip(EXTERNAL_SOURCES, folders))
    for key, folder in named.items():
        if not key.endswith("_dir") or key[: -len("_dir")] not in EXTERNAL_SOURCES:
            raise TypeError(f"unexpected keyword argument {key!r}")
        pairs.append((key[: -len("_dir")], folder))
    items = external.items() if isinstance(external, Mapping) else (external or [])
    for source, folder in items:
        if source not in EXTERNAL_SOURCES:
            raise unknown_source(source)
        pairs.append((source, folder))
    given: dict[str, Folder] = {}
    for source, folder in pairs:
        if folder is None:
            continue
        if source in given and Path(given[source]) != Path(folder):
            raise ValueError(f"external source {source!r} given twice: {given[source]}, {folder}")
        given[source] = folder
    return {s: given[s] for s in EXTERNAL_SOURCES if s in given}
