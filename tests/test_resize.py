import cv2
import numpy as np
import pandas as pd
import pytest

from deepauc.cli import main
from deepauc.data import resize as resize_module
from deepauc.data.image_cache import cache_path, index_path, load_cached
from deepauc.data.image_decode import resize_image
from deepauc.data.image_header import image_size
from deepauc.data.resize import resize_table


def write_bgr(path, img, ext=".jpg"):
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(ext, img)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def stripes(h, w):
    """Left third blue, middle third green, right third red (RGB meaning), as BGR."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 3] = (255, 0, 0)
    img[:, w // 3 : 2 * w // 3] = (0, 255, 0)
    img[:, 2 * w // 3 :] = (0, 0, 255)
    return img


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "img"
    rng = np.random.default_rng(0)
    write_bgr(root / "ISIC_0000001.jpg", rng.integers(0, 255, (60, 90, 3), dtype=np.uint8))
    write_bgr(root / "ISIC_0000002.jpg", stripes(100, 300))
    write_bgr(root / "ISIC_0000003.jpg", rng.integers(0, 255, (40, 40), dtype=np.uint8))  # gray
    write_bgr(root / "ISIC_0000004.jpg", np.full((50, 50, 3), (0, 0, 255), np.uint8), ".png")
    csv = tmp_path / "train.csv"
    pd.DataFrame({"image_name": [f"ISIC_000000{i}" for i in range(1, 5)], "target": 0}).to_csv(
        csv, index=False
    )
    return root, csv


def test_resize_image_shape_crop_and_colour(images):
    root, _ = images
    out = resize_image(root / "ISIC_0000001.jpg", 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    # centre crop of a 3:1 stripe image keeps only the middle (green) stripe
    mid = resize_image(root / "ISIC_0000002.jpg", 20).reshape(-1, 3).mean(axis=0)
    assert mid[1] > 200 and mid[0] < 30 and mid[2] < 30
    gray = resize_image(root / "ISIC_0000003.jpg", 16)
    assert gray.shape == (16, 16, 3)
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    # PNG content behind a .jpg name; pure red (BGR 0,0,255) comes back as RGB red
    red = resize_image(root / "ISIC_0000004.jpg", 16)
    assert red[..., 0].min() > 240 and red[..., 2].max() < 15


def test_rgba_png_converted(tmp_path):
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 1] = 255
    rgba[..., 3] = 128
    path = write_bgr(tmp_path / "a.png", rgba, ".png")
    out = resize_image(path, 8)
    assert out.shape == (8, 8, 3) and out[..., 1].min() > 240


def test_reduced_decode_of_large_jpeg(tmp_path, monkeypatch):
    img = np.zeros((800, 1200, 3), np.uint8)
    cv2.circle(img, (600, 400), 200, (255, 255, 255), -1)
    path = write_bgr(tmp_path / "big.jpg", img)
    assert image_size(path) == (1200, 800)
    flags = []
    real_imread = cv2.imread

    def spy(name, flag):
        flags.append(flag)
        return real_imread(name, flag)

    monkeypatch.setattr(resize_module.cv2, "imread", spy)
    assert resize_image(path, 100).shape == (100, 100, 3)
    assert resize_image(path, 300).shape == (300, 300, 3)
    assert resize_image(path, 900).shape == (900, 900, 3)  # upscaling, full decode
    assert flags == [cv2.IMREAD_REDUCED_COLOR_8, cv2.IMREAD_REDUCED_COLOR_2, cv2.IMREAD_COLOR]
    out = resize_image(path, 64)  # decoded at 1/8 (100 px short side), then resized
    full = cv2.cvtColor(
        cv2.resize(img[:, 200:1000], (64, 64), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB
    )
    assert np.abs(out.astype(int) - full.astype(int)).mean() < 6


def test_image_size_png_and_progressive(tmp_path):
    png = write_bgr(tmp_path / "x.png", np.zeros((7, 11, 3), np.uint8), ".png")
    assert image_size(png) == (11, 7)
    ok, buf = cv2.imencode(
        ".jpg", np.zeros((33, 21, 3), np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    )
    prog = tmp_path / "p.jpg"
    prog.write_bytes(buf.tobytes())
    assert image_size(prog) == (21, 33)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    assert image_size(junk) is None


def test_resize_table_sizes_index_and_skip(images, tmp_path):
    root, csv = images
    cache = tmp_path / "cache"
    written = resize_table(csv, root, [32, 16], cache)
    assert written == {16: 4, 32: 4}
    for size in (16, 32):
        for i in range(1, 5):
            img = load_cached(cache, size, f"ISIC_000000{i}")
            assert img.shape == (size, size, 3)
        index = pd.read_csv(index_path(cache, size, csv))
        assert list(index.columns) == ["image_name", "path"]
        assert index["path"].iloc[0] == f"{size}/ISIC_0000001.jpg"
        assert all((cache / p).is_file() for p in index["path"])
    assert index_path(cache, 16, csv) == cache / "16" / "index_train.csv"
    # present files are skipped (a marker survives), --overwrite redoes them
    marker = cache_path(cache, 16, "ISIC_0000002")
    marker.write_bytes(b"sentinel")
    assert resize_table(csv, root, [16], cache) == {16: 0}
    assert marker.read_bytes() == b"sentinel"
    assert resize_table(csv, root, [16], cache, overwrite=True) == {16: 4}
    assert marker.read_bytes() != b"sentinel"
    # red PNG source is cached as RGB red
    assert load_cached(cache, 32, "ISIC_0000004")[..., 0].min() > 230


def test_image_path_column_and_workers(images, tmp_path):
    root, _ = images
    csv = tmp_path / "ext.csv"
    pd.DataFrame(
        {"image_name": ["A", "B"], "image_path": ["img/ISIC_0000001.jpg", "img/ISIC_0000002.jpg"]}
    ).to_csv(csv, index=False)
    cache = tmp_path / "cache"
    assert resize_table(csv, tmp_path, [24], cache, workers=2) == {24: 2}
    direct = resize_image(root / "ISIC_0000002.jpg", 24).astype(int)
    assert np.abs(load_cached(cache, 24, "B").astype(int) - direct).mean() < 4
    assert (cache / "24" / "index_ext.csv").is_file()


def test_missing_files_listed(images, tmp_path):
    root, _ = images
    csv = tmp_path / "m.csv"
    names = ["ISIC_0000001"] + [f"ISIC_99{i:05d}" for i in range(8)]
    pd.DataFrame({"image_name": names}).to_csv(csv, index=False)
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError) as err:
        resize_table(csv, root, [16], cache)
    msg = str(err.value)
    assert "8 of 9 source image(s) missing" in msg
    assert "ISIC_9900000" in msg and "and 3 more" in msg
    assert not index_path(cache, 16, csv).exists()
    assert not cache_path(cache, 16, "ISIC_0000001").exists()  # nothing done


@pytest.mark.parametrize(
    "content, words",
    [(b"", "empty file"), (None, "truncated JPEG"), (b"\xff\xd8garbage\xff\xd9", "cannot decode")],
)
def test_unreadable_file_stops_with_its_name(images, tmp_path, content, words):
    root, csv = images
    bad = root / "ISIC_0000003.jpg"
    if content is None:  # cut a real JPEG in half
        content = (root / "ISIC_0000001.jpg").read_bytes()
        content = content[: len(content) // 2]
    bad.write_bytes(content)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError) as err:
        resize_table(csv, root, [16], cache)
    assert "ISIC_0000003.jpg" in str(err.value) and words in str(err.value)
    assert not index_path(cache, 16, csv).exists()
    assert cache_path(cache, 16, "ISIC_0000001").exists()  # the good ones are kept


def test_load_cached_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="not cached"):
        load_cached(tmp_path, 16, "nope")


def test_cli(images, tmp_path, capsys):
    root, csv = images
    cache = tmp_path / "cache"
    args = [
        "resize",
        "--csv",
        str(csv),
        "--image-root",
        str(root),
        "--size",
        "16",
        "--size",
        "8",
        "--out",
        str(cache),
        "--workers",
        "1",
    ]
    assert main(args) == 0
    assert "size 8: 4 image(s) written" in capsys.readouterr().out
    (root / "ISIC_0000004.jpg").unlink()
    assert main([*args, "--overwrite"]) == 1
    assert "ISIC_0000004" in capsys.readouterr().err
