"""The conformance suite: every layout in FORMATS must pass all of it."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

import ooc
from ooc.errors import CorruptStoreError, FormatMismatchError, OptionError, StoreExistsError, StoreNotFoundError
from ooc.formats import FORMATS, get_format
from ooc.manifest import PARTIAL_NAME

from conftest import LIMIT, MNIST, expected_x


def test_round_trip_is_exact(store, mnist):
    for split in ("train", "test"):
        x, y = store.read(split, np.arange(LIMIT))
        assert x.dtype == np.float32 and x.shape == (LIMIT, 28, 28, 1)
        assert np.array_equal(x, expected_x(mnist[f"x_{split}"]))
        assert y.dtype == np.int64 and np.array_equal(y, mnist[f"y_{split}"])
        assert np.array_equal(store.labels(split), mnist[f"y_{split}"])


def test_read_any_order_with_repeats(store, mnist):
    indices = np.array([299, 0, 64, 63, 0, 150, 299])
    x, y = store.read("train", indices)
    assert np.array_equal(x, expected_x(mnist["x_train"][indices]))
    assert np.array_equal(y, mnist["y_train"][indices])


def test_read_nothing(store):
    x, y = store.read("test", np.array([], dtype=np.int64))
    assert x.shape == (0, 28, 28, 1) and y.shape == (0,)


def test_read_rejects_bad_indices(store):
    with pytest.raises(OptionError, match=r"^index 300 is out of range for split 'train' of .* \(300 samples\)$"):
        store.read("train", [0, 300])
    with pytest.raises(OptionError, match=r"^index -1 is out of range"):
        store.read("train", [-1])
    with pytest.raises(OptionError, match=r"^split 'valid' is not in .*: it has train, test$"):
        store.read("valid", [0])


def test_manifest(fmt, store_dirs):
    manifest = json.loads((store_dirs[fmt] / "ooc.json").read_text())
    assert manifest["ooc_manifest_version"] == 2
    assert manifest["format"] == fmt
    assert manifest["splits"] == {"train": {"count": LIMIT}, "test": {"count": LIMIT}}
    assert manifest["sample_shape"] == [28, 28, 1]
    assert manifest["x"] == {"dtype": "float32" if fmt == "csv" else "uint8", "decode": "none" if fmt == "csv" else "pixels"}
    assert manifest["target"] == {"kind": "classes", "shape": [], "dtype": "uint8", "num_classes": 10}
    assert manifest["order"] == {"kind": "source"}
    assert manifest["source"]["sha256"] == "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64"
    assert manifest["source"]["limit"] == LIMIT
    sharded = get_format(fmt).OPTIONS.default_shard_size is not None
    assert set(manifest["options"]) == {"chunk_size", "compression", "dtype"} | ({"shard_size"} if sharded else set())
    assert not (store_dirs[fmt] / PARTIAL_NAME).exists()


def test_store_pickles_and_reopens(store, mnist):
    store.read("train", [1])
    clone = pickle.loads(pickle.dumps(store))
    x, y = clone.read("train", [5, 2])
    assert np.array_equal(x, expected_x(mnist["x_train"][[5, 2]]))


def test_open_store_checks_the_format(fmt, store_dirs):
    other = next(name for name in FORMATS if name != fmt)
    with pytest.raises(FormatMismatchError, match=rf"holds a {fmt} store, not {other}: pass --store {fmt}, or --path to a {other} store$"):
        ooc.open_store(store_dirs[fmt], expect_format=other)


def _options(name):
    opts = get_format(name).OPTIONS
    return [(name, c, d) for c in opts.compressions for d in ("uint8", "float32")]


@pytest.mark.parametrize("name,compression,dtype", [o for name in FORMATS for o in _options(name)])
def test_every_option_round_trips(tmp_path, mnist, name, compression, dtype):
    layout = get_format(name).OPTIONS
    chunk = None if layout.default_chunk_size is None else 7
    shard = None if layout.default_shard_size is None else 7
    ooc.convert(tmp_path / "s", format=name, source=MNIST, limit=50, chunk_size=chunk, shard_size=shard, compression=compression, dtype=dtype)
    store = ooc.open_store(tmp_path / "s")
    expected = {"chunk_size": chunk, "compression": compression, "dtype": dtype} | ({"shard_size": 7} if shard else {})
    assert store.options == expected
    assert store.manifest["x"] == {"dtype": dtype, "decode": "pixels" if dtype == "uint8" else "none"}
    x, y = store.read("train", np.arange(49, -1, -1))
    assert np.array_equal(x, expected_x(mnist["x_train"][:50][::-1]))
    assert np.array_equal(y, mnist["y_train"][:50][::-1])


def test_batches_are_identical_across_layouts(store_dirs, mnist):
    memory = ooc.MemoryStore({"train": (mnist["x_train"], mnist["y_train"].astype(np.int64))})
    reference = list(ooc.batches(memory, "train", batch_size=32, shuffle=True, seed=7, epoch=3))
    for name, path in store_dirs.items():
        got = list(ooc.batches(ooc.open_store(path), "train", batch_size=32, shuffle=True, seed=7, epoch=3))
        assert len(got) == len(reference) == 10
        for (x, y), (rx, ry) in zip(got, reference):
            assert x.tobytes() == rx.tobytes() and y.tobytes() == ry.tobytes(), name


def test_convert_refuses_existing_store_without_overwrite(fmt, tmp_path):
    out = tmp_path / "s"
    ooc.convert(out, format=fmt, source=MNIST, limit=10)
    with pytest.raises(StoreExistsError, match=rf"^{out} already holds a store; pass --overwrite to replace it$"):
        ooc.convert(out, format=fmt, source=MNIST, limit=10)
    ooc.convert(out, format=fmt, source=MNIST, limit=12, overwrite=True)
    assert ooc.open_store(out).num_samples("train") == 12


def test_convert_never_deletes_a_directory_it_did_not_make(fmt, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreExistsError, match=r"is not an ooc store \(no ooc.json\); refusing to touch it"):
        ooc.convert(tmp_path, format=fmt, source=MNIST, limit=10, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_failed_conversion_is_incomplete_and_resumes(fmt, tmp_path, monkeypatch):
    """A write error (disk full) leaves no manifest: open_store refuses the store; what was
    committed is kept, and the same conversion run again finishes it, exactly as one that never failed."""
    import errno

    from ooc.errors import WriteError

    layout = get_format(fmt)
    calls = []

    def failing_write(self, split, start, x, y):
        calls.append(split)
        if split == "test":
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, split, start, x, y)

    original = layout.Writer.write
    monkeypatch.setattr(layout.Writer, "write", failing_write)
    with pytest.raises(WriteError, match=r"/s/\S+: No space left on device; free space and re-run the same command to resume$") as caught:
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
        got, expected = ooc.open_store(tmp_path / "s").read(split, np.arange(20)), ooc.open_store(tmp_path / "clean").read(split, np.arange(20))
        assert got[0].tobytes() == expected[0].tobytes() and got[1].tobytes() == expected[1].tobytes()


def test_interrupted_conversion_is_not_a_store(fmt, tmp_path):
    out = tmp_path / "s"
    ooc.convert(out, format=fmt, source=MNIST, limit=10)
    (out / "ooc.json").unlink()          # as if killed before the manifest was written
    (out / PARTIAL_NAME).write_text("")  # by an ooc without journals
    with pytest.raises(StoreNotFoundError, match=r"is an incomplete ooc store \(its conversion was interrupted\); re-run the same `ooc convert --out .*` to resume it, or add --overwrite to start over$"):
        ooc.open_store(out)
    with pytest.raises(StoreExistsError, match=r"holds an interrupted conversion that cannot be resumed \(its ooc.partial is not a journal this ooc can read\); pass --overwrite to start over$"):
        ooc.convert(out, format=fmt, source=MNIST, limit=10)
    ooc.convert(out, format=fmt, source=MNIST, limit=10, overwrite=True)
    assert ooc.open_store(out).num_samples("test") == 10


def test_garbage_manifest(fmt, store_dirs, tmp_path):
    import shutil

    shutil.copytree(store_dirs[fmt], tmp_path / "s")
    (tmp_path / "s" / "ooc.json").write_text("{not json")
    with pytest.raises(CorruptStoreError, match=r"ooc.json is not valid JSON"):
        ooc.open_store(tmp_path / "s")
    (tmp_path / "s" / "ooc.json").write_text(json.dumps({"ooc_manifest_version": 99, "format": fmt, "splits": {}}))
    with pytest.raises(CorruptStoreError, match=r"has manifest version 99; this ooc reads version 2 and older: upgrade ooc$"):
        ooc.open_store(tmp_path / "s")


def test_layout_option_errors(fmt):
    opts = get_format(fmt).OPTIONS
    with pytest.raises(OptionError, match=rf"^--compression 'rar' is not available for {fmt}: choose one of {', '.join(opts.compressions)}$"):
        opts.resolve(fmt, chunk_size=None, compression="rar")
    expected = r"^--chunk-size must be a positive number of samples, got 0$" if opts.default_chunk_size else rf"^--chunk-size does not apply to {fmt}"
    with pytest.raises(OptionError, match=expected):
        opts.resolve(fmt, chunk_size=0, compression=None)
    expected = r"^--shard-size must be a positive number of samples, got 0$" if opts.default_shard_size else rf"^--shard-size does not apply to {fmt} \(it is not written in shards\); drop the option$"
    with pytest.raises(OptionError, match=expected):
        opts.resolve(fmt, chunk_size=None, compression=None, shard_size=0)


def test_unknown_format():
    with pytest.raises(ooc.OocError, match=rf"^unknown format 'parquet2': choose one of {', '.join(FORMATS)}$"):
        ooc.convert("unused", format="parquet2")


def test_sparse_reads_from_large_chunks(fmt, tmp_path, mnist):
    # a few samples far apart in default-sized chunks: HDF5 reads them as points, not whole chunks
    ooc.convert(tmp_path / "s", format=fmt, source=MNIST, limit=3000)
    with np.load(MNIST) as d:
        source_x, source_y = d["x_train"][:3000], d["y_train"][:3000]
    indices = np.array([2999, 5, 1500, 2047, 2048])
    x, y = ooc.open_store(tmp_path / "s").read("train", indices)
    assert np.array_equal(x, expected_x(source_x[indices])) and np.array_equal(y, source_y[indices])


def test_chunk_shuffle_decodes_each_chunk_once_per_epoch(fmt, store_dirs, mnist, monkeypatch):
    store = ooc.open_store(store_dirs[fmt])
    if store.chunk_size is None:
        pytest.skip(f"{fmt} has no chunks")
    reads = []
    original = type(store)._read_rows
    monkeypatch.setattr(type(store), "_read_rows", lambda self, split, a, b: reads.append((a, b)) or original(self, split, a, b))
    got = list(ooc.batches(store, "train", batch_size=32, shuffle="chunk", seed=1))
    flat_x = np.concatenate([x for x, _ in got])
    order = np.concatenate(ooc.epoch_batches(LIMIT, batch_size=32, shuffle="chunk", seed=1, chunk_size=store.chunk_size))
    assert np.array_equal(flat_x, expected_x(mnist["x_train"][order]))
    rows_read = sum(b - a for a, b in reads)
    assert rows_read == LIMIT  # every chunk decoded exactly once


def test_decode_matches_the_pixel_table():
    from ooc.formats.base import U8_TO_FLOAT32, decode

    every_byte = np.arange(256, dtype=np.uint8)
    assert decode(every_byte).tobytes() == U8_TO_FLOAT32.tobytes()


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_damaged_file_is_named_with_its_samples(fmt, tmp_path, damage):
    import shutil

    chunk = None if get_format(fmt).OPTIONS.default_chunk_size is None else 64
    shard = None if get_format(fmt).OPTIONS.default_shard_size is None else 64
    ooc.convert(tmp_path / "s", format=fmt, source=MNIST, limit=LIMIT, chunk_size=chunk, shard_size=shard)
    store = ooc.open_store(tmp_path / "s")
    store.labels("train")  # labels are read once, before the damage
    victim = store._file_of("train", 100)
    assert victim.is_file() and victim.is_relative_to(tmp_path / "s")
    if damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:victim.stat().st_size // 2])
    else:
        victim.unlink()
    store.close()
    with pytest.raises(CorruptStoreError) as caught:
        store.read("train", [250, 100, 5])
    message = str(caught.value)
    assert message.startswith(str(victim)) and "\n" not in message, message
    assert caught.value.split == "train" and 100 in caught.value.indices
    shutil.rmtree(tmp_path / "s")


def test_damaged_label_chunk_is_one_line(tmp_path):
    ooc.convert(tmp_path / "s", format="zarr", source=MNIST, limit=LIMIT)
    labels = tmp_path / "s" / "train" / "y" / "c" / "0"
    data = bytearray(labels.read_bytes())
    data[len(data) // 2] ^= 0xFF  # zstd's checksum catches it
    labels.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError, match=r"^.*/s: cannot read the targets of split 'train' \(RuntimeError: .*\); check the store with `ooc verify .*`, re-convert it to repair$"):
        ooc.open_store(tmp_path / "s").read("train", [0])


@pytest.mark.parametrize("compression", ["none", "zstd", "blosc", "gzip"])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_zarr_chunks_decoded_directly_match_zarr(tmp_path, mnist, compression, dtype):
    """Local zarr chunks are decoded with numcodecs, not through zarr's read path: the same rows as
    zarr reads, every option ooc writes, a last chunk stored padded included."""
    import zarr

    ooc.convert(tmp_path / "s", format="zarr", source=MNIST, limit=LIMIT, chunk_size=128, compression=compression, dtype=dtype)
    store = ooc.open_store(tmp_path / "s")
    rows = store._read_rows("train", 256, LIMIT)  # the last chunk holds 44 of 128 rows
    assert store._decoders["train"] is not None
    assert rows.dtype == np.dtype(dtype) and np.array_equal(rows, zarr.open_group(tmp_path / "s", mode="r")["train/x"][256:])
    order = np.random.default_rng(0).permutation(LIMIT)
    x, y = store.read("train", order)
    assert np.array_equal(x, expected_x(mnist["x_train"][order])) and np.array_equal(y, mnist["y_train"][order])
