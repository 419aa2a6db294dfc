"""Sources (.npz, IDX folders, image folders) stream chunk by chunk, keep what they hold and refuse what
ooc cannot store."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import ooc
from ooc.errors import OptionError, SourceError
from ooc.sources import ImageFolderSource, NpzSource, SourceOptions, open_source, parse_size

from conftest import MNIST

IN_ORDER = SourceOptions(order="source")


def test_streams_exactly_what_np_load_reads():
    source = NpzSource.open(MNIST)
    with np.load(MNIST) as d:
        x, y = d["x_test"], d["y_test"]
    chunks = list(source.iter_chunks("test", 3000))
    assert [len(c[0]) for c in chunks] == [3000, 3000, 3000, 1000]
    assert np.array_equal(
        np.concatenate([c[0] for c in chunks]), x[..., None]
    )  # grayscale gains its channel axis
    assert np.array_equal(np.concatenate([c[1] for c in chunks]), y)
    assert [len(c[0]) for c in source.iter_chunks("train", 100, limit=250)] == [100, 100, 50]


def test_bundled_mnist_is_the_real_one():
    source = open_source()
    assert source.sha256() == "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64"
    assert (source.num_samples("train"), source.num_samples("test"), source.sample_shape) == (
        60000,
        10000,
        (28, 28, 1),
    )


def _npz(path, **arrays):
    base = {
        "x_train": np.zeros((4, 5, 5), np.uint8),
        "y_train": np.arange(4),
        "x_test": np.zeros((2, 5, 5), np.uint8),
        "y_test": np.arange(2),
    }
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return path


def test_other_npz_sources_convert(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (4, 5, 5), dtype=np.uint8)
    src = _npz(tmp_path / "small.npz", x_train=x)
    ooc.convert(tmp_path / "s", format="zarr", source=src)
    store = ooc.open_store(tmp_path / "s")
    assert store.sample_shape == (5, 5, 1) and store.num_classes == 4
    assert np.array_equal(store.read("train", [3, 1])[0][..., 0], x[[3, 1]] / np.float32(255))


@pytest.mark.parametrize(
    "arrays,message",
    [
        (
            {"y_test": None},
            r"has no array 'y_test' \(found: x_test, x_train, y_train\); an .npz source needs x_train, "
            r"y_train, x_test, y_test$",
        ),
        (
            {"x_train": np.zeros((4, 5, 5), np.complex64)},
            r": x_train, y_train: samples are complex64; ooc stores uint8, .*, bool: convert the array first$",
        ),
        (
            {"y_train": np.zeros((4, 2, 2), np.int8)},
            r": x_train, y_train: targets are int8 of shape \(n, 2, 2\); ooc takes integer classes \(n,\), "
            r"0/1 vectors \(n, k\) for one-hot or multi-label, or floats for regression$",
        ),
        ({"y_train": np.arange(3)}, r": x_train has 4 samples but y_train has 3 labels$"),
        (
            {"x_test": np.zeros((2, 6, 6), np.uint8)},
            r": train samples are uint8 \(5, 5, 1\) with targets int64 \(\), but test samples are uint8 "
            r"\(6, 6, 1\) with targets int64 \(\)$",
        ),
        (
            {"y_train": -np.arange(4)},
            r"the train targets hold negative class numbers; classes must be 0, 1, …$",
        ),
    ],
)
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
        shifted = pixels[copy * 100 : (copy + 1) * 100]
        assert not np.array_equal(shifted, x)
        for image, original in zip(shifted, x):  # each image is the original moved by at most 2 pixels
            assert any(
                np.array_equal(image[2:-2, 2:-2], original[2 - dy : 26 - dy, 2 - dx : 26 - dx])
                for dy in range(-2, 3)
                for dx in range(-2, 3)
            )


def _write_idx(folder, compress=False, **override):
    import gzip

    folder.mkdir(exist_ok=True)
    with np.load(MNIST) as d:
        arrays = {
            "train-images-idx3-ubyte": d["x_train"][:50],
            "train-labels-idx1-ubyte": d["y_train"][:50],
            "t10k-images-idx3-ubyte": d["x_test"][:20],
            "t10k-labels-idx1-ubyte": d["y_test"][:20],
        }
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
    with pytest.raises(
        SourceError,
        match=r"train-images-idx3-ubyte is truncated: the header promises 39200 values of shape \(50, 28, "
        r"28\), the file holds 39190$",
    ):
        open_source(folder)
    folder, _ = _write_idx(
        tmp_path / "b", compress=True, **{"t10k-labels-idx1-ubyte": bytes([0, 0, 9, 1]) + bytes(8)}
    )
    with pytest.raises(
        SourceError,
        match=r"t10k-labels-idx1-ubyte.gz: not an IDX file of unsigned bytes with 1 dimension\(s\) \(magic "
        r"number 00000901, expected 00000801\)$",
    ):
        open_source(folder)
    folder, _ = _write_idx(
        tmp_path / "c",
        **{"t10k-labels-idx1-ubyte": bytes([0, 0, 8, 1]) + np.array([19], ">u4").tobytes() + bytes(19)},
    )
    with pytest.raises(
        SourceError,
        match=r"t10k-images-idx3-ubyte holds 20 images but .*t10k-labels-idx1-ubyte holds 19 labels$",
    ):
        open_source(folder)
    (tmp_path / "d").mkdir()
    with pytest.raises(
        SourceError, match=r"has no train-images-idx3-ubyte\[.gz\]: an IDX source folder needs"
    ):
        ooc.convert(tmp_path / "s", format="hdf5", source=tmp_path / "d")
    assert not (tmp_path / "s").exists()


def _image_folder(root, classes=("0", "1", "2"), per_class=(4, 2)):
    """MNIST digits as PNGs in train/CLASS/ and test/CLASS/, named so that file order is not
    creation order; returns the pixels and labels each split must convert to."""
    with np.load(MNIST) as d:
        digits = iter(d["x_train"][:300])
    expected = {}
    for split, count in zip(("train", "test"), per_class):
        xs, ys = [], []
        for label, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            images = {f"{'zyxwvu'[k % 6]}{k}.png": next(digits) for k in range(count)}
            for file, image in images.items():
                Image.fromarray(image).save(root / split / name / file)
            xs += [images[file] for file in sorted(images)]
            ys += [int(name) if name.isdigit() else label] * count
        expected[split] = np.array(xs), np.array(ys)
    return root, expected


def test_image_folder_converts_exactly(tmp_path):
    folder, expected = _image_folder(tmp_path / "images")
    (folder / "train" / "0" / "notes.txt").write_text("not an image")
    (folder / "train" / "1" / ".hidden.png").write_bytes(b"not an image either")
    (folder / "train" / ".ipynb_checkpoints").mkdir()
    (folder / "test" / "README").write_text("ignored")
    manifest = ooc.convert(tmp_path / "s", format="zarr", source=folder, source_options=IN_ORDER)
    assert manifest["source"]["size"] is None and manifest["target"]["class_names"] == ["0", "1", "2"]
    assert manifest["order"] == {"kind": "source"}
    store = ooc.open_store(tmp_path / "s")
    assert (store.num_samples("train"), store.num_samples("test"), store.sample_shape) == (12, 6, (28, 28, 1))
    for split, (x, y) in expected.items():
        got, labels = store.read(split, np.arange(len(x)))
        assert np.array_equal(np.rint(got[..., 0] * 255).astype(np.uint8), x)
        assert np.array_equal(labels, y)
    source = open_source(folder, IN_ORDER)
    assert isinstance(source, ImageFolderSource) and source.schema.target_dtype == np.uint8
    chunks = list(source.iter_chunks("train", 5, limit=11))
    assert [len(c[0]) for c in chunks] == [5, 5, 1]
    assert np.array_equal(np.concatenate([c[0] for c in chunks]), expected["train"][0][:11, ..., None])


def test_image_folder_is_shuffled_when_written(tmp_path):
    """An image folder lists its samples class by class: written as listed, the chunk shuffle would
    feed batches of one or two classes. By default it is written in a seeded random order."""
    folder, expected = _image_folder(tmp_path / "images", per_class=(40, 2))
    manifest = ooc.convert(tmp_path / "s", format="hdf5", source=folder, chunk_size=8)
    assert manifest["order"] == {"kind": "shuffled", "seed": 0}
    x, y = ooc.open_store(tmp_path / "s").read("train", np.arange(120))
    order = np.random.default_rng([0, 0]).permutation(120)
    assert np.array_equal(y, expected["train"][1][order])
    assert np.array_equal(np.rint(x[..., 0] * 255).astype(np.uint8), expected["train"][0][order])
    kept = ooc.convert(tmp_path / "k", format="hdf5", source=folder, chunk_size=8, source_options=IN_ORDER)
    assert kept["order"] == {"kind": "source", "grouped_by_class": True}


def test_image_folder_checksum_follows_names_and_bytes(tmp_path):
    folder, _ = _image_folder(tmp_path / "images")
    before = open_source(folder).sha256()
    assert open_source(folder).sha256() == before
    (folder / "train" / "0" / "z0.png").rename(
        folder / "train" / "1" / "a0.png"
    )  # relabelled, bytes unchanged
    assert open_source(folder).sha256() != before


def test_image_folder_size_resizes_like_pillow(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("0", "1"):
            (tmp_path / "rgb" / split / name).mkdir(parents=True)
            for k in range(2):
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
                    tmp_path / "rgb" / split / name / f"{k}.png"
                )
    files = sorted((tmp_path / "rgb" / "train").glob("*/*.png"))
    manifest = ooc.convert(
        tmp_path / "s", format="zarr", source=tmp_path / "rgb", size=28, source_options=IN_ORDER
    )
    assert manifest["source"]["size"] == [28, 28]
    store = ooc.open_store(tmp_path / "s")
    assert store.sample_shape == (28, 28, 3)  # colour is kept
    pixels = np.rint(store.read("train", np.arange(4))[0] * 255).astype(np.uint8)
    for image, file in zip(pixels, files):
        assert np.array_equal(
            image, np.asarray(Image.open(file).convert("RGB").resize((28, 28), Image.Resampling.BILINEAR))
        )
    gray = ooc.convert(
        tmp_path / "g",
        format="zarr",
        source=tmp_path / "rgb",
        size=28,
        source_options=SourceOptions(order="source", color="gray"),
    )
    assert gray["sample_shape"] == [28, 28, 1]
    pixels = ooc.open_store(tmp_path / "g").read_stored("train", np.arange(4))[0]
    for image, file in zip(pixels, files):
        assert np.array_equal(
            image[..., 0],
            np.asarray(Image.open(file).convert("L").resize((28, 28), Image.Resampling.BILINEAR)),
        )
    x, _ = next(open_source(tmp_path / "rgb", size="20x30").iter_chunks("test", 10))  # HxW, not WxH
    assert x.shape == (4, 20, 30, 3)


def test_image_folder_sizes_must_match_without_size(tmp_path):
    folder, _ = _image_folder(tmp_path / "images")
    odd = folder / "train" / "1" / "odd.png"
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(odd)
    first = folder / "train" / "0" / "w3.png"  # the first in (class, file name) order
    message = (
        f"{odd} is 20x30 pixels but {first} is 28x28; pass --size 28x28 (or --size N for NxN) "
        "to resize every image"
    )
    with pytest.raises(SourceError, match=re.escape(message) + "$"):
        ooc.convert(tmp_path / "s", format="hdf5", source=folder)
    assert not (tmp_path / "s").exists()
    ooc.convert(tmp_path / "s", format="hdf5", source=folder, size=28)  # --size is the fix
    assert ooc.open_store(tmp_path / "s").num_samples("train") == 13


@pytest.mark.parametrize(
    "damage,reason",
    [
        (lambda png: b"not an image", "cannot identify image file"),
        (lambda png: png[: len(png) // 2], "image file is truncated"),
    ],
)
def test_broken_image_is_named(tmp_path, damage, reason):
    folder, _ = _image_folder(tmp_path / "images")
    broken = folder / "train" / "1" / "y1.png"
    broken.write_bytes(damage(broken.read_bytes()))
    with pytest.raises(
        SourceError,
        match=re.escape(f"{broken} is not a readable image (")
        + f".*{reason}.*"
        + re.escape("); repair or remove the file")
        + "$",
    ):
        ooc.convert(tmp_path / "s", format="zarr", source=folder)
    assert not (tmp_path / "s").exists()


def test_wide_pixels_are_refused_not_clipped(tmp_path):
    folder, _ = _image_folder(tmp_path / "images")
    wide = folder / "train" / "2" / "a.png"
    Image.fromarray(np.full((28, 28), 40000, np.uint16)).save(wide)
    with pytest.raises(
        SourceError,
        match=re.escape(
            f"{wide} has I;16 pixels, wider than 8 bits, which ooc would clip; save the images as 8-bit"
        )
        + "$",
    ):
        ooc.convert(tmp_path / "s", format="zarr", source=folder)


def test_image_folder_class_names(tmp_path):
    folder, _ = _image_folder(tmp_path / "pets", classes=("cat", "dog"))
    source = open_source(folder, IN_ORDER)
    assert source.classes == ["cat", "dog"]
    assert np.array_equal(next(source.iter_chunks("train", 100))[1], [0] * 4 + [1] * 4)
    folder, _ = _image_folder(
        tmp_path / "numbers", classes=("2", "10")
    )  # labels are the numbers, in their order
    source = open_source(folder, IN_ORDER)
    assert source.classes == ["2", "10"] and np.array_equal(
        next(source.iter_chunks("test", 100))[1], [2, 2, 10, 10]
    )


@pytest.mark.parametrize(
    "make,message",
    [
        (
            lambda f: (f / "test" / "bird").mkdir(),
            r"test/bird is a class that train/ does not have; add .*train/bird or remove it \(train/ has 0, "
            r"1, 2\)$",
        ),
        (
            lambda f: [p.unlink() for p in (f / "test").glob("*/*.png")],
            r"/test holds no images \(.png, .jpg, .jpeg, .bmp, .gif, .tif, .tiff, .webp\) in its class "
            r"folders: an image-folder source needs",
        ),
        (
            lambda f: [p.rename(f / p.name) for p in (f / "train").iterdir()],
            r"/train has no class folders: an image-folder source needs train/ and test/, each with a "
            r"sub-folder of images per class \(train/3/xxx.png\)$",
        ),
        (
            lambda f: [p.rename(f / f"t{p.name}") for p in (f / "test").iterdir()] and (f / "test").rmdir(),
            r"/images has no test/ folder: an image-folder source needs train/ and test/",
        ),
    ],
)
def test_bad_image_folders(tmp_path, make, message):
    folder, _ = _image_folder(tmp_path / "images")
    make(folder)
    with pytest.raises(SourceError, match=message):
        ooc.convert(tmp_path / "s", format="hdf5", source=folder)
    assert not (tmp_path / "s").exists()


def test_size_is_for_image_folders_only(tmp_path):
    with pytest.raises(
        SourceError,
        match=r"--size applies to image-folder sources only; .*mnist.npz is not one \(an image folder has "
        r"train/ and test/",
    ):
        ooc.convert(tmp_path / "s", format="zarr", source=MNIST, size=28)
    folder, _ = _write_idx(tmp_path / "idx")
    with pytest.raises(SourceError, match=r"--size applies to image-folder sources only; .*idx is not one"):
        open_source(folder, size=(28, 28))
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "size,parsed", [(28, (28, 28)), ("28", (28, 28)), ("32x24", (32, 24)), ((20, 30), (20, 30)), (None, None)]
)
def test_parse_size(size, parsed):
    assert parse_size(size) == parsed


@pytest.mark.parametrize("size", ["0", "28x", "x28", "2.5", "28x28x3", "big", -1, (28, 0), True, 2.5])
def test_bad_sizes(size):
    with pytest.raises(
        OptionError, match=re.escape(f"--size must be N or HxW in pixels, e.g. 28 or 32x32, got {size!r}")
    ):
        parse_size(size)


def test_cli_size(tmp_path):
    folder, _ = _image_folder(tmp_path / "images")
    run = [
        sys.executable,
        "-m",
        "ooc",
        "convert",
        "--format",
        "zarr",
        "--source",
        str(folder),
        "--out",
        str(tmp_path / "s"),
    ]
    bad = subprocess.run([*run, "--size", "28by28"], check=False, capture_output=True, text=True)
    assert (bad.returncode, bad.stderr) == (
        1,
        "ooc: error: --size must be N or HxW in pixels, e.g. 28 or 32x32, got '28by28'\n",
    )
    done = subprocess.run([*run, "--size", "14x16"], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert ooc.open_store(tmp_path / "s").sample_shape == (14, 16, 1)
