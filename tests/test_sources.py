"""The .npz source streams arrays chunk by chunk and refuses what is not MNIST-shaped."""

from __future__ import annotations

import numpy as np
import pytest

import ooc
from ooc.errors import SourceError
from ooc.sources import NpzSource, open_source

from conftest import MNIST


def test_streams_exactly_what_np_load_reads():
    source = NpzSource.open(MNIST)
    with np.load(MNIST) as d:
        x, y = d["x_test"], d["y_test"]
    chunks = list(source.iter_chunks("test", 3000))
    assert [len(c[0]) for c in chunks] == [3000, 3000, 3000, 1000]
    assert np.array_equal(np.concatenate([c[0] for c in chunks]), x)
    assert np.array_equal(np.concatenate([c[1] for c in chunks]), y)
    assert [len(c[0]) for c in source.iter_chunks("train", 100, limit=250)] == [100, 100, 50]


def test_bundled_mnist_is_the_real_one():
    source = open_source()
    assert source.sha256() == "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64"
    assert (source.num_samples("train"), source.num_samples("test"), source.sample_shape) == (60000, 10000, (28, 28))


def _npz(path, **arrays):
    base = {"x_train": np.zeros((4, 5, 5), np.uint8), "y_train": np.arange(4), "x_test": np.zeros((2, 5, 5), np.uint8), "y_test": np.arange(2)}
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return path


def test_other_npz_sources_convert(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (4, 5, 5), dtype=np.uint8)
    src = _npz(tmp_path / "small.npz", x_train=x)
    ooc.convert(tmp_path / "s", format="zarr", source=src)
    store = ooc.open_store(tmp_path / "s")
    assert store.sample_shape == (5, 5) and store.num_classes == 4
    assert np.array_equal(store.read("train", [3, 1])[0][..., 0], x[[3, 1]] / np.float32(255))


@pytest.mark.parametrize("arrays,message", [
    ({"y_test": None}, r"has no array 'y_test' \(found: x_test, x_train, y_train\); an .npz source needs x_train, y_train, x_test, y_test$"),
    ({"x_train": np.zeros((4, 5, 5), np.float64)}, r": x_train is float64 of shape \(4, 5, 5\); ooc expects uint8 images of shape \(n, height, width\)$"),
    ({"y_train": np.zeros(4, np.float32)}, r": y_train is float32 of shape \(4,\); ooc expects integer labels of shape \(n,\)$"),
    ({"y_train": np.arange(3)}, r": x_train has 4 samples but y_train has 3 labels$"),
    ({"x_test": np.zeros((2, 6, 6), np.uint8)}, r": train images are \(5, 5\) but test images are \(6, 6\)$"),
])
def test_bad_npz_sources(tmp_path, arrays, message):
    src = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(SourceError, match=message):
        ooc.convert(tmp_path / "s", format="hdf5", source=src)
    assert not (tmp_path / "s").exists()


def test_missing_and_broken_source_files(tmp_path):
    with pytest.raises(SourceError, match=r"nope.npz: no such source file; pass --source PATH"):
        open_source(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(SourceError, match=r"junk.npz is not a readable .npz file"):
        open_source(tmp_path / "junk.npz")


def test_repeat_writes_shifted_copies_of_train(tmp_path):
    ooc.convert(tmp_path / "s", format="hdf5", source=MNIST, limit=100, repeat=3, chunk_size=64)
    store = ooc.open_store(tmp_path / "s")
    assert (store.num_samples("train"), store.num_samples("test")) == (300, 100)
    assert store.manifest["source"]["repeat"] == 3
    with np.load(MNIST) as d:
        x, y = d["x_train"][:100], d["y_train"][:100]
    got, labels = store.read("train", np.arange(300))
    pixels = np.rint(got[..., 0] * 255).astype(np.uint8)
    assert np.array_equal(pixels[:100], x) and np.array_equal(labels, np.tile(y, 3))
    for copy in (1, 2):
        shifted = pixels[copy * 100:(copy + 1) * 100]
        assert not np.array_equal(shifted, x)
        for image, original in zip(shifted, x):  # each image is the original moved by at most 2 pixels
            assert any(np.array_equal(image[2:-2, 2:-2], original[2 - dy:26 - dy, 2 - dx:26 - dx])
                       for dy in range(-2, 3) for dx in range(-2, 3))


def _write_idx(folder, compress=False, **override):
    import gzip

    folder.mkdir(exist_ok=True)
    with np.load(MNIST) as d:
        arrays = {"train-images-idx3-ubyte": d["x_train"][:50], "train-labels-idx1-ubyte": d["y_train"][:50],
                  "t10k-images-idx3-ubyte": d["x_test"][:20], "t10k-labels-idx1-ubyte": d["y_test"][:20]}
    for name, array in arrays.items():
        data = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">u4").tobytes() + array.tobytes()
        data = override.get(name, data)
        if compress:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder, arrays


@pytest.mark.parametrize("compress", [False, True])
def test_idx_folder_converts_exactly(tmp_path, compress):
    folder, arrays = _write_idx(tmp_path / "idx", compress=compress)
    ooc.convert(tmp_path / "s", format="zarr", source=folder)
    store = ooc.open_store(tmp_path / "s")
    assert (store.num_samples("train"), store.num_samples("test")) == (50, 20)
    x, y = store.read("test", np.arange(20))
    assert np.array_equal(np.rint(x[..., 0] * 255).astype(np.uint8), arrays["t10k-images-idx3-ubyte"])
    assert np.array_equal(y, arrays["t10k-labels-idx1-ubyte"])


def test_bad_idx_files(tmp_path):
    header = bytes([0, 0, 8, 3]) + np.array([50, 28, 28], ">u4").tobytes()
    folder, _ = _write_idx(tmp_path / "a", **{"train-images-idx3-ubyte": header + bytes(50 * 784 - 10)})
    with pytest.raises(SourceError, match=r"train-images-idx3-ubyte is truncated: the header promises 39200 values of shape \(50, 28, 28\), the file holds 39190$"):
        open_source(folder)
    folder, _ = _write_idx(tmp_path / "b", compress=True, **{"t10k-labels-idx1-ubyte": bytes([0, 0, 9, 1]) + bytes(8)})
    with pytest.raises(SourceError, match=r"t10k-labels-idx1-ubyte.gz: not an IDX file of unsigned bytes with 1 dimension\(s\) \(magic number 00000901, expected 00000801\)$"):
        open_source(folder)
    folder, _ = _write_idx(tmp_path / "c", **{"t10k-labels-idx1-ubyte": bytes([0, 0, 8, 1]) + np.array([19], ">u4").tobytes() + bytes(19)})
    with pytest.raises(SourceError, match=r"t10k-images-idx3-ubyte holds 20 images but .*t10k-labels-idx1-ubyte holds 19 labels$"):
        open_source(folder)
    (tmp_path / "d").mkdir()
    with pytest.raises(SourceError, match=r"has no train-images-idx3-ubyte\[.gz\]: an IDX source folder needs"):
        ooc.convert(tmp_path / "s", format="hdf5", source=tmp_path / "d")
    assert not (tmp_path / "s").exists()
