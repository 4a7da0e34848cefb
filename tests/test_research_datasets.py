"""The paper's imbalanced construction and the data set readers, on tiny files written here."""

import gzip
import pickle
import struct

import numpy as np
import pytest

from deepauc.research.datasets import (
    DatasetUnavailable,
    LabelledImages,
    fixed_test_split,
    load_benchmark,
    load_cats_vs_dogs,
    load_cifar10,
    load_cifar100,
    load_digits_images,
    load_elpv,
    load_fashion_mnist,
    load_stl10,
    make_imbalanced,
    read_idx,
    resize_images,
)


def toy_set(n_train=2000, n_test=300, classes=10, seed=0) -> LabelledImages:
    rng = np.random.default_rng(seed)
    ytr = rng.integers(0, classes, n_train)
    yte = rng.integers(0, classes, n_test)
    # the image encodes its row index, so the tests can trace rows
    xtr = np.zeros((n_train, 1, 4, 4), np.uint8)
    xtr[:, 0, 0, 0] = np.arange(n_train) % 256
    xtr[:, 0, 0, 1] = np.arange(n_train) // 256
    xte = rng.integers(0, 255, (n_test, 1, 4, 4), dtype=np.uint8)
    return LabelledImages("toy", xtr, ytr, xte, yte, classes)


# ---- the construction ------------------------------------------------------------------


@pytest.mark.parametrize("imratio", [0.01, 0.05, 0.1, 0.3])
def test_ratio_is_exact(imratio):
    data = toy_set()
    s = make_imbalanced(data, imratio, seed=3)
    n = len(s.y_train) + len(s.y_val)
    n_neg_all = int((data.y_train < 5).sum())
    assert s.n_neg == n_neg_all  # every negative kept
    assert s.n_pos == round(imratio / (1 - imratio) * n_neg_all)
    assert abs(s.n_pos / n - imratio) <= 1 / n
    assert s.imratio == pytest.approx(s.n_pos / n)


def test_positive_classes_are_the_upper_half_and_test_is_untouched():
    data = toy_set()
    s = make_imbalanced(data, 0.05, seed=0)
    np.testing.assert_array_equal(s.x_test, data.x_test)
    np.testing.assert_array_equal(s.y_test, (data.y_test >= 5).astype(int))
    rows = np.concatenate([s.train_index, s.val_index])
    assert len(np.unique(rows)) == len(rows)  # no duplicates
    np.testing.assert_array_equal(
        np.concatenate([s.y_train, s.y_val]), (data.y_train[rows] >= 5).astype(int)
    )
    # images follow their labels
    idx = s.x_train[:, 0, 0, 0].astype(int) + 256 * s.x_train[:, 0, 0, 1].astype(int)
    np.testing.assert_array_equal(idx, s.train_index)


def test_custom_positive_classes():
    data = toy_set()
    s = make_imbalanced(data, 0.05, seed=0, positive_classes=[0])
    rows = np.concatenate([s.train_index, s.val_index])
    np.testing.assert_array_equal(
        np.concatenate([s.y_train, s.y_val]), (data.y_train[rows] == 0).astype(int)
    )
    assert s.n_neg == int((data.y_train != 0).sum())


def test_validation_is_ten_percent_and_stratified():
    s = make_imbalanced(toy_set(), 0.1, seed=1)
    n = len(s.y_train) + len(s.y_val)
    assert abs(len(s.y_val) - 0.1 * n) <= 1
    assert abs(s.y_val.sum() - 0.1 * s.n_pos) <= 0.5
    assert not set(s.train_index) & set(s.val_index)


def test_seeded():
    data = toy_set()
    a, b = make_imbalanced(data, 0.05, 7), make_imbalanced(data, 0.05, 7)
    np.testing.assert_array_equal(a.train_index, b.train_index)
    np.testing.assert_array_equal(a.val_index, b.val_index)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    c = make_imbalanced(data, 0.05, 8)
    kept = lambda s: set(np.concatenate([s.train_index, s.val_index]).tolist())  # noqa: E731
    assert kept(a) != kept(c)  # another seed drops other positives


def test_min_positives_raises_the_ratio():
    data = toy_set(n_train=500)
    s = make_imbalanced(data, 0.01, 0, min_positives=20)
    assert s.n_pos == 20
    assert s.imratio > 0.01 and s.requested_imratio == 0.01


def test_impossible_ratio_and_bad_arguments():
    data = toy_set(n_train=200)
    with pytest.raises(ValueError, match="positives"):
        make_imbalanced(data, 0.5, 0, min_positives=10_000)
    with pytest.raises(ValueError, match="imratio"):
        make_imbalanced(data, 0.7, 0)
    with pytest.raises(ValueError, match="positive_classes"):
        make_imbalanced(data, 0.1, 0, positive_classes=list(range(10)))


def test_binary_set_keeps_its_labels():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(int)
    data = LabelledImages(
        "bin", np.zeros((400, 1, 2, 2), np.uint8), y, np.zeros((50, 1, 2, 2), np.uint8), y[:50], 2
    )
    s = make_imbalanced(data, 0.1, 0)
    assert s.n_neg == int((y == 0).sum())
    np.testing.assert_array_equal(s.y_test, y[:50])


def test_fixed_test_split_is_stratified_and_fixed():
    y = np.repeat(np.arange(4), 50)
    tr, te = fixed_test_split(y, 0.3)
    assert not set(tr) & set(te) and len(tr) + len(te) == 200
    assert all((y[te] == c).sum() == 15 for c in range(4))
    np.testing.assert_array_equal(te, fixed_test_split(y, 0.3)[1])


def test_resize_images_area_average():
    x = np.arange(16, dtype=np.uint8).reshape(1, 1, 4, 4)
    out = resize_images(x, 2)
    assert out.dtype == np.uint8 and out.shape == (1, 1, 2, 2)
    assert out[0, 0, 0, 0] == round((0 + 1 + 4 + 5) / 4)
    assert resize_images(x, None) is x


def test_digits_loader():
    d = load_digits_images()
    assert d.x_train.shape[1:] == (1, 8, 8) and d.x_train.dtype == np.uint8
    assert len(d.y_train) + len(d.y_test) == 1797
    assert d.x_train.max() == 255


# ---- readers on tiny files in the standard formats ----------------------------------------


def write_idx(path, arr, gz=True):
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def test_idx_reader_and_fashion_loader(tmp_path):
    rng = np.random.default_rng(0)
    xtr = rng.integers(0, 255, (30, 28, 28), dtype=np.uint8)
    ytr = np.arange(30, dtype=np.uint8) % 10
    xte = rng.integers(0, 255, (10, 28, 28), dtype=np.uint8)
    yte = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", xtr)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", ytr)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", xte, gz=False)  # uncompressed works too
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", yte)
    np.testing.assert_array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), xtr)
    d = load_fashion_mnist(tmp_path)
    np.testing.assert_array_equal(d.x_train[:, 0], xtr)
    np.testing.assert_array_equal(d.y_test, yte)
    assert d.num_classes == 10
    small = load_benchmark("fashion_mnist", root=str(tmp_path), image_size=14)
    assert small.x_train.shape == (30, 1, 14, 14)


def test_idx_reader_rejects_garbage(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04\x05")
    with pytest.raises(ValueError, match="IDX"):
        read_idx(tmp_path / "bad")


def test_fashion_missing_says_what_to_install(tmp_path):
    with pytest.raises(DatasetUnavailable, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)


def _cifar_batch(path, n, label_key, rng, labels):
    data = rng.integers(0, 255, (n, 3072), dtype=np.uint8)
    with open(path, "wb") as f:
        pickle.dump({b"data": data, label_key.encode(): list(labels), b"batch_label": b"x"}, f)
    return data.reshape(n, 3, 32, 32)


def test_cifar10_reader(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    x1 = _cifar_batch(d / "data_batch_1", 6, "labels", rng, range(6))
    x2 = _cifar_batch(d / "data_batch_2", 4, "labels", rng, range(4, 8))
    xt = _cifar_batch(d / "test_batch", 5, "labels", rng, range(5))
    data = load_cifar10(tmp_path)
    np.testing.assert_array_equal(data.x_train, np.concatenate([x1, x2]))
    np.testing.assert_array_equal(data.y_train, [0, 1, 2, 3, 4, 5, 4, 5, 6, 7])
    np.testing.assert_array_equal(data.x_test, xt)
    assert load_cifar10(d).x_train.shape == (10, 3, 32, 32)  # the folder itself works too


def test_cifar100_reader(tmp_path):
    rng = np.random.default_rng(1)
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    xtr = _cifar_batch(d / "train", 8, "fine_labels", rng, [0, 99, 50, 49, 1, 2, 3, 4])
    _cifar_batch(d / "test", 3, "fine_labels", rng, [5, 60, 70])
    data = load_cifar100(tmp_path)
    np.testing.assert_array_equal(data.x_train, xtr)
    assert data.num_classes == 100
    s = make_imbalanced(data, 0.2, 0)
    assert set(s.y_test.tolist()) == {0, 1}


def test_stl10_reader(tmp_path):
    rng = np.random.default_rng(2)
    d = tmp_path / "stl10_binary"
    d.mkdir()
    imgs = {}
    for part, n in (("train", 4), ("test", 3)):
        x = rng.integers(0, 255, (n, 3, 96, 96), dtype=np.uint8)  # row-major H×W
        x.transpose(0, 1, 3, 2).tofile(d / f"{part}_X.bin")  # stored column-major
        (np.arange(n, dtype=np.uint8) + 1).tofile(d / f"{part}_y.bin")
        imgs[part] = x
    data = load_stl10(tmp_path)
    np.testing.assert_array_equal(data.x_train, imgs["train"])
    np.testing.assert_array_equal(data.x_test, imgs["test"])
    np.testing.assert_array_equal(data.y_train, [0, 1, 2, 3])


def _jpgs(folder, names, rng):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / name)


@pytest.mark.parametrize("layout", ["kaggle", "microsoft"])
def test_cats_vs_dogs_reader(tmp_path, layout):
    rng = np.random.default_rng(3)
    if layout == "kaggle":
        _jpgs(
            tmp_path, [f"cat.{i}.jpg" for i in range(5)] + [f"dog.{i}.jpg" for i in range(5)], rng
        )
    else:
        _jpgs(tmp_path / "Cat", [f"{i}.jpg" for i in range(5)], rng)
        _jpgs(tmp_path / "Dog", [f"{i}.jpg" for i in range(5)], rng)
        (tmp_path / "Dog" / "broken.jpg").write_bytes(b"not a jpeg")
    data = load_cats_vs_dogs(tmp_path, image_size=16, test_fraction=0.2)
    assert data.x_train.shape[1:] == (3, 16, 16)
    assert len(data.y_train) + len(data.y_test) == 10
    assert sorted(data.y_test.tolist()) == [0, 1]
    if layout == "microsoft":
        assert data.info["skipped_unreadable"] == 1


def test_readers_say_when_files_are_missing(tmp_path):
    for loader in (load_cifar10, load_cifar100, load_stl10, load_cats_vs_dogs):
        with pytest.raises(DatasetUnavailable):
            loader(tmp_path)
    with pytest.raises(DatasetUnavailable, match="root"):
        load_benchmark("cifar10")
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark("mnist3d")


def test_elpv_loader_with_a_stand_in_package(tmp_path, monkeypatch):
    """The loader's own work (threshold, resize, split, cache) on a fake ``elpv_dataset``."""
    import sys
    import types

    rng = np.random.default_rng(4)
    probs = np.array([0, 1 / 3, 2 / 3, 1.0] * 10)
    images = rng.integers(0, 255, (40, 300, 300), dtype=np.uint8)
    pkg, utils = types.ModuleType("elpv_dataset"), types.ModuleType("elpv_dataset.utils")
    utils.load_dataset = lambda: (images, probs, np.array(["mono"] * 40))
    pkg.utils = utils
    monkeypatch.setitem(sys.modules, "elpv_dataset", pkg)
    monkeypatch.setitem(sys.modules, "elpv_dataset.utils", utils)
    d = load_elpv(image_size=16, cache_dir=tmp_path)
    assert d.x_train.shape[1:] == (1, 16, 16) and d.num_classes == 2
    assert len(d.y_train) + len(d.y_test) == 40
    assert sum(d.y_train) + sum(d.y_test) == 20  # probability >= 0.5
    assert len(d.y_test) == 10  # a fixed stratified 25 %
    monkeypatch.setitem(sys.modules, "elpv_dataset.utils", None)  # now only the cache can serve
    again = load_elpv(image_size=16, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.x_test, d.x_test)


def test_elpv_missing_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "elpv_dataset", None)
    monkeypatch.setitem(sys.modules, "elpv_dataset.utils", None)
    with pytest.raises(DatasetUnavailable, match="pip install elpv-dataset"):
        load_elpv(image_size=16)
