"""The resize cache keeps tables apart, cuts each size from its own decode, refuses
images that decode to too many pixels, and takes one source folder per size."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pandas as pd
import pytest

from deepauc.cli import main
from deepauc.data import duplicates as dup
from deepauc.data.image_cache import cache_path, load_cached
from deepauc.data.image_header import ImageError
from deepauc.data.resize import resize_table


def write(path, img, ext=".jpg"):
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(ext, img)
    assert ok
    path.write_bytes(buf.tobytes())


def table(path, names):
    pd.DataFrame({"image_name": names}).to_csv(path, index=False)
    return path


def test_a_test_image_named_like_a_training_image_never_gets_its_pixels(tmp_path):
    train_root, test_root, cache = tmp_path / "train", tmp_path / "test", tmp_path / "cache"
    write(train_root / "x.jpg", np.full((20, 20, 3), 40, np.uint8))
    write(train_root / "y.jpg", np.full((20, 20, 3), 90, np.uint8))
    write(test_root / "x.jpg", np.full((20, 20, 3), 200, np.uint8))  # another picture
    train_csv = table(tmp_path / "train.csv", ["x", "y"])
    test_csv = table(tmp_path / "test.csv", ["x"])
    resize_table(train_csv, train_root, [8], cache)
    with pytest.raises(ValueError) as err:
        resize_table(test_csv, test_root, [8], cache)
    text = str(err.value)
    assert "\n" not in text and "test.csv" in text and "sources_train.csv" in text and "x" in text
    assert abs(load_cached(cache, 8, "x").mean() - 40) < 3  # the training pixels are intact
    # a separate cache holds the test image; a table sharing the very files may share a cache
    assert resize_table(test_csv, test_root, [8], tmp_path / "test_cache") == {8: 1}
    assert resize_table(table(tmp_path / "sub.csv", ["y"]), train_root, [8], cache) == {8: 0}


def test_pixels_at_one_size_do_not_depend_on_the_other_sizes(tmp_path):
    rng = np.random.default_rng(0)
    noise = cv2.GaussianBlur(rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8), (0, 0), 1.5)
    write(tmp_path / "img" / "a.jpg", noise)
    csv = table(tmp_path / "t.csv", ["a"])
    resize_table(csv, tmp_path / "img", [64], tmp_path / "alone")
    resize_table(csv, tmp_path / "img", [64, 256], tmp_path / "together")
    alone = cache_path(tmp_path / "alone", 64, "a").read_bytes()
    assert cache_path(tmp_path / "together", 64, "a").read_bytes() == alone
    assert cache_path(tmp_path / "together", 256, "a").is_file()


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header says width x height (8-bit RGB): it would decode to
    width * height * 3 bytes."""
    head = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: (  # noqa: E731
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    )
    body = zlib.compress(b"\0" * 4096)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_an_image_that_decodes_to_gigabytes_is_refused_unread(tmp_path, capsys):
    root = tmp_path / "img"
    root.mkdir()
    (root / "bomb.jpg").write_bytes(png_claiming(40000, 25000))  # 1 gigapixel, 3 GB as RGB
    assert (root / "bomb.jpg").stat().st_size < 10_000
    csv = table(tmp_path / "t.csv", ["bomb"])
    args = ["resize", "--csv", str(csv), "--image-root", str(root), "--size", "8"]
    assert main([*args, "--out", str(tmp_path / "c"), "--workers", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bomb.jpg" in err and "40000 x 25000" in err
    with pytest.raises(ImageError, match="megapixels"):
        dup.read_grey(root / "bomb.jpg")


def test_the_pixel_cap_is_configurable(tmp_path, monkeypatch):
    write(tmp_path / "img" / "a.png", np.zeros((100, 120, 3), np.uint8), ".png")
    csv = tmp_path / "t.csv"
    pd.DataFrame({"image_name": ["a"], "image_path": ["a.png"]}).to_csv(csv, index=False)
    monkeypatch.setenv("DEEPAUC_MAX_MEGAPIXELS", "0.01")  # 10,000 pixels < 12,000
    with pytest.raises(ValueError, match=r"a.png: 120 x 100 .* cap of 0.01"):
        resize_table(csv, tmp_path / "img", [8], tmp_path / "c")
    monkeypatch.setenv("DEEPAUC_MAX_MEGAPIXELS", "0.02")
    assert resize_table(csv, tmp_path / "img", [8], tmp_path / "c") == {8: 1}


def test_one_source_folder_per_size_and_an_upscale_warning(tmp_path, capsys):
    small, large, cache = tmp_path / "small", tmp_path / "large", tmp_path / "cache"
    for i, name in enumerate(["a", "b", "c"]):
        write(small / f"{name}.jpg", np.full((24, 24, 3), 50 + i, np.uint8))
        write(large / f"{name}.jpg", np.full((96, 96, 3), 200, np.uint8))
    csv = table(tmp_path / "t.csv", ["a", "b", "c"])
    base = ["resize", "--csv", str(csv), "--image-root", str(small), "--size", "16"]
    base += ["--size", "48", "--out", str(cache), "--workers", "1"]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "warning: size 48: 3 of 3 image(s) written were upscaled" in out
    assert "--image-root-for 48=DIR" in out and "size 16:" in out and "warning: size 16" not in out
    assert main([*base, "--image-root-for", f"48={large}"]) == 0
    out = capsys.readouterr().out
    assert "warning" not in out and "size 48: 3 image(s) written" in out
    assert abs(load_cached(cache, 48, "a").mean() - 200) < 3  # from the larger source
    assert abs(load_cached(cache, 16, "a").mean() - 50) < 3
    recorded = pd.read_csv(cache / "48" / "sources_t.csv")
    assert recorded["source"].str.startswith(str(large)).all()


@pytest.mark.parametrize("item, words", [("48", "SIZE=DIR"), ("32=d", "not a --size")])
def test_image_root_for_is_checked(tmp_path, capsys, item, words):
    args = ["resize", "--csv", "t.csv", "--image-root", ".", "--size", "48", "--out", "c"]
    assert main([*args, "--image-root-for", item]) == 1
    err = capsys.readouterr().err
    assert "--image-root-for" in err and words in err


def test_a_resized_set_serves_one_size_of_a_full_layout_and_external_rows_keep_theirs(tmp_path):
    """DATA in the Kaggle layout (jpeg/train/), the 48 px source a resized set (train/);
    an external row (a ``../`` path) is read from its own folder at every size."""
    data, resized, ext, cache = (tmp_path / d for d in ("data", "r384", "isic2019", "cache"))
    write(data / "jpeg" / "train" / "a.jpg", np.full((24, 24, 3), 40, np.uint8))
    write(resized / "train" / "a.jpg", np.full((96, 96, 3), 210, np.uint8))
    write(ext / "e.jpg", np.full((96, 96, 3), 120, np.uint8))
    csv = tmp_path / "t.csv"
    paths = ["jpeg/train/a.jpg", "../isic2019/e.jpg"]
    pd.DataFrame({"image_name": ["a", "e"], "image_path": paths}).to_csv(csv, index=False)
    resize_table(csv, data, [16, 48], cache, roots={48: resized})
    assert abs(load_cached(cache, 48, "a").mean() - 210) < 3  # the resized set's file
    assert abs(load_cached(cache, 16, "a").mean() - 40) < 3  # the data root's file
    assert abs(load_cached(cache, 48, "e").mean() - 120) < 3  # external: its own file
