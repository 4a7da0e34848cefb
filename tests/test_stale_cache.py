"""A replaced source image is cached again on the next resize run, even when its size
and modification time were put back."""

import hashlib
import os

import cv2
import numpy as np
import pandas as pd

from deepauc.data import source_stamps as stamps
from deepauc.data.image_cache import cache_path, load_cached
from deepauc.data.resize import resize_table
from deepauc.data.source_stamps import sources_path


def write_image(path, value, side=40):
    cv2.imwrite(str(path), np.full((side, side, 3), value, np.uint8))


def test_replaced_source_is_recached(tmp_path):
    src = tmp_path / "img"
    src.mkdir()
    for name, value in (("a", 30), ("b", 60)):
        write_image(src / f"{name}.jpg", value)
    csv = tmp_path / "t.csv"
    pd.DataFrame({"image_name": ["a", "b"]}).to_csv(csv, index=False)
    cache = tmp_path / "cache"
    assert resize_table(csv, src, [8], cache) == {8: 2}
    assert abs(load_cached(cache, 8, "a").mean() - 30) < 3
    recorded = pd.read_csv(sources_path(cache, 8, csv))
    assert list(recorded.columns) == [
        "image_name",
        "source",
        "source_bytes",
        "source_mtime_ns",
        "source_ctime_ns",
        "source_sha256",
    ]

    untouched = cache_path(cache, 8, "b").stat().st_mtime_ns
    write_image(src / "a.jpg", 220, side=48)  # a replaced photo
    os.utime(src / "a.jpg", ns=(10**18, 10**18))
    assert resize_table(csv, src, [8], cache) == {8: 1}
    assert abs(load_cached(cache, 8, "a").mean() - 220) < 3
    assert cache_path(cache, 8, "b").stat().st_mtime_ns == untouched
    assert resize_table(csv, src, [8], cache) == {8: 0}  # nothing changed since


def test_cache_without_a_record_is_kept(tmp_path):
    src = tmp_path / "img"
    src.mkdir()
    write_image(src / "a.jpg", 30)
    csv = tmp_path / "t.csv"
    pd.DataFrame({"image_name": ["a"]}).to_csv(csv, index=False)
    cache = tmp_path / "cache"
    resize_table(csv, src, [8], cache)
    sources_path(cache, 8, csv).unlink()
    assert resize_table(csv, src, [8], cache) == {8: 0}


# --------------------------------------------------- content stamps that survive `touch -r`


def write_bmp(path, value, side=16):
    """An uncompressed image: every one of the same side has the same byte size."""
    ok, data = cv2.imencode(".bmp", np.full((side, side, 3), value, np.uint8))
    assert ok
    path.write_bytes(data.tobytes())


def replace_keeping_times(path, value):
    """A same-size replacement with the old modification time put back (`touch -r`)."""
    before = path.stat()
    write_bmp(path, value)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_resize_sees_a_same_size_replacement_with_its_time_restored(tmp_path):
    src = tmp_path / "img"
    src.mkdir()
    write_bmp(src / "a.jpg", 30)
    write_bmp(src / "b.jpg", 60)
    csv = tmp_path / "t.csv"
    pd.DataFrame({"image_name": ["a", "b"]}).to_csv(csv, index=False)
    cache = tmp_path / "cache"
    assert resize_table(csv, src, [8], cache) == {8: 2}
    recorded = pd.read_csv(sources_path(cache, 8, csv)).set_index("image_name")
    # the published digest of the bytes, not this package's own helper
    assert (
        recorded.loc["a", "source_sha256"]
        == hashlib.sha256((src / "a.jpg").read_bytes()).hexdigest()
    )

    replace_keeping_times(src / "a.jpg", 220)
    assert resize_table(csv, src, [8], cache) == {8: 1}
    assert abs(load_cached(cache, 8, "a").mean() - 220) < 3
    assert abs(load_cached(cache, 8, "b").mean() - 60) < 3


def test_resize_rehashes_a_touched_file_but_keeps_its_pixels(tmp_path, monkeypatch):
    src = tmp_path / "img"
    src.mkdir()
    write_bmp(src / "a.jpg", 30)
    csv = tmp_path / "t.csv"
    pd.DataFrame({"image_name": ["a"]}).to_csv(csv, index=False)
    cache = tmp_path / "cache"
    resize_table(csv, src, [8], cache)
    hashed = []
    real = stamps.file_sha256
    monkeypatch.setattr(stamps, "file_sha256", lambda p: hashed.append(p) or real(p))
    assert resize_table(csv, src, [8], cache) == {8: 0} and hashed == []  # quick key unchanged
    os.utime(src / "a.jpg")  # touched: a new quick key, the same bytes
    assert resize_table(csv, src, [8], cache) == {8: 0}
    assert hashed == [str(src / "a.jpg")]
