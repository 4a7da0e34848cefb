"""The one reader of the cache's ``sources_<stem>.csv`` records and the digests made from them
(the cache fingerprint of a training record, the stat listing of a make stamp), each checked
against the documented format recomputed here with hashlib and os.stat."""

import hashlib
import os
from pathlib import Path

import pytest

from deepauc.data.source_stamps import Stamp, quick_key, read_sources, read_stamps, sources_files
from deepauc.pipeline.provenance import cache_fingerprint
from deepauc.pipeline.stamps import listing

NEW = "image_name,source,source_bytes,source_mtime_ns,source_ctime_ns,source_sha256"


def write(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def digest(lines: list[str]) -> str:
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()[:16]


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """Records of two tables and a test table at 32 px, and one of the older layout."""
    size = tmp_path / "cache" / "32"
    write(
        size / "sources_folds.csv", NEW, "ISIC_1,/d/1.jpg,10,11,12,aa", "0002,/d/2.jpg,20,21,22,bb"
    )
    write(size / "sources_extra.csv", NEW, "ISIC_1,/e/1.jpg,10,13,14,cc", "NA,/e/NA.jpg,5,6,7,dd")
    write(size / "sources_test.csv", NEW, "T_1,/t/1.jpg,1,2,3,ee")
    write(size / "sources_old.csv", "image_name,source,source_bytes,source_mtime_ns", "O_1,/o,9,8")
    return tmp_path / "cache"


def test_the_reader_keeps_ids_and_hashes_as_text_and_names_a_bad_file(cache):
    assert [p.name for p in sources_files(cache, 32)] == [
        "sources_extra.csv",
        "sources_folds.csv",
        "sources_old.csv",
        "sources_test.csv",
    ]
    table = read_sources(cache / "32" / "sources_extra.csv")
    assert list(table["image_name"]) == ["ISIC_1", "NA"]  # "NA" is a name, not a missing value
    assert list(read_sources(cache / "32" / "sources_folds.csv")["image_name"]) == [
        "ISIC_1",
        "0002",
    ]
    bad = write(cache / "32" / "sources_bad.csv", "image,source", "x,y")
    with pytest.raises(ValueError, match=r"sources_bad\.csv: missing column\(s\) 'image_name'"):
        read_sources(bad)


def test_stamps_of_one_record_and_none_for_an_old_or_broken_one(cache):
    stamps = read_stamps(cache / "32" / "sources_extra.csv")
    assert stamps == {
        "ISIC_1": Stamp("/e/1.jpg", 10, 13, 14, "cc"),
        "NA": Stamp("/e/NA.jpg", 5, 6, 7, "dd"),  # an image named NA finds its stamp
    }
    assert read_stamps(cache / "32" / "sources_old.csv") == {}  # no content hashes: rehash
    assert read_stamps(cache / "32" / "sources_missing.csv") == {}
    assert read_stamps(write(cache / "32" / "sources_bad.csv", "image,source", "x,y")) == {}


def test_cache_fingerprint_hashes_the_recorded_stamps_of_each_name(cache):
    names = ["ISIC_1", "0002", "NA", "T_1", "O_1", "unknown"]
    expected = digest(
        [
            "0002\tbb\n",
            "ISIC_1\taa|cc\n",  # two records of one name: both stamps, sorted
            "NA\tdd\n",
            "O_1\t9 8\n",  # the older layout: bytes and mtime
            "T_1\t-\n",  # recorded only by the skipped test table
            "unknown\t-\n",  # no record
        ]
    )
    assert cache_fingerprint(cache, 32, names, skip="test") == expected
    with_test = digest(["0002\tbb\n", "ISIC_1\taa|cc\n", "NA\tdd\n", "O_1\t9 8\n", "T_1\tee\n"])
    assert cache_fingerprint(cache, 32, names[:5]) == with_test


def test_stamp_listing_hashes_path_size_mtime_and_ctime(tmp_path):
    root = tmp_path / "data"
    write(root / "a.jpg", "a")
    write(root / "sub" / "b.jpg", "bb")
    assert quick_key(root / "a.jpg") == (
        os.stat(root / "a.jpg").st_size,
        os.stat(root / "a.jpg").st_mtime_ns,
        os.stat(root / "a.jpg").st_ctime_ns,
    )

    def line(rel: str) -> str:
        st = os.stat(root / rel)
        return f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ctime_ns}\n"

    assert listing(root, []) == (2, digest([line("a.jpg"), line(os.path.join("sub", "b.jpg"))]))
    assert listing(root, [root / "sub"]) == (1, digest([line("a.jpg")]))
    st = os.stat(root / "a.jpg")
    one = hashlib.sha256(f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}".encode())
    assert listing(root / "a.jpg", []) == (1, one.hexdigest()[:16])
