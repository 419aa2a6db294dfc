"""Property-based tests: malformed CSV files, truncated chunks, odd .npz sources and garbage
manifests each end in ooc's own one-line error (or, where the input is still valid, in exactly the
right batch): never a library traceback, never a hang, never a wrong batch."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ooc
from ooc.errors import CorruptStoreError, OocError, SourceError
from ooc.verify import verify

from conftest import MNIST

# The suite's default is 40 examples drawn the same way every run (CI must not fail on a draw a commit
# did not cause); OOC_FUZZ_EXAMPLES=1000 OOC_FUZZ_RANDOM=1 searches harder and elsewhere, and each
# case it finds becomes an @example.
FUZZ = settings(
    max_examples=int(os.environ.get("OOC_FUZZ_EXAMPLES", 40)),
    derandomize=not os.environ.get("OOC_FUZZ_RANDOM"),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
SMALL = 20  # samples per split of the fuzzed stores


@pytest.fixture(scope="module")
def small_stores(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    for fmt in ooc.FORMATS:
        ooc.convert(
            base / fmt,
            format=fmt,
            source=MNIST,
            limit=SMALL,
            chunk_size=8 if ooc.get_format(fmt).OPTIONS.default_chunk_size else None,
        )
    return base


def _fresh_copy(small_stores, tmp_path, fmt, name):
    target = tmp_path / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(small_stores / fmt, target)
    return target


def _one_line(error):
    message = str(error)
    assert message and "\n" not in message and "Traceback" not in message, message
    return message


# -- CSV ------------------------------------------------------------------------------------------

_mutations = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 5000)),
    st.tuples(
        st.just("insert"),
        st.integers(0, 5000),
        st.text(st.sampled_from(",.-+e \n\t0123456789abcnaif\r\x00"), min_size=1, max_size=6),
    ),
    st.tuples(st.just("replace"), st.integers(0, 5000), st.text(min_size=1, max_size=4)),
    st.tuples(st.just("drop_line"), st.integers(0, 27)),
)


def _mutate(text: str, mutation) -> str:
    kind = mutation[0]
    if kind == "truncate":
        return text[: mutation[1] % (len(text) + 1)]
    if kind == "insert":
        at = mutation[1] % (len(text) + 1)
        return text[:at] + mutation[2] + text[at:]
    if kind == "replace":
        at = mutation[1] % len(text)
        return text[:at] + mutation[2] + text[at + len(mutation[2]) :]
    lines = text.splitlines(keepends=True)
    del lines[mutation[1] % len(lines)]
    return "".join(lines)


@FUZZ
@given(mutation=_mutations, sample=st.integers(0, SMALL - 1))
def test_malformed_csv_sample(small_stores, tmp_path, mutation, sample):
    path = _fresh_copy(small_stores, tmp_path, "csv", "csv")
    victim = path / "train" / f"{sample + 1:02d}.csv"
    original = victim.read_text()
    mutated = _mutate(original, mutation)
    victim.write_text(mutated, errors="surrogatepass")
    store = ooc.open_store(path)
    try:
        want = np.loadtxt(victim, dtype=np.float32, ndmin=2)  # the store is whitespace-separated
        valid = want.shape == (28, 28)
    except ValueError:
        valid = False
    batch = [sample, (sample + 1) % SMALL]
    if valid:  # still 28 lines of 28 numbers: ooc must read exactly those numbers
        x, _ = store.read("train", batch)
        assert np.array_equal(x[0, ..., 0], want, equal_nan=True)
    else:
        with pytest.raises(CorruptStoreError) as caught:
            store.read("train", batch)
        assert _one_line(caught.value).startswith(str(victim))


# -- truncated and damaged chunks -----------------------------------------------------------------


@FUZZ
@given(
    fmt=st.sampled_from([f for f in ooc.FORMATS if f != "csv"]), keep=st.floats(0, 0.999)
)  # csv: test_csv_file_fuzz
def test_truncated_data_file(small_stores, tmp_path, fmt, keep):
    path = _fresh_copy(small_stores, tmp_path, fmt, fmt)
    store = ooc.open_store(path)
    labels = store.labels("train").copy()
    victim = store._file_of("train", SMALL - 1)
    data = victim.read_bytes()
    victim.write_bytes(data[: int(len(data) * keep)])
    store.close()
    try:
        x, y = store.read("train", np.arange(SMALL))
    except CorruptStoreError as e:
        assert _one_line(e).startswith(str(victim))
    else:  # only a cut that spares every sample's bytes may read, and then it reads right
        with np.load(MNIST) as d:
            assert np.array_equal(np.rint(x[..., 0] * 255).astype(np.uint8), d["x_train"][:SMALL])
        assert np.array_equal(y, labels)


@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0, 0.999), st.integers(1, 255)), min_size=1, max_size=4))
def test_damaged_zarr_chunk_is_detected(small_stores, tmp_path, flips):
    """zstd chunks carry a content checksum: a flipped byte is an error, not different pixels."""
    path = _fresh_copy(small_stores, tmp_path, "zarr", "zarr")
    store = ooc.open_store(path)
    store.labels("train")
    victim = store._file_of("train", 0)
    data = bytearray(victim.read_bytes())
    for where, mask in flips:
        data[int(len(data) * where)] ^= mask
    victim.write_bytes(bytes(data))
    store.close()
    try:
        x, _ = store.read("train", np.arange(8))
    except CorruptStoreError as e:
        assert _one_line(e).startswith(str(victim))
    else:
        with np.load(MNIST) as d:
            assert np.array_equal(np.rint(x[..., 0] * 255).astype(np.uint8), d["x_train"][:8])


# -- .npz sources ---------------------------------------------------------------------------------

_arrays = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.int8, np.int64, np.float32, np.bool_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
)


@FUZZ
@given(key=st.sampled_from(["x_train", "y_train", "x_test", "y_test"]), array=_arrays)
def test_npz_with_odd_arrays(tmp_path, key, array):
    arrays = {
        "x_train": np.zeros((4, 5, 5), np.uint8),
        "y_train": np.arange(4),
        "x_test": np.ones((2, 5, 5), np.uint8),
        "y_test": np.arange(2),
    }
    arrays[key] = array
    source = tmp_path / "odd.npz"
    np.savez(source, **arrays)
    out = tmp_path / "s"
    shutil.rmtree(out, ignore_errors=True)
    try:
        ooc.convert(out, format="zarr", source=source)
    except (SourceError, OocError) as e:
        _one_line(e)
        assert not out.exists()
        return
    store = ooc.open_store(out)  # it was valid: the store holds exactly the arrays
    for split in ("train", "test"):
        x, y = store.read(split, np.arange(store.num_samples(split)))
        assert np.array_equal(np.rint(x[..., 0] * 255).astype(np.uint8), arrays[f"x_{split}"])
        assert np.array_equal(y, arrays[f"y_{split}"])


# -- manifests ------------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 70000) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_fields = st.sampled_from(
    ["format", "splits", "sample_shape", "num_classes", "options", "ooc_manifest_version", "x_dtype"]
)


@FUZZ
@given(
    fmt=st.sampled_from(list(ooc.FORMATS)), field=_fields, value=_json, raw=st.none() | st.binary(max_size=40)
)
def test_garbage_manifest(small_stores, tmp_path, fmt, field, value, raw):
    path = _fresh_copy(small_stores, tmp_path, fmt, fmt)
    manifest_file = path / "ooc.json"
    if raw is not None:
        manifest_file.write_bytes(raw)
    else:
        manifest = json.loads(manifest_file.read_text())
        assume(manifest.get(field) != value)
        manifest[field] = value
        manifest_file.write_text(json.dumps(manifest))
    try:
        store = ooc.open_store(path)
        x, y = store.read("train", [0, SMALL - 1])
    except OocError as e:
        _one_line(e)
    else:  # a change ooc could accept (a field it does not use): the batch is still right
        with np.load(MNIST) as d:
            assert np.array_equal(np.rint(x[..., 0] * 255).astype(np.uint8), d["x_train"][[0, SMALL - 1]])


# -- issue 18: manifests edited consistently, bytes flipped in uncompressed files ----------------------


def _every_sample(path):
    """Every sample and target of every split, read through ooc (raises ooc's errors)."""
    with ooc.open_store(path) as store:
        return {split: store.read(split, np.arange(store.num_samples(split))) for split in store.splits}


def _as_written(small_stores, fmt):
    return _every_sample(small_stores / fmt)


_edits = st.sampled_from(["count", "sample_shape", "chunk_size", "shard_size", "num_classes"])


@FUZZ
@given(fmt=st.sampled_from(list(ooc.FORMATS)), edit=_edits, value=st.integers(1, 64))
def test_manifest_edit_is_refused_or_harmless(small_stores, tmp_path, fmt, edit, value):
    """A reading-relevant field edited, the manifest's own checksum recomputed (an edit that looks
    legitimate): open_store or the read refuses it in one line, or the batches are exactly right."""
    from ooc.manifest import write_manifest

    path = _fresh_copy(small_stores, tmp_path, fmt, fmt)
    manifest = json.loads((path / "ooc.json").read_text())
    if edit == "count":
        manifest["splits"]["train"]["count"] = value
    elif edit == "sample_shape":
        manifest["sample_shape"] = [value, 784 // value, 1] if 784 % value == 0 else [value, 28, 1]
    elif edit == "num_classes":
        manifest["target"]["num_classes"] = value
    else:
        assume(manifest["options"].get(edit) is not None)
        manifest["options"][edit] = value
    write_manifest(path, {k: v for k, v in manifest.items() if k != "manifest_crc32"})
    try:
        got = _every_sample(path)
    except OocError as e:
        _one_line(e)
        return
    want = _as_written(small_stores, fmt)
    assert got.keys() == want.keys()
    for split in want:
        assert np.array_equal(got[split][0], want[split][0]) and np.array_equal(got[split][1], want[split][1])


# uncompressed layouts, whose bytes carry no checksum of their own, and the files a flip is caught in
# (csv: the targets file; its sample files are text that reads are not checked against)
_UNCOMPRESSED = {
    "hdf5": ("none", lambda p: ["data.h5"]),
    "npy": ("none", lambda p: ["train_x.npy", "train_y.npy"]),
    "zarr": (
        "none",
        lambda p: [q.relative_to(p).as_posix() for q in sorted((p / "train").rglob("c/*/*/*/*"))],
    ),
    "parquet": ("none", lambda p: ["train.parquet"]),
    "tfrecord": ("none", lambda p: [q.name for q in sorted(p.glob("train-*.tfrecord"))]),
    "csv": ("none", lambda p: ["target.csv"]),
}


@pytest.fixture(scope="module")
def uncompressed_stores(tmp_path_factory):
    base = tmp_path_factory.mktemp("plain")
    for fmt, (compression, _) in _UNCOMPRESSED.items():
        chunked = ooc.get_format(fmt).OPTIONS.default_chunk_size
        sharded = ooc.get_format(fmt).OPTIONS.default_shard_size
        ooc.convert(
            base / fmt,
            format=fmt,
            source=MNIST,
            limit=SMALL,
            compression=compression,
            chunk_size=8 if chunked else None,
            shard_size=8 if sharded else None,
        )
    return base


@FUZZ
@given(
    fmt=st.sampled_from(list(_UNCOMPRESSED)),
    which=st.integers(0),
    where=st.floats(0, 1),
    flip=st.integers(1, 255),
)
@example(fmt="npy", which=1, where=0.0703125, flip=1)  # "{" of train_y.npy's header: numpy raised TokenError
@example(fmt="tfrecord", which=0, where=0.00390625, flip=1)  # TF could not decode its own error message
@example(
    fmt="parquet", which=0, where=0.96875, flip=1
)  # pyarrow's message of a damaged footer ends in a newline
def test_flipped_byte_in_an_uncompressed_store(uncompressed_stores, tmp_path, fmt, which, where, flip):
    """A byte flipped in a data file of an uncompressed store: reading ends in ooc's one-line error,
    or (a byte that no read depends on) in exactly the right batches; never in other pixels or labels."""
    path = _fresh_copy(uncompressed_stores, tmp_path, fmt, fmt)
    files = _UNCOMPRESSED[fmt][1](path)
    _flipped_reads_exactly_or_fail(path, files[which % len(files)], where, flip, uncompressed_stores / fmt)


def _flipped_reads_exactly_or_fail(path, name: str, where: float, mask: int, clean) -> None:
    """XOR ``mask`` into the byte at ``where`` (a fraction) of ``path/name``, then read every sample:
    ooc's one-line error, or exactly the batches of the ``clean`` store; never other values."""
    victim = path / name
    data = bytearray(victim.read_bytes())
    at = min(int(where * len(data)), len(data) - 1)
    data[at] ^= mask
    victim.write_bytes(bytes(data))
    try:
        got = _every_sample(path)
    except OocError as e:
        _one_line(e)
        return
    want = _every_sample(clean)
    for split in want:
        assert np.array_equal(got[split][0], want[split][0]) and np.array_equal(
            got[split][1], want[split][1]
        ), f"{victim} byte {at} (xor {mask}): wrong {split} batch"


# Parquet's codecs carry no checksum pyarrow checks (a flipped bit in a zstd page decodes to other
# pixels): every row group is checked against ooc's own CRC, whatever the codec
@pytest.fixture(scope="module")
def compressed_parquet(tmp_path_factory):
    base = tmp_path_factory.mktemp("parquet")
    for compression in ooc.get_format("parquet").OPTIONS.compressions:
        ooc.convert(
            base / compression,
            format="parquet",
            source=MNIST,
            limit=SMALL,
            compression=compression,
            chunk_size=8,
        )
    return base


@FUZZ
@given(
    compression=st.sampled_from(ooc.get_format("parquet").OPTIONS.compressions),
    where=st.floats(0, 1),
    bit=st.integers(0, 7),
)
@example(compression="zstd", where=0.5, bit=1)  # issue 29: read back as other pixels, no error
def test_flipped_bit_in_a_parquet_store_of_any_codec(compressed_parquet, tmp_path, compression, where, bit):
    path = _fresh_copy(compressed_parquet, tmp_path, compression, compression)
    _flipped_reads_exactly_or_fail(path, "train.parquet", where, 1 << bit, compressed_parquet / compression)


# Two conversions to one --out, started a random moment apart: one owns the directory at a time, so
# the store left is exactly what either would have written alone, and a refused run says why in one line.


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(["hdf5", "zarr", "csv", "parquet"]), delay=st.floats(0.0, 0.3))
def test_concurrent_conversions_leave_one_exact_store(tmp_path_factory, fmt, delay):
    import subprocess
    import sys
    import time

    base = tmp_path_factory.mktemp("race")
    args = [sys.executable, "-m", "ooc", "--quiet", "convert", "--format", fmt, "--source", str(MNIST)]
    args += ["--limit", "200", "--out", str(base / "out"), "--overwrite"]
    first = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    second = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    outcomes = [(run.wait(timeout=300), run.stderr.read()) for run in (first, second)]
    assert any(code == 0 for code, _ in outcomes), outcomes
    for code, err in outcomes:
        assert code == 0 or (
            code == 1 and err.count("\n") == 1 and "is being written by another ooc convert (pid" in err
        ), outcomes
    ooc.convert(base / "alone", format=fmt, source=MNIST, limit=200)
    with ooc.open_store(base / "out") as raced, ooc.open_store(base / "alone") as alone:
        for split in ("train", "test"):
            every = np.arange(alone.num_samples(split))
            assert raced.num_samples(split) == len(every)
            for a, b in zip(raced.read_stored(split, every), alone.read_stored(split, every)):
                assert np.array_equal(a, b)
    assert verify(base / "out").ok
