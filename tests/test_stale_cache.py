"""A replaced source image is cached again on the next resize run."""

import os

import cv2
import numpy as np
import pandas as pd

from deepauc.data.resize import cache_path, load_cached, resize_table, sources_path


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
    assert list(recorded.columns) == ["image_name", "source", "source_bytes", "source_mtime_ns"]

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
