"""The conformance suite every layout inherits, shipped in the package (as ``zarr.testing.StoreTests``)
so that a layout written outside ooc runs the whole of it on itself.

A layout's test module holds one small class::

    from ooc.testing import LayoutTests

    class TestZarr(LayoutTests):
        format = "zarr"

        def standard_read(self, path, n):  # how the format's own tool reads it, without ooc
            group = zarr.open_group(path, mode="r")
            return group["train/x"][:n], group["train/y"][:n]

and its ``conftest.py`` one line, ``pytest_plugins = ["ooc.testing"]`` (the fixtures below: ``mnist``,
``store_dirs``, ``pool``). It gets every test below: exact round trips of MNIST and of every data kind
(shape × dtype × target) the layout can hold, the one-line refusal of those it cannot, the same batches
as memory, reads in any order, pickling, damaged files named, interrupted and failed conversions,
several readers at once. What a layout cannot hold comes from its own ``OPTIONS.dtypes``; its name
must be in ``ooc.formats.FORMATS``.

MNIST is the project's ``data/mnist.npz`` (the real one) in a clone of ooc, ``OOC_TEST_MNIST`` if set,
and otherwise a seeded file of the same layout (uint8 28 × 28, ten classes) made once per process.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

import ooc
from ooc.errors import (
    CorruptStoreError,
    FormatMismatchError,
    OptionError,
    StoreBusyError,
    StoreExistsError,
    StoreNotFoundError,
    StoreRewrittenError,
    WriteError,
)
from ooc.formats import FORMATS, get_format
from ooc.manifest import LOCK_NAME, PARTIAL_NAME, write_manifest
from ooc.schema import SAMPLE_DTYPES
from ooc.verify import verify


def _mnist_like(path: Path) -> Path:
    """A seeded stand-in for MNIST in keras' layout, for a suite run outside a clone of ooc."""
    if not path.exists():
        rng = np.random.default_rng(0)
        splits = {"train": 4000, "test": 1000}
        arrays = {f"x_{s}": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for s, n in splits.items()}
        arrays |= {f"y_{s}": rng.integers(0, 10, n).astype(np.uint8) for s, n in splits.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
    return path


def _mnist_path() -> Path:
    if os.environ.get("OOC_TEST_MNIST"):
        return Path(os.environ["OOC_TEST_MNIST"])
    bundled = Path(__file__).resolve().parent.parent / "data" / "mnist.npz"
    return (
        bundled
        if bundled.exists()
        else _mnist_like(Path(tempfile.gettempdir()) / "ooc-testing" / "mnist.npz")
    )


MNIST = _mnist_path()
LIMIT = 300  # samples of each split in the shared stores
CHUNK = 64  # small chunks, and a count that is not a multiple of them


@pytest.fixture(scope="session")
def mnist():
    with np.load(MNIST) as d:
        return {k: d[k][:LIMIT] for k in ("x_train", "y_train", "x_test", "y_test")}


def layout_sizes(name: str, chunk: int) -> dict[str, int | None]:
    """``chunk_size``/``shard_size`` of ``chunk`` samples for the options a layout has (None otherwise)."""
    options = get_format(name).OPTIONS
    return {
        "chunk_size": None if options.default_chunk_size is None else chunk,
        "shard_size": None if options.default_shard_size is None else chunk,
    }


class _Stores(Mapping):
    """Small MNIST stores by layout, each converted the first time a test asks for it: ``-k zarr``
    converts zarr only."""

    def __init__(self, base: Path):
        self._base, self._made = base, {}

    def __getitem__(self, name: str) -> Path:
        if name not in self._made:
            ooc.convert(
                self._base / name, format=name, source=MNIST, limit=LIMIT, **layout_sizes(name, CHUNK)
            )
            self._made[name] = self._base / name
        return self._made[name]

    def __iter__(self):
        return iter(FORMATS)

    def __len__(self):
        return len(FORMATS)


@pytest.fixture(scope="session")
def store_dirs(tmp_path_factory) -> Mapping[str, Path]:
    return _Stores(tmp_path_factory.mktemp("stores"))


@pytest.fixture(scope="session")
def pool():
    """Worker processes for the several-readers tests; spawned: a fresh interpreter per worker, as
    users' worker processes often are (fork after TensorFlow is unsafe)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("spawn")) as executor:
        yield executor


def expected_x(x_uint8: np.ndarray) -> np.ndarray:
    """What every layout must return for these source pixels."""
    return (x_uint8.astype(np.float32) / np.float32(255))[..., None]


# Every sample dtype once, each with another shape (rank 1 to 4) and target kind, and the
# values that break careless code: extremes, negative zero, NaN and infinities, subnormals.
DATA_KINDS = [
    # (dtype, sample shape, target kind, target dtype, target shape)
    ("uint8", (300,), "classes", "int64", ()),
    ("uint16", (64, 64), "regression", "float32", ()),
    ("uint32", (100, 3), "onehot", "uint8", (4,)),
    ("int8", (4, 5, 6), "multilabel", "bool", (5,)),
    ("int16", (2, 3, 4, 5), "classes", "uint8", ()),
    ("int32", (7,), "regression", "float64", (3,)),
    ("int64", (6, 6), "classes", "int32", ()),
    ("float16", (100, 3), "regression", "float16", ()),
    ("float32", (100, 3), "regression", "float32", ()),
    ("float32", (8, 8, 3), "multilabel", "uint8", (6,)),
    ("float64", (300,), "onehot", "int8", (3,)),
    ("bool", (5, 5), "classes", "uint16", ()),
]
assert {kind[0] for kind in DATA_KINDS} == set(SAMPLE_DTYPES)
KIND_SAMPLES = (25, 9)  # train, test


def make_arrays(dtype, shape, target_kind, target_dtype, target_shape, n, seed):
    """n samples of the kind, seeded; targets valid for their kind."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        x = (rng.standard_normal((n, *shape)) * 1e3).astype(dtype)
        flat = x.reshape(-1)
        specials = [
            0.0,
            -0.0,
            np.nan,
            np.inf,
            -np.inf,
            np.finfo(dtype).max,
            np.finfo(dtype).tiny / 4,
            np.finfo(dtype).eps,
        ]
        flat[: len(specials)] = np.array(specials, dtype)
    elif dtype.kind == "b":
        x = rng.random((n, *shape)) > 0.5
    else:
        info = np.iinfo(dtype)
        x = rng.integers(info.min, info.max, (n, *shape), dtype=dtype, endpoint=True)
        x.reshape(-1)[:2] = [info.min, info.max]
    if target_kind == "classes":
        y = rng.integers(0, 5, n).astype(target_dtype)
    elif target_kind == "onehot":
        y = np.eye(target_shape[0], dtype=target_dtype)[rng.integers(0, target_shape[0], n)]
    elif target_kind == "multilabel":
        y = (rng.random((n, *target_shape)) > 0.5).astype(target_dtype)
    else:
        y = rng.standard_normal((n, *target_shape)).astype(target_dtype)
    return x, y


def _read_epoch(path, seed):
    """One shuffled epoch read in a worker; returns the samples in source order."""
    store = ooc.open_store(path)
    x = np.empty((LIMIT, 28, 28, 1), np.float32)
    y = np.empty(LIMIT, np.int64)
    for batch in ooc.epoch_batches(LIMIT, batch_size=32, shuffle=True, seed=seed):
        x[batch], y[batch] = store.read("train", batch)
    return x, y


class LayoutTests:
    format: ClassVar[str]
    # The layout's facts, declared by its test class where they differ:
    records_sample_shape: ClassVar[bool] = (
        True  # its files say the sample shape (a flat binary file does not)
    )

    def standard_read(self, path, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``n`` train samples (as stored) and targets, read with the format's own tool."""
        raise NotImplementedError(f"{type(self).__name__} must say how {self.format}'s own tool reads it")

    @pytest.fixture
    def fmt(self):
        return self.format

    @pytest.fixture
    def store(self, store_dirs):
        with ooc.open_store(store_dirs[self.format]) as s:
            yield s

    def sizes(self, chunk: int) -> dict:
        return layout_sizes(self.format, chunk)

    # -- the layout's facts ------------------------------------------------------------------------
    def test_readable_without_ooc(self, store_dirs, mnist):
        x, y = self.standard_read(store_dirs[self.format], 10)
        x = np.asarray(x)
        if x.dtype == np.uint8:
            assert np.array_equal(x, mnist["x_train"][:10, ..., None])
        else:
            assert np.array_equal(x, expected_x(mnist["x_train"][:10]))
        assert np.array_equal(np.asarray(y), mnist["y_train"][:10])

    def test_every_option_round_trips(self, tmp_path, mnist):
        layout = get_format(self.format).OPTIONS
        for compression in layout.compressions:
            for dtype in ("uint8", "float32"):
                ooc.convert(
                    tmp_path / "s",
                    format=self.format,
                    source=MNIST,
                    limit=50,
                    compression=compression,
                    dtype=dtype,
                    overwrite=True,
                    **self.sizes(7),
                )
                store = ooc.open_store(tmp_path / "s")
                chunk = None if layout.default_chunk_size is None else 7
                expected = (
                    {"chunk_size": chunk, "compression": compression, "dtype": dtype}
                    | ({"shard_size": 7} if layout.default_shard_size else {})
                    | ({"delimiter": layout.default_delimiter} if layout.delimiters else {})
                )
                assert store.options == expected
                assert store.manifest["x"] == {
                    "dtype": dtype,
                    "decode": "pixels" if dtype == "uint8" else "none",
                }
                x, y = store.read("train", np.arange(49, -1, -1))
                assert np.array_equal(x, expected_x(mnist["x_train"][:50][::-1]))
                assert np.array_equal(y, mnist["y_train"][:50][::-1])

    def test_batches_are_those_of_memory(self, store_dirs, mnist):
        memory = ooc.MemoryStore({"train": (mnist["x_train"], mnist["y_train"].astype(np.int64))})
        reference = list(ooc.batches(memory, "train", batch_size=32, shuffle=True, seed=7, epoch=3))
        got = list(
            ooc.batches(
                ooc.open_store(store_dirs[self.format]), "train", batch_size=32, shuffle=True, seed=7, epoch=3
            )
        )
        assert len(got) == len(reference) == 10
        for (x, y), (rx, ry) in zip(got, reference):
            assert x.tobytes() == rx.tobytes() and y.tobytes() == ry.tobytes()

    # -- every data kind ---------------------------------------------------------------------------
    @pytest.mark.parametrize("kind", DATA_KINDS, ids=lambda k: f"{k[0]}{'x'.join(map(str, k[1]))}-{k[2]}")
    def test_data_kind_round_trips_bit_for_bit(self, kind, tmp_path):
        dtype, shape, target_kind, target_dtype, target_shape = kind
        arrays = {}
        for split, n, seed in (("train", KIND_SAMPLES[0], 1), ("test", KIND_SAMPLES[1], 2)):
            arrays[f"x_{split}"], arrays[f"y_{split}"] = make_arrays(
                dtype, shape, target_kind, target_dtype, target_shape, n, seed
            )
        np.savez(tmp_path / "data.npz", **arrays)
        layout = get_format(self.format).OPTIONS
        if dtype not in layout.dtypes:
            can = ", ".join(f for f in FORMATS if dtype in get_format(f).OPTIONS.dtypes)
            with pytest.raises(
                OptionError,
                match=rf"^{self.format} cannot store {dtype} samples exactly; choose a layout that can: "
                rf"{can}$",
            ):
                ooc.convert(tmp_path / "s", format=self.format, source=tmp_path / "data.npz", **self.sizes(4))
            assert not (tmp_path / "s").exists()
            return
        ooc.convert(tmp_path / "s", format=self.format, source=tmp_path / "data.npz", **self.sizes(4))
        store = ooc.open_store(tmp_path / "s")
        image = dtype == "uint8" and len(shape) == 2
        want_shape = (*shape, 1) if image else shape
        assert store.sample_shape == want_shape and store.schema.target_kind == target_kind
        for split in ("train", "test"):
            x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
            order = np.arange(len(x))[::-1]
            got_x, got_y = store.read_stored(split, order)
            assert got_x.dtype == x.dtype and got_x.tobytes() == x[order].tobytes()
            assert got_y.dtype == y.dtype and got_y.tobytes() == y[order].tobytes()
        memory = ooc.MemoryStore({"train": (arrays["x_train"], arrays["y_train"])}, schema=store.schema)
        for (x, y), (mx, my) in zip(
            ooc.batches(store, "train", batch_size=4, shuffle="global", seed=3),
            ooc.batches(memory, "train", batch_size=4, shuffle="global", seed=3),
        ):
            assert x.tobytes() == mx.tobytes() and y.tobytes() == my.tobytes()

    def test_store_converts_to_every_layout_exactly(self, store_dirs, tmp_path):
        """An ooc store is a source: every sample and target, its decoding and kind, as they are."""
        original = ooc.open_store(store_dirs[self.format])
        everything = np.arange(LIMIT)
        for other in FORMATS:
            manifest = ooc.convert(
                tmp_path / other, format=other, source=store_dirs[self.format], **_sizes(other, 64)
            )
            copy = ooc.open_store(tmp_path / other)
            assert manifest["order"]["kind"] == "source" and manifest["order"]["from"] == str(
                store_dirs[self.format]
            )
            for split in ("train", "test"):
                x, y = copy.read(split, everything)
                ox, oy = original.read(split, everything)
                assert x.tobytes() == ox.tobytes() and y.tobytes() == oy.tobytes(), other

    # -- MNIST through the common surface ----------------------------------------------------------
    def test_round_trip_is_exact(self, store, mnist):
        for split in ("train", "test"):
            x, y = store.read(split, np.arange(LIMIT))
            assert x.dtype == np.float32 and x.shape == (LIMIT, 28, 28, 1)
            assert np.array_equal(x, expected_x(mnist[f"x_{split}"]))
            assert y.dtype == np.int64 and np.array_equal(y, mnist[f"y_{split}"])
            assert np.array_equal(store.labels(split), mnist[f"y_{split}"])

    def test_read_any_order_with_repeats(self, store, mnist):
        indices = np.array([299, 0, 64, 63, 0, 150, 299])
        x, y = store.read("train", indices)
        assert np.array_equal(x, expected_x(mnist["x_train"][indices]))
        assert np.array_equal(y, mnist["y_train"][indices])

    def test_read_nothing(self, store):
        x, y = store.read("test", np.array([], dtype=np.int64))
        assert x.shape == (0, 28, 28, 1) and y.shape == (0,)

    def test_read_rejects_bad_indices(self, store):
        with pytest.raises(
            OptionError, match=r"^index 300 is out of range for split 'train' of .* \(300 samples\)$"
        ):
            store.read("train", [0, 300])
        with pytest.raises(OptionError, match=r"^index -1 is out of range"):
            store.read("train", [-1])
        with pytest.raises(OptionError, match=r"^split 'valid' is not in .*: it has train, test$"):
            store.read("valid", [0])

    def test_manifest(self, fmt, store_dirs):
        manifest = json.loads((store_dirs[fmt] / "ooc.json").read_text())
        assert manifest["ooc_manifest_version"] == 2
        assert manifest["format"] == fmt
        assert manifest["splits"] == {"train": {"count": LIMIT}, "test": {"count": LIMIT}}
        assert manifest["sample_shape"] == [28, 28, 1]
        pixels = get_format(fmt).OPTIONS.pixel_dtype
        assert manifest["x"] == {"dtype": pixels, "decode": "pixels" if pixels == "uint8" else "none"}
        assert manifest["target"] == {"kind": "classes", "shape": [], "dtype": "uint8", "num_classes": 10}
        assert manifest["order"] == {"kind": "source"}
        assert (
            manifest["source"]["sha256"] == "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64"
        )
        assert manifest["source"]["limit"] == LIMIT
        sharded = get_format(fmt).OPTIONS.default_shard_size is not None
        assert set(manifest["options"]) == {"chunk_size", "compression", "dtype"} | (
            {"shard_size"} if sharded else set()
        ) | ({"delimiter"} if get_format(fmt).OPTIONS.delimiters else set())
        assert not (store_dirs[fmt] / PARTIAL_NAME).exists()

    def test_store_pickles_and_reopens(self, store, mnist):
        store.read("train", [1])
        clone = pickle.loads(pickle.dumps(store))
        x, y = clone.read("train", [5, 2])
        assert np.array_equal(x, expected_x(mnist["x_train"][[5, 2]]))

    def test_open_store_checks_the_format(self, fmt, store_dirs):
        other = next(name for name in FORMATS if name != fmt)
        with pytest.raises(
            FormatMismatchError,
            match=rf"holds a {fmt} store, not {other}: pass --store {fmt}, or --path to a {other} store$",
        ):
            ooc.open_store(store_dirs[fmt], expect_format=other)

    def test_convert_refuses_existing_store_without_overwrite(self, fmt, tmp_path):
        out = tmp_path / "s"
        ooc.convert(out, format=fmt, source=MNIST, limit=10)
        with pytest.raises(
            StoreExistsError, match=rf"^{out} already holds a store; pass --overwrite to replace it$"
        ):
            ooc.convert(out, format=fmt, source=MNIST, limit=10)
        ooc.convert(out, format=fmt, source=MNIST, limit=12, overwrite=True)
        assert ooc.open_store(out).num_samples("train") == 12

    def test_convert_never_deletes_a_directory_it_did_not_make(self, fmt, tmp_path):
        (tmp_path / "notes.txt").write_text("mine")
        with pytest.raises(
            StoreExistsError, match=r"is not an ooc store \(no ooc.json\); refusing to touch it"
        ):
            ooc.convert(tmp_path, format=fmt, source=MNIST, limit=10, overwrite=True)
        assert (tmp_path / "notes.txt").read_text() == "mine"

    @pytest.mark.parametrize("overwrite", [False, True])
    def test_second_conversion_to_one_out_is_refused(self, fmt, tmp_path, mnist, monkeypatch, overwrite):
        """A conversion owns its --out: a second one started while the first writes (here: from the
        first's first write) is refused in one line and touches nothing; the first's store is exact."""
        out, writer, refused = tmp_path / "s", get_format(fmt).Writer, []
        original = writer.write

        def write_then_start_another(self, split, start, x, y):
            original(self, split, start, x, y)
            if not refused:
                before = _snapshot(out)
                with pytest.raises(StoreBusyError) as caught:
                    ooc.convert(out, format=fmt, source=MNIST, limit=20, overwrite=overwrite)
                refused.append((str(caught.value), before == _snapshot(out)))

        monkeypatch.setattr(writer, "write", write_then_start_another)
        ooc.convert(out, format=fmt, source=MNIST, limit=LIMIT, **self.sizes(64))
        message, untouched = refused[0]
        assert message == (
            f"{out} is being written by another ooc convert (pid {os.getpid()}); wait for it or choose "
            "another --out"
        )
        assert untouched
        x, y = ooc.open_store(out).read("train", np.arange(LIMIT))
        assert np.array_equal(x, expected_x(mnist["x_train"])) and np.array_equal(y, mnist["y_train"])
        assert verify(out).ok and not (out / LOCK_NAME).exists()
        ooc.convert(out, format=fmt, source=MNIST, limit=10, overwrite=True)  # the lock went with the first
        assert ooc.open_store(out).num_samples("train") == 10

    def test_store_rewritten_under_a_reader_is_refused(self, fmt, tmp_path):
        """convert --overwrite while a store is open: its next read raises, in one line, instead of
        mixing cached targets of the old store with samples of the new (even one of equal content)."""
        out = tmp_path / "s"
        ooc.convert(out, format=fmt, source=MNIST, limit=40)
        store = ooc.open_store(out)
        store.read("train", [0, 5])
        clone = pickle.loads(pickle.dumps(store))
        ooc.convert(out, format=fmt, source=MNIST, limit=40, overwrite=True)
        message = f"store {out} was rewritten while being read (by ooc convert --overwrite?); start again"
        for reader in (store, clone):
            with pytest.raises(StoreRewrittenError) as caught:
                reader.read("train", [1, 2])
            assert str(caught.value) == message
        assert ooc.open_store(out).read("train", [1])[1].tolist() == [0]  # a new reader reads the new store
        store.close()
        os.utime(out / "ooc.json")  # touched, not rewritten: still the same store
        reopened = ooc.open_store(out)
        os.utime(out / "ooc.json", ns=(1, 1))
        assert reopened.read("train", [1])[1].tolist() == [0]

    @pytest.mark.parametrize("edit", ["count", "sample_shape", "chunk_size", "shard_size", "num_classes"])
    def test_manifest_edit_is_refused(self, fmt, tmp_path, edit):
        """A manifest that no longer describes its files is refused in one line when opened (or when its
        targets are read), even with its own checksum recomputed; with the checksum left stale, by the
        checksum, and `ooc verify` reports either."""
        out = tmp_path / "s"
        ooc.convert(out, format=fmt, source=MNIST, limit=LIMIT, **self.sizes(64))
        manifest = json.loads((out / "ooc.json").read_text())
        if edit == "count":
            manifest["splits"]["train"]["count"] = LIMIT - 100
        elif edit == "sample_shape":
            manifest["sample_shape"] = [14, 56, 1]
        elif edit == "num_classes":
            manifest["target"]["num_classes"] = 5
        elif manifest["options"].get(edit) is None:
            pytest.skip(f"{fmt} has no {edit}")
        else:
            manifest["options"][edit] = 32
        (out / "ooc.json").write_text(json.dumps(manifest))  # its own checksum left stale
        with pytest.raises(CorruptStoreError, match=r"its content does not match its checksum"):
            ooc.open_store(out)
        assert not verify(out).ok
        write_manifest(out, {k: v for k, v in manifest.items() if k != "manifest_crc32"})  # a consistent lie
        if edit == "sample_shape" and not self.records_sample_shape:
            return  # the same bytes, another shape: nothing in the files can tell (its own checksum did)
        with pytest.raises(CorruptStoreError) as caught:
            with ooc.open_store(out) as store:
                store.labels("train")
        message = str(caught.value)
        assert "\n" not in message and "re-convert" in message, message
        report = verify(out)
        assert report.problems == [message]

    def test_failed_conversion_is_incomplete_and_resumes(self, fmt, tmp_path, monkeypatch):
        """A write error (disk full) leaves no manifest: open_store refuses the store; what was
        committed is kept, and the same conversion run again finishes it, exactly as one that never failed."""
        import errno

        layout = get_format(fmt)
        calls = []

        def failing_write(self, split, start, x, y):
            calls.append(split)
            if split == "test":
                raise OSError(errno.ENOSPC, "No space left on device")
            return original(self, split, start, x, y)

        original = layout.Writer.write
        monkeypatch.setattr(layout.Writer, "write", failing_write)
        with pytest.raises(
            WriteError,
            match=r"/s/\S+: No space left on device; free space and re-run the same command to resume$",
        ) as caught:
            ooc.convert(tmp_path / "s", format=fmt, source=MNIST, limit=20)
        assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC
        assert calls == ["train", "test"]
        assert not (tmp_path / "s" / "ooc.json").exists()
        with pytest.raises(StoreNotFoundError, match=r"is an incomplete ooc store"):
            ooc.open_store(tmp_path / "s")
        monkeypatch.setattr(layout.Writer, "write", original)
        resumed = ooc.convert(tmp_path / "s", format=fmt, source=MNIST, limit=20)
        clean = ooc.convert(tmp_path / "clean", format=fmt, source=MNIST, limit=20)
        assert resumed["checksums"]["files"] == clean["checksums"]["files"]
        for split in ("train", "test"):
            got, expected = (
                ooc.open_store(tmp_path / "s").read(split, np.arange(20)),
                ooc.open_store(tmp_path / "clean").read(split, np.arange(20)),
            )
            assert got[0].tobytes() == expected[0].tobytes() and got[1].tobytes() == expected[1].tobytes()

    def test_interrupted_conversion_is_not_a_store(self, fmt, tmp_path):
        out = tmp_path / "s"
        ooc.convert(out, format=fmt, source=MNIST, limit=10)
        (out / "ooc.json").unlink()  # as if killed before the manifest was written
        (out / PARTIAL_NAME).write_text("")  # by an ooc without journals
        with pytest.raises(
            StoreNotFoundError,
            match=r"is an incomplete ooc store \(its conversion was interrupted\); re-run the same `ooc "
            r"convert --out .*` to resume it, or add --overwrite to start over$",
        ):
            ooc.open_store(out)
        with pytest.raises(
            StoreExistsError,
            match=r"holds an interrupted conversion that cannot be resumed \(its ooc.partial is not a journal "
            r""
            r"this ooc can read\); pass --overwrite to start over$",
        ):
            ooc.convert(out, format=fmt, source=MNIST, limit=10)
        ooc.convert(out, format=fmt, source=MNIST, limit=10, overwrite=True)
        assert ooc.open_store(out).num_samples("test") == 10

    def test_garbage_manifest(self, fmt, store_dirs, tmp_path):
        import shutil

        shutil.copytree(store_dirs[fmt], tmp_path / "s")
        (tmp_path / "s" / "ooc.json").write_text("{not json")
        with pytest.raises(CorruptStoreError, match=r"ooc.json is not valid JSON"):
            ooc.open_store(tmp_path / "s")
        (tmp_path / "s" / "ooc.json").write_text(
            json.dumps({"ooc_manifest_version": 99, "format": fmt, "splits": {}})
        )
        with pytest.raises(
            CorruptStoreError,
            match=r"has manifest version 99; this ooc reads version 2 and older: upgrade ooc$",
        ):
            ooc.open_store(tmp_path / "s")

    def test_layout_option_errors(self, fmt):
        opts = get_format(fmt).OPTIONS
        with pytest.raises(
            OptionError,
            match=rf"^--compression 'rar' is not available for {fmt}: choose one of "
            rf"{', '.join(opts.compressions)}$",
        ):
            opts.resolve(fmt, chunk_size=None, compression="rar")
        expected = (
            r"^--chunk-size must be a positive number of samples, got 0$"
            if opts.default_chunk_size
            else rf"^--chunk-size does not apply to {fmt}"
        )
        with pytest.raises(OptionError, match=expected):
            opts.resolve(fmt, chunk_size=0, compression=None)
        expected = (
            r"^--shard-size must be a positive number of samples, got 0$"
            if opts.default_shard_size
            else rf"^--shard-size does not apply to {fmt} \(it is not written in shards\); drop the option$"
        )
        with pytest.raises(OptionError, match=expected):
            opts.resolve(fmt, chunk_size=None, compression=None, shard_size=0)

    def test_sparse_reads_from_large_chunks(self, fmt, tmp_path, mnist):
        # a few samples far apart in default-sized chunks: HDF5 reads them as points, not whole chunks
        ooc.convert(tmp_path / "s", format=fmt, source=MNIST, limit=3000)
        with np.load(MNIST) as d:
            source_x, source_y = d["x_train"][:3000], d["y_train"][:3000]
        indices = np.array([2999, 5, 1500, 2047, 2048])
        x, y = ooc.open_store(tmp_path / "s").read("train", indices)
        assert np.array_equal(x, expected_x(source_x[indices])) and np.array_equal(y, source_y[indices])

    def test_chunk_shuffle_decodes_each_chunk_once_per_epoch(self, fmt, store_dirs, mnist, monkeypatch):
        store = ooc.open_store(store_dirs[fmt])
        if store.chunk_size is None:
            pytest.skip(f"{fmt} has no chunks")
        reads = []
        original = type(store)._read_rows
        monkeypatch.setattr(
            type(store),
            "_read_rows",
            lambda self, split, a, b: reads.append((a, b)) or original(self, split, a, b),
        )
        got = list(ooc.batches(store, "train", batch_size=32, shuffle="chunk", seed=1))
        flat_x = np.concatenate([x for x, _ in got])
        order = np.concatenate(
            ooc.epoch_batches(LIMIT, batch_size=32, shuffle="chunk", seed=1, chunk_size=store.chunk_size)
        )
        assert np.array_equal(flat_x, expected_x(mnist["x_train"][order]))
        rows_read = sum(b - a for a, b in reads)
        assert rows_read == LIMIT  # every chunk decoded exactly once

    def test_the_chunk_shuffle_is_the_plan_over_the_shuffle_unit(self, fmt, store_dirs, mnist):
        store = ooc.open_store(store_dirs[fmt])
        unit = store.shuffle_unit  # chunks, or npy's runs of rows
        got = list(ooc.batches(store, "train", batch_size=32, shuffle="chunk", seed=4))
        order = np.concatenate(
            ooc.epoch_batches(LIMIT, batch_size=32, shuffle="chunk", seed=4, chunk_size=unit)
        )
        assert np.array_equal(np.concatenate([x for x, _ in got]), expected_x(mnist["x_train"][order]))

    def test_reads_past_the_page_cache_are_the_same_batches(self, fmt, store_dirs):
        """``direct_io`` (a store larger than memory) changes how bytes are read, never which."""
        epochs = []
        for direct in (False, True):
            store = ooc.open_store(store_dirs[fmt])
            store.direct_io = direct
            epochs.append(list(ooc.batches(store, "train", batch_size=64, shuffle="chunk", seed=2)))
            store.close()
        for (x, y), (dx, dy) in zip(*epochs, strict=True):
            assert np.array_equal(x, dx) and np.array_equal(y, dy)

    @pytest.mark.parametrize("damage", ["truncate", "delete"])
    def test_damaged_file_is_named_with_its_samples(self, fmt, tmp_path, damage):
        import shutil

        chunk = None if get_format(fmt).OPTIONS.default_chunk_size is None else 64
        shard = None if get_format(fmt).OPTIONS.default_shard_size is None else 64
        ooc.convert(tmp_path / "s", format=fmt, source=MNIST, limit=LIMIT, chunk_size=chunk, shard_size=shard)
        store = ooc.open_store(tmp_path / "s")
        store.labels("train")  # labels are read once, before the damage
        victim = store._file_of("train", 100)
        assert victim.is_file() and victim.is_relative_to(tmp_path / "s")
        if damage == "truncate":
            victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
        else:
            victim.unlink()
        store.close()
        with pytest.raises(CorruptStoreError) as caught:
            store.read("train", [250, 100, 5])
        message = str(caught.value)
        assert message.startswith(str(victim)) and "\n" not in message, message
        assert caught.value.split == "train" and 100 in caught.value.indices
        shutil.rmtree(tmp_path / "s")

    def test_processes_read_one_store_at_once(self, fmt, store_dirs, mnist, pool):
        want_x, want_y = expected_x(mnist["x_train"]), mnist["y_train"]
        futures = [pool.submit(_read_epoch, store_dirs[fmt], seed) for seed in range(3)]
        here = _read_epoch(store_dirs[fmt], 99)  # and this process too, meanwhile
        for x, y in [here] + [f.result(timeout=300) for f in futures]:
            assert np.array_equal(x, want_x) and np.array_equal(y, want_y)

    def test_threads_share_one_store(self, fmt, store_dirs, mnist):
        store = ooc.open_store(store_dirs[fmt])
        plan = ooc.epoch_batches(LIMIT, batch_size=16, shuffle="chunk", seed=3, chunk_size=store.chunk_size)
        with ThreadPoolExecutor(4) as threads:
            results = list(threads.map(lambda batch: (batch, store.read("train", batch)), plan * 3))
        want = expected_x(mnist["x_train"])
        for batch, (x, y) in results:
            assert np.array_equal(x, want[batch]) and np.array_equal(y, mnist["y_train"][batch])


def _snapshot(path):
    """Every file below ``path`` with its size, mtime and inode: what a refused conversion must not change."""
    return {
        p.relative_to(path).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino)
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def _sizes(fmt, chunk):
    options = get_format(fmt).OPTIONS
    return {
        "chunk_size": None if options.default_chunk_size is None else chunk,
        "shard_size": None if options.default_shard_size is None else chunk,
    }
