"""Python objects as sources (``ooc.sources.python``): (x, y) arrays and memmaps, dicts of splits,
iterables of chunks, Hugging Face datasets and tf.data datasets each round-trip bit for bit, are
carved and shuffled like the same arrays read from files, and every refusal is one line."""

from __future__ import annotations

import pickle
import re
import sys
import tracemalloc

import numpy as np
import pytest

import ooc
import ooc.convert
from ooc.errors import OptionError, SourceError
from ooc.sources import SourceOptions, as_source
from ooc.testing import DATA_KINDS, make_arrays

FORMATS = ("zarr", "npy")
IN_ORDER = SourceOptions(order="source")
KINDS = [  # a subset of the conformance suite's data matrix: dtypes, ranks 1 to 3, every target kind
    ("uint8", (6, 5), "classes", "int64", ()),  # pixels: (h, w) gains its channel axis
    *(
        kind
        for kind in DATA_KINDS
        if kind[0] in ("float32", "float64", "int16", "uint8") and len(kind[1]) <= 3
    ),
    ("int16", (7,), "regression", "float32", ()),
]


def stored(path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every split of the store at ``path``, in stored order, as stored."""
    store = ooc.open_store(path)
    return {split: store.read_stored(split, np.arange(store.num_samples(split))) for split in store.splits}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        x.dtype == bx.dtype
        and x.tobytes() == bx.tobytes()
        and y.dtype == by.dtype
        and y.tobytes() == by.tobytes()
        for (x, y), (bx, by) in ((a[s], b[s]) for s in a)
    )


def arrays(kind, n=40, seed=1):
    return make_arrays(*kind, n, seed)


def chunked(x, y, size=16):
    for first in range(0, len(x), size):
        yield x[first : first + size], y[first : first + size]


def as_stored_x(kind, x):
    """What a store keeps of ``x``: (h, w) pixels gain their channel axis."""
    return x[..., None] if kind[0] == "uint8" and len(kind[1]) == 2 else x


# -- (x, y) arrays and dicts of them --------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: f"{k[0]}{'x'.join(map(str, k[1]))}-{k[2]}")
def test_arrays_round_trip_in_source_order(kind, tmp_path):
    (x, y), (xt, yt) = arrays(kind), arrays(kind, 9, seed=2)
    for fmt in FORMATS:
        manifest = ooc.convert(
            tmp_path / fmt, format=fmt, source={"train": (x, y), "test": (xt, yt)}, source_options=IN_ORDER
        )
        assert manifest["source"]["path"] == "{'train': (x, y), 'test': (x, y)}"
        want = {"train": (as_stored_x(kind, x), y), "test": (as_stored_x(kind, xt), yt)}
        assert same(stored(tmp_path / fmt), want)
        assert manifest["target"]["kind"] == kind[2]


@pytest.mark.parametrize("kind", KINDS[:3], ids=lambda k: f"{k[0]}-{k[2]}")
def test_arrays_are_carved_and_shuffled_like_an_npy_pair(kind, tmp_path):
    """A bare (x, y) gets the test split and write order that the same arrays as .npy files get."""
    x, y = arrays(kind, 60)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    for fmt in FORMATS:
        ooc.convert(
            tmp_path / f"file-{fmt}",
            format=fmt,
            source=tmp_path / "x.npy",
            source_options=SourceOptions(targets=tmp_path / "y.npy", test_fraction=0.2),
        )
        manifest = ooc.convert(
            tmp_path / fmt, format=fmt, source=(x, y), source_options=SourceOptions(test_fraction=0.2)
        )
        assert (
            manifest["order"] == {"kind": "shuffled", "seed": 0} and manifest["splits"]["test"]["count"] == 12
        )
        assert same(stored(tmp_path / fmt), stored(tmp_path / f"file-{fmt}"))
    ooc.convert(tmp_path / "default", format="npy", source=(x, y))
    assert ooc.open_store(tmp_path / "default").num_samples("test") == 6  # 10 % by default


def test_a_memmap_is_hashed_and_converted_without_reading_it_whole(tmp_path, monkeypatch):
    x = np.random.default_rng(0).standard_normal((20000, 250)).astype(np.float32)  # 20 MB
    y = np.arange(20000) % 7
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    monkeypatch.setattr(sys.modules["ooc.convert"], "READ_CHUNK_SAMPLES", 1024)  # chunks of 1 MB
    source = as_source((mapped, y), options=IN_ORDER)
    ooc.convert(tmp_path / "warm", format="npy", source=(mapped[:200], y[:200]))  # imports, not data
    tracemalloc.start()
    digest = source.sha256()
    ooc.convert(tmp_path / "s", format="npy", source=(mapped, y), source_options=IN_ORDER)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < x.nbytes / 4  # a chunk, and the commits' checksum blocks (1 MB each)
    assert digest == as_source((x, y), options=IN_ORDER).sha256()  # the data, not where it lies
    assert digest != as_source((x, y + 1), options=IN_ORDER).sha256()
    got = stored(tmp_path / "s")
    assert got["train"][0].tobytes() + got["test"][0].tobytes() != b""
    assert len(pickle.dumps(source.source)) < x.nbytes / 100  # --jobs workers map the file again
    again = pickle.loads(pickle.dumps(source.source))
    assert again.read("train", np.arange(3, 9))[0].tobytes() == x[3:9].tobytes()


@pytest.mark.parametrize(
    "source,message",
    [
        (
            np.zeros((5, 3)),
            r"source is a single numpy array of shape \(5, 3\); pass source=\(x, y\) with its targets",
        ),
        (
            (np.zeros((5, 3)), np.zeros(4)),
            r"source: x holds 5 samples but y 4 targets; pass one target per sample",
        ),
        (
            {"train": (np.zeros((5, 3)), np.zeros(5)), "test": (np.zeros((2, 3)), np.zeros(3))},
            r"source\['test'\]: x holds 2 samples but y 3 targets; pass one target per sample",
        ),
        (
            (np.zeros((5, 3)), [0, 1, 0, 1, 0]),
            r"source: y is a list, not a numpy array; pass np.asarray\(y\)",
        ),
        (
            (np.zeros((5, 3)), np.zeros(5), np.zeros(5)),
            r"source is a tuple of 3; pass \(x, y\): the samples and their targets",
        ),
        (
            {"train": (np.zeros((5, 3)), np.zeros(5)), "valid": (np.zeros((2, 3)), np.zeros(2))},
            r"source has the key 'valid'; a dict source has 'train' and optionally 'test', each \(x, y\) numpy "
            r"arrays, an iterable of \(x, y\) chunks, a datasets.Dataset, a tf.data.Dataset",
        ),
        (
            {"test": (np.zeros((2, 3)), np.zeros(2))},
            r"source has no 'train' key \(its keys: 'test'\); a dict source has 'train' and optionally 'test'",
        ),
        (
            {"train": "data.npz"},
            r"source\['train'\] is a str; each split of a dict source is \(x, y\) numpy arrays, an iterable",
        ),
        (
            (np.zeros((5, 3), complex), np.zeros(5)),
            r"\(x, y\) arrays: x, y: samples are complex128; ooc stores uint8, .*: convert the array first",
        ),
    ],
    ids=["one-array", "lengths", "test-lengths", "list", "triple", "key", "no-train", "str", "complex"],
)
def test_bad_arrays_are_refused_in_one_line(tmp_path, source, message):
    with pytest.raises(SourceError, match=rf"^{message}"):
        ooc.convert(tmp_path / "s", format="zarr", source=source)
    assert not (tmp_path / "s").exists()


def test_options_that_do_not_fit_arrays(tmp_path):
    x, y = np.zeros((20, 3), np.float32), np.arange(20) % 2
    with pytest.raises(
        OptionError,
        match=r"^--test-fraction: \{'train': \(x, y\), 'test': \(x, y\)\} has a test split of its own",
    ):
        ooc.convert(
            tmp_path / "s",
            format="zarr",
            source={"train": (x, y), "test": (x, y)},
            source_options=SourceOptions(test_fraction=0.2),
        )
    with pytest.raises(
        SourceError,
        match=r"^sample_shape=\(4,\): source's x holds samples of shape \(3,\); drop sample_shape \(it declares an "
        r"iterable's samples\), or reshape the samples first$",
    ):
        ooc.convert(tmp_path / "s", format="zarr", source=(x, y), sample_shape=(4,))
    with pytest.raises(OptionError, match=r"^--dtype uint8: the source holds float32 samples"):
        ooc.convert(tmp_path / "s", format="zarr", source=(x, y), dtype="uint8")
    with pytest.raises(
        SourceError, match=r"^--size applies to image-folder sources only; a tuple is not one"
    ):
        ooc.convert(tmp_path / "s", format="zarr", source=(x, y), size=8)
    assert not (tmp_path / "s").exists()


# -- iterables of (x, y) chunks -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS[:4], ids=lambda k: f"{k[0]}{'x'.join(map(str, k[1]))}-{k[2]}")
def test_iterables_round_trip_and_match_their_arrays(kind, tmp_path):
    (x, y), (xt, yt) = arrays(kind, 50), arrays(kind, 9, seed=2)
    for fmt in FORMATS:
        ooc.convert(
            tmp_path / fmt,
            format=fmt,
            source={"train": chunked(x, y), "test": [(xt, yt)]},  # a generator and a list
            source_options=IN_ORDER,
        )
        assert same(
            stored(tmp_path / fmt), {"train": (as_stored_x(kind, x), y), "test": (as_stored_x(kind, xt), yt)}
        )
        # a bare generator: carved and shuffled exactly like the arrays it yields
        ooc.convert(
            tmp_path / f"gen-{fmt}", format=fmt, source=chunked(x, y, 7), sample_shape=kind[1], dtype=kind[0]
        )
        manifest = ooc.convert(tmp_path / f"arrays-{fmt}", format=fmt, source=(x, y))
        assert same(stored(tmp_path / f"gen-{fmt}"), stored(tmp_path / f"arrays-{fmt}"))
        assert (
            ooc.open_store(tmp_path / f"gen-{fmt}").manifest["source"]["sha256"]
            == manifest["source"]["sha256"]
        )
    assert not list(tmp_path.glob(".ooc-spool-*"))  # the spool went with the source


def test_targets_may_widen_between_chunks(tmp_path):
    x = np.zeros((6, 2), np.float32)
    chunks = [(x[:3], np.array([0, 1, 2])), (x[3:], np.array([2, 1, 0], np.int32))]
    ooc.convert(
        tmp_path / "s", format="npy", source={"train": chunks, "test": chunks[:1]}, source_options=IN_ORDER
    )
    assert stored(tmp_path / "s")["train"][1].tolist() == [0, 1, 2, 2, 1, 0]


def mismatched(n):
    """Four chunks of (100, 3) float32 samples, chunk ``n`` of (100, 4)."""
    for i in range(4):
        yield np.zeros((5, 100, 4 if i == n else 3), np.float32), np.zeros(5, np.int64)


@pytest.mark.parametrize(
    "chunks,declared,message",
    [
        (
            mismatched(3),
            {},
            r"chunk 3 of the train iterable holds samples of shape \(100, 4\) float32, not \(100, 3\) float32 like "
            r"chunk 0; yield chunks of one shape and dtype",
        ),
        (
            mismatched(0),
            {"sample_shape": (100, 3), "dtype": "float32"},
            r"chunk 0 of the train iterable holds samples of shape \(100, 4\) float32, not \(100, 3\) float32 as "
            r"declared; yield what sample_shape= and dtype= declare, or drop them",
        ),
        (
            iter([(np.zeros((2, 3)), np.zeros(2, np.int64)), (np.zeros((2, 3)), np.zeros(2))]),
            {},
            r"chunk 1 of the train iterable holds targets of shape \(\) float64, not \(\) int64 like chunk 0; yield "
            r"chunks of one shape and dtype",
        ),
        (
            iter([(np.zeros((2, 3)), np.zeros(2)), (np.zeros(3), np.zeros(1))]),
            {},
            r"chunk 1 of the train iterable holds x of shape \(3,\) and y of shape \(1,\); yield n samples and their "
            r"n targets: x of shape \(n, ...\), y of shape \(n, ...\)",
        ),
        (
            iter(
                [(np.zeros((2, 3)), np.zeros(2)), (np.zeros((1, 3)), np.zeros(1)), (np.zeros(3), np.zeros(3))]
            ),
            {},
            r"chunk 2 of the train iterable holds samples of shape \(\) float64, not \(3,\) float64 like chunk 0; "
            r"yield chunks of one shape and dtype \(a chunk is n samples: x of shape \(n, \*\(3,\)\)\)",
        ),
        (
            iter([np.zeros((2, 3))]),
            {},
            r"chunk 0 of the train iterable is a ndarray of shape \(2, 3\), not an \(x, y\) pair of numpy arrays; "
            r"yield \(x, y\) tuples \(arrays whole go as a tuple: source=\(x, y\)\)",
        ),
        (
            iter([(np.zeros((2, 3)), [0, 1])]),
            {},
            r"chunk 0 of the train iterable: its y is a list, not a numpy array; yield np.asarray\(y\)",
        ),
        (iter([]), {}, r"the train iterable yielded no chunks; yield \(x, y\) numpy chunks"),
        (
            iter([(np.zeros((2, 3), object), np.zeros(2))]),
            {},
            r"an iterable of \(x, y\) chunks: the train iterable's x, the train iterable's y: samples are object",
        ),
    ],
    ids=["shape", "declared", "targets", "lengths", "one-sample", "not-a-pair", "list", "empty", "object"],
)
def test_bad_chunks_are_refused_in_one_line(tmp_path, chunks, declared, message):
    with pytest.raises(SourceError, match=rf"^{message}"):
        ooc.convert(tmp_path / "s", format="zarr", source=chunks, **declared)
    assert not (tmp_path / "s").exists()
    assert not list(tmp_path.glob(".ooc-spool-*"))  # nor anything spooled


# -- Hugging Face datasets ------------------------------------------------------------------------------------

datasets = pytest.importorskip("datasets")
from datasets import Array2D, ClassLabel, Dataset, DatasetDict, Features, Image, List, Value  # noqa: E402


def test_a_dataset_dict_keeps_dtypes_and_class_names(tmp_path):
    rng = np.random.default_rng(0)
    features = Features({"x": Array2D((4, 3), "float64"), "label": ClassLabel(names=["cat", "dog", "emu"])})
    x, y = rng.standard_normal((40, 4, 3)), rng.integers(0, 3, 40)
    xt, yt = rng.standard_normal((8, 4, 3)), rng.integers(0, 3, 8)
    splits = DatasetDict(
        {
            "train": Dataset.from_dict({"x": x, "label": y}, features=features),
            "test": Dataset.from_dict({"x": xt, "label": yt}, features=features),
        }
    )
    for fmt in FORMATS:
        manifest = ooc.convert(tmp_path / fmt, format=fmt, source=splits, source_options=IN_ORDER)
        assert manifest["target"] == {
            "kind": "classes",
            "shape": [],
            "dtype": "int64",
            "num_classes": 3,
            "class_names": ["cat", "dog", "emu"],
        }
        assert same(stored(tmp_path / fmt), {"train": (x, y), "test": (xt, yt)})  # float64 stays float64
    # shuffled at write time like the same arrays
    ooc.convert(tmp_path / "hf", format="npy", source=splits)
    ooc.convert(tmp_path / "arrays", format="npy", source={"train": (x, y), "test": (xt, yt)})
    assert same(stored(tmp_path / "hf"), stored(tmp_path / "arrays"))


@pytest.mark.parametrize("mode,shape", [("L", (6, 5)), ("RGB", (6, 5, 3))])
def test_image_columns_are_pixels_and_validation_is_the_test_split(tmp_path, mode, shape):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (30, *shape), dtype=np.uint8)
    y = (np.arange(30) % 4).astype(np.int16)
    features = Features(
        {"image": Image(), "label": Value("int16"), "weight": List(Value("float32"), length=2)}
    )
    ds = Dataset.from_dict(
        {"image": list(x), "label": y, "weight": np.zeros((30, 2), np.float32)}, features=features
    )
    source = DatasetDict({"train": ds, "validation": ds.select(range(20, 30)), "unsupervised": ds})
    options = SourceOptions(x="image", y="label", order="source")
    manifest = ooc.convert(tmp_path / "s", format="zarr", source=source, source_options=options)
    assert manifest["x"] == {"dtype": "uint8", "decode": "pixels"} and manifest["sample_shape"] == [
        6,
        5,
        *shape[2:],
    ] + ([1] if mode == "L" else [])
    assert manifest["source"]["path"] == "the datasets.DatasetDict (validation as test)"
    pixels = x.reshape(30, 6, 5, -1)
    assert same(stored(tmp_path / "s"), {"train": (pixels, y), "test": (pixels[20:], y[20:])})
    # a bare Dataset: its test split carved
    carving = SourceOptions(x="image", y="label", test_fraction=0.2)
    manifest = ooc.convert(tmp_path / "bare", format="npy", source=ds, source_options=carving)
    assert manifest["splits"] == {"train": {"count": 24}, "test": {"count": 6}}


def test_dataset_refusals(tmp_path):
    rng = np.random.default_rng(2)
    three = Dataset.from_dict({"image": rng.random((6, 2)), "label": [0, 1] * 3, "id": list(range(6))})
    with pytest.raises(
        SourceError,
        match=r"^the datasets.Dataset has columns image, label, id: name the samples\' column and the targets\' "
        r'with source_options=SourceOptions\(x="image", y="label"\)$',
    ):
        ooc.convert(tmp_path / "s", format="zarr", source=three)
    with pytest.raises(
        SourceError, match=r"^the datasets.Dataset has no column 'pixels' \(its columns: image, label, id\)"
    ):
        ooc.convert(
            tmp_path / "s", format="zarr", source=three, source_options=SourceOptions(x="pixels", y="label")
        )
    text = Dataset.from_dict({"text": ["a", "b"] * 5, "label": [0, 1] * 5})
    with pytest.raises(
        SourceError, match=r"^the datasets.Dataset: column 'text' holds string values; ooc converts numbers"
    ):
        ooc.convert(tmp_path / "s", format="zarr", source=text)
    sizes = [rng.integers(0, 256, (4, 4), dtype=np.uint8)] * 5 + [
        rng.integers(0, 256, (4, 5), dtype=np.uint8)
    ] * 5
    ragged = Dataset.from_dict(
        {"image": sizes, "label": [0, 1] * 5}, features=Features({"image": Image(), "label": Value("int64")})
    )
    with pytest.raises(
        SourceError,
        match=r"^the datasets.Dataset: (train|test) row \d of column 'image' is an image of \(4, 5\) uint8, "
        r"not \(4, 4\) uint8 like the first; give the images one size and mode first",
    ):
        ooc.convert(
            tmp_path / "s", format="zarr", source=ragged, source_options=SourceOptions(test_fraction=0.2)
        )
    with pytest.raises(
        SourceError, match=r"^the datasets.DatasetDict has the splits test; ooc needs a 'train' split"
    ):
        ooc.convert(tmp_path / "s", format="zarr", source=DatasetDict({"test": text}))
    with pytest.raises(SourceError, match=r"^source mixes a datasets.Dataset with other forms"):
        ooc.convert(
            tmp_path / "s", format="zarr", source={"train": text, "test": (np.zeros((2, 1)), np.zeros(2))}
        )
    assert not (tmp_path / "s").exists()


# -- tf.data ------------------------------------------------------------------------------------------------------


def test_tf_data_datasets(tmp_path):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((50, 4, 3)).astype(np.float32), rng.integers(0, 3, 50)
    xt, yt = x[:7] + 1, y[:7]
    slices = tf.data.Dataset.from_tensor_slices
    manifest = ooc.convert(
        tmp_path / "t",
        format="zarr",
        source={
            "train": slices((x, y)).batch(8),
            "test": slices({"image": xt, "label": yt}),
        },  # batched; dicts
        source_options=IN_ORDER,
    )
    assert manifest["source"]["path"] == "{'train': tf.data.Dataset, 'test': tf.data.Dataset}"
    assert same(stored(tmp_path / "t"), {"train": (x, y), "test": (xt, yt)})
    ooc.convert(tmp_path / "bare", format="npy", source=slices((x, y)))  # carved and shuffled like its arrays
    ooc.convert(tmp_path / "arrays", format="npy", source=(x, y))
    assert same(stored(tmp_path / "bare"), stored(tmp_path / "arrays"))
    with pytest.raises(
        SourceError, match=r"^the train tf.data.Dataset is infinite \(.repeat\(\) without a count\)"
    ):
        ooc.convert(tmp_path / "s", format="zarr", source=slices((x, y)).repeat())
    with pytest.raises(SourceError, match=re.escape("the train tf.data.Dataset's elements are TensorSpec(")):
        ooc.convert(tmp_path / "s", format="zarr", source=slices(x))
    ragged = tf.data.Dataset.from_generator(
        lambda: iter([(x[0], y[0])]),
        output_signature=(tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((), tf.int64)),
    )
    with pytest.raises(
        SourceError, match=r"^the train tf.data.Dataset's samples have shape \(None, 3\); ooc stores"
    ):
        ooc.convert(tmp_path / "s", format="zarr", source=ragged)
    assert not (tmp_path / "s").exists() and not list(tmp_path.glob(".ooc-spool-*"))
