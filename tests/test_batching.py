"""Batch plans: every sample exactly once per epoch, reproducible shuffles, prefetch that changes nothing."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import ooc
from ooc.core.threads import PREFETCH_NICENESS
from ooc.errors import CorruptStoreError, OptionError
from ooc.loader import batch_plan, hint_ahead, read_ahead
from ooc.sampling import SHUFFLE_BUFFER_CHUNKS, epoch_batches

pytestmark = pytest.mark.any_backend  # run under KERAS_BACKEND=jax too (README)


@pytest.mark.parametrize("n,batch_size", [(10, 3), (300, 32), (512, 512), (5, 8), (1000, 1)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_sample_exactly_once(n, batch_size, shuffle):
    plan = epoch_batches(n, batch_size=batch_size, shuffle=shuffle, seed=4)
    flat = np.concatenate(plan)
    assert np.array_equal(np.sort(flat), np.arange(n))  # no sample lost, none twice
    assert [len(b) for b in plan] == [batch_size] * (n // batch_size) + (
        [n % batch_size] if n % batch_size else []
    )


def test_the_recipes_slicing_bug_cannot_happen():
    # The recipe sliced batch i as files[i * n_batchs : (i + 1) * n_batchs] with n_batchs the number
    # of batches, not their size: batches overlapped and most samples were never read.
    n, batch_size = 1000, 100
    n_batchs = n // batch_size
    recipe = [np.arange(n)[i * n_batchs : (i + 1) * n_batchs] for i in range(n_batchs)]
    assert len(np.unique(np.concatenate(recipe))) == 100  # what the recipe read: a tenth
    ours = epoch_batches(n, batch_size=batch_size, shuffle=False)
    assert len(np.unique(np.concatenate(ours))) == n and sum(map(len, ours)) == n


def test_drop_remainder():
    plan = epoch_batches(10, batch_size=4, shuffle=True, seed=0, drop_remainder=True)
    assert [len(b) for b in plan] == [4, 4]
    assert len(np.unique(np.concatenate(plan))) == 8


def test_shuffle_is_seeded_per_epoch():
    first = epoch_batches(100, batch_size=10, shuffle=True, seed=3, epoch=0)
    again = epoch_batches(100, batch_size=10, shuffle=True, seed=3, epoch=0)
    second = epoch_batches(100, batch_size=10, shuffle=True, seed=3, epoch=1)
    other_seed = epoch_batches(100, batch_size=10, shuffle=True, seed=4, epoch=0)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))
    assert not np.array_equal(np.concatenate(first), np.concatenate(other_seed))
    assert np.array_equal(np.concatenate(first)[:5], np.random.default_rng([3, 0]).permutation(100)[:5])


def test_subset_of_indices():
    subset = np.array([7, 3, 11, 40])
    plan = epoch_batches(subset, batch_size=3, shuffle=True, seed=1)
    assert sorted(np.concatenate(plan).tolist()) == [3, 7, 11, 40]


def test_bad_arguments():
    with pytest.raises(OptionError, match=r"^shuffle=True needs a seed, so that the run can be reproduced$"):
        epoch_batches(10, batch_size=2, shuffle=True)
    with pytest.raises(OptionError, match=r"^batch size must be a positive number of samples, got 0$"):
        epoch_batches(10, batch_size=0, shuffle=False)


def _memory_store(n=50):
    x = np.arange(n * 4, dtype=np.uint8).reshape(n, 2, 2)
    return ooc.MemoryStore({"train": (x, np.arange(n) % 10)})


@pytest.mark.parametrize("prefetch", [0, 1, 3])
def test_prefetch_keeps_the_order(prefetch):
    store = _memory_store()
    expected = [store.read("train", b) for b in epoch_batches(50, batch_size=8, shuffle=True, seed=9)]
    got = list(ooc.batches(store, "train", batch_size=8, shuffle=True, seed=9, prefetch=prefetch))
    assert len(got) == len(expected) == 7
    for (x, y), (ex, ey) in zip(got, expected):
        assert np.array_equal(x, ex) and np.array_equal(y, ey)


def test_prefetch_passes_errors_on_and_stops_early():
    store = _memory_store()
    calls = []
    original = store._read_sorted

    def flaky(split, indices, state):
        calls.append(len(indices))
        if len(calls) == 3:
            raise OSError("disk gone")
        return original(split, indices, state)

    store._read_sorted = flaky
    it = ooc.batches(store, "train", batch_size=5, prefetch=2)
    next(it), next(it)
    with pytest.raises(
        (OSError, CorruptStoreError), match="disk gone"
    ):  # Store.read may wrap what a library raises
        next(it)
    store._read_sorted = original
    calls.clear()
    it = ooc.batches(store, "train", batch_size=5, prefetch=2)
    next(it)
    it.close()  # the consumer stops: the reader thread must stop too, not read the whole epoch
    assert len(calls) <= 4


def test_prefetch_starts_reading_before_the_first_next():
    import threading

    store = _memory_store()
    first_read = threading.Event()

    def read(split, indices):
        first_read.set()
        return store.read(split, indices)

    it = read_ahead(read, "train", batch_plan(store, "train", batch_size=5), prefetch=2)
    assert first_read.wait(
        timeout=30
    )  # no next() yet: the training loop relies on this to read during validation
    assert np.array_equal(next(it)[0], store.read("train", np.arange(5))[0])
    thread = it._thread
    del it  # dropped unfinished: its thread stops
    thread.join(timeout=30)
    assert not thread.is_alive()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_the_reader_thread_runs_niced_and_the_caller_does_not():
    store = _memory_store()
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    seen = []

    def read(split, indices):
        seen.append(os.getpriority(os.PRIO_PROCESS, 0))  # 0: the calling thread, on Linux
        return store.read(split, indices)

    list(read_ahead(read, "train", batch_plan(store, "train", batch_size=5), prefetch=2))
    assert seen == [min(19, mine + PREFETCH_NICENESS)] * 10
    assert os.getpriority(os.PRIO_PROCESS, 0) == mine


def test_chunk_shuffle_covers_everything_and_stays_within_a_few_chunks():
    chunk, n = 10, 1000
    plan = epoch_batches(n, batch_size=20, shuffle="chunk", seed=5, chunk_size=chunk)
    flat = np.concatenate(plan)
    assert np.array_equal(np.sort(flat), np.arange(n))
    stretch = SHUFFLE_BUFFER_CHUNKS * chunk  # samples per stretch of chunks
    for start in range(0, n, stretch):  # 100 chunks: 12 stretches of 8, then one of 4
        assert len(np.unique(flat[start : start + stretch] // chunk)) == min(
            SHUFFLE_BUFFER_CHUNKS, (n - start) // chunk
        )
    assert not np.array_equal(flat, np.arange(n))
    again = epoch_batches(n, batch_size=20, shuffle="chunk", seed=5, chunk_size=chunk)
    assert all(np.array_equal(a, b) for a, b in zip(plan, again))
    other_epoch = epoch_batches(n, batch_size=20, shuffle="chunk", seed=5, epoch=1, chunk_size=chunk)
    assert not np.array_equal(flat, np.concatenate(other_epoch))


def test_chunk_shuffle_without_chunks_is_the_global_shuffle():
    a = epoch_batches(50, batch_size=7, shuffle="chunk", seed=2)
    b = epoch_batches(50, batch_size=7, shuffle="global", seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(OptionError, match=r"^unknown shuffle 'random': choose one of none, global, chunk$"):
        epoch_batches(50, batch_size=7, shuffle="random", seed=2)


def test_start_batch_resumes_the_same_plan():
    store = _memory_store()
    whole = list(ooc.batches(store, "train", batch_size=8, shuffle=True, seed=9, epoch=2))
    rest = list(ooc.batches(store, "train", batch_size=8, shuffle=True, seed=9, epoch=2, start_batch=4))
    assert len(rest) == 3
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(whole[4:], rest))
    assert list(ooc.batches(store, "train", batch_size=8, start_batch=7)) == []
    with pytest.raises(
        OptionError, match=r"^start_batch must be in \[0, 7\] \(the epoch has 7 batches\), got 8$"
    ):
        ooc.batches(store, "train", batch_size=8, start_batch=8)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_read_replaces_store_read(prefetch):
    store = _memory_store()
    plan = epoch_batches(50, batch_size=8, shuffle=True, seed=9)
    plan_from_1 = batch_plan(store, "train", batch_size=8, shuffle=True, seed=9, start_batch=1)
    got = list(read_ahead(lambda split, indices: (split, indices.tolist()), "train", plan_from_1, prefetch))
    assert got == [("train", b.tolist()) for b in plan[1:]]


def test_read_ahead_hints_each_batch_once_a_stretch_ahead():
    plan = epoch_batches(50, batch_size=5, shuffle=True, seed=1)
    hinted = []
    got = list(
        read_ahead(
            lambda split, b: b.tolist(), "train", plan, 0, will_need=lambda s, b: hinted.append(b), ahead=3
        )
    )
    assert got == [b.tolist() for b in plan]
    assert [b.tolist() for b in hinted] == [b.tolist() for b in plan[1:]]  # each once, none read first


@pytest.mark.parametrize("layout", ["hdf5", "npy", "zarr"])
def test_will_need_starts_the_reads_and_changes_no_batch(layout, store_dirs, monkeypatch):
    """The next stretch's chunks are read in the store's reader threads (the layouts' reads leave the GIL)."""
    import threading

    path = store_dirs[layout]  # converted (and its checksums taken) before the spy goes in
    advised, read_by = [], []
    real = os.posix_fadvise
    monkeypatch.setattr(
        os,
        "posix_fadvise",
        lambda fd, off, n, advice: advised.append((off, n)) or real(fd, off, n, advice),
    )
    with ooc.open_store(path) as store:
        read_rows = store._read_rows
        store._read_rows = lambda *a: read_by.append(threading.current_thread().name) or read_rows(*a)
        with_hints = list(ooc.batches(store, "train", batch_size=16, shuffle="chunk", seed=3, prefetch=0))
    assert any(name.startswith("ooc-read-ahead") for name in read_by)
    assert advised  # a store that fits in memory also asks the kernel for the whole stretch at once
    with ooc.open_store(path) as store:
        plan = batch_plan(store, "train", batch_size=16, shuffle="chunk", seed=3)
        plain = list(read_ahead(store.read, "train", plan, 0))
    assert len(with_hints) == len(plain)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(with_hints, plain))


@pytest.mark.parametrize("layout", ["hdf5", "zarr"])
def test_a_batch_from_more_chunks_than_the_cache_decodes_at_most_the_cache_at_once(layout, store_dirs):
    indices = np.random.default_rng(0).permutation(300)  # every chunk of 64 in one batch
    with ooc.open_store(store_dirs[layout]) as store:
        expected = store.read("train", indices)
    with ooc.open_store(store_dirs[layout]) as store:
        store.cache_chunks = 2
        calls = []
        fetch = store._fetch_chunks
        store._fetch_chunks = lambda split, ids, *a: calls.append(len(ids)) or fetch(split, ids, *a)
        got = store.read("train", indices)
        assert calls[:3] == [2, 2, 1] and max(calls) == 2 and len(store._state.chunks) == 2  # then CRC units
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])


def _chunk_shuffle_as_defined(indices, *, seed, epoch, chunk_size, stretch_chunks):
    """The chunk shuffle's definition (what epoch_batches did before it was made lean): a lexsort by
    (the chunk's stretch, one random key per sample) after a permutation of the chunks."""
    order = np.arange(indices) if np.isscalar(indices) else np.asarray(indices, dtype=np.int64)
    rng = np.random.default_rng([seed, epoch])
    chunk_of = order // chunk_size
    chunks = np.unique(chunk_of)
    stretch_of_chunk = np.empty(chunks.max() + 1 if len(chunks) else 0, np.int64)
    stretch_of_chunk[chunks] = rng.permutation(len(chunks)) // stretch_chunks
    return order[np.lexsort((rng.random(len(order)), stretch_of_chunk[chunk_of]))]


@pytest.mark.parametrize("kind", ["count", "sorted subset", "unsorted subset", "empty"])
def test_the_lean_chunk_shuffle_is_the_defined_order(kind):
    rng = np.random.default_rng(7)
    for trial in range(40):
        n, chunk, stretch = int(rng.integers(1, 2500)), int(rng.integers(1, 200)), int(rng.integers(1, 9))
        indices = {
            "count": n,
            "sorted subset": np.sort(rng.choice(2 * n, size=n, replace=False)),
            "unsorted subset": rng.permutation(n),
            "empty": np.arange(0),
        }[kind]
        plan = epoch_batches(
            indices,
            batch_size=37,
            shuffle="chunk",
            seed=trial,
            epoch=3,
            chunk_size=chunk,
            stretch_chunks=stretch,
        )
        expected = _chunk_shuffle_as_defined(
            indices, seed=trial, epoch=3, chunk_size=chunk, stretch_chunks=stretch
        )
        assert all(b.dtype == np.int64 for b in plan)
        np.testing.assert_array_equal(np.concatenate(plan) if plan else np.arange(0), expected)


def test_the_chunk_shuffle_of_a_large_split_holds_about_8_bytes_a_sample():
    import tracemalloc

    tracemalloc.start()
    try:
        epoch_batches(1_000_000, batch_size=512, shuffle="chunk", seed=0, chunk_size=1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 1_000_000  # the order (8 MB) and one stretch; the lexsort held ~40 MB


@pytest.mark.parametrize("layout", ["hdf5", "zarr"])  # npy's units are 1,024 rows: one in these stores
def test_the_global_shuffle_is_gathered_a_window_ahead_and_changes_no_batch(layout, store_dirs, monkeypatch):
    """Hinted two windows ahead, a window's samples are read in the reader threads, each chunk once
    for all of them; the batches are those of a plain read."""
    from ooc.formats import chunked, readahead

    path = store_dirs[layout]
    with ooc.open_store(path) as store:
        plan = batch_plan(store, "train", batch_size=16, shuffle="global", seed=3)
        plain = list(read_ahead(store.read, "train", plan, 0))
    monkeypatch.setattr(chunked.ChunkedStore, "cache_chunks", 2)  # a batch of 16 then spans "many" chunks
    with ooc.open_store(path) as store:
        row_bytes = int(np.prod(store.sample_shape)) * store.schema.dtype.itemsize
        monkeypatch.setattr(readahead, "GATHER_BYTES", 128 * row_bytes)  # windows of 128 samples
        gathered, chunk_reads = [], []
        gather, read_rows = readahead._gather, store._read_rows
        monkeypatch.setattr(readahead, "_gather", lambda *a: gathered.append(len(a[-1])) or gather(*a))
        store._read_rows = lambda *a: chunk_reads.append(a) or read_rows(*a)
        assert store.gather_window() == 128 and hint_ahead(store, 16, shuffle="global") == 16
        hinted = list(ooc.batches(store, "train", batch_size=16, shuffle="global", seed=3, prefetch=0))
    assert len(hinted) == len(plain)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(hinted, plain))
    assert sum(gathered) >= 128 and sum(gathered) % 128 == 0  # whole windows of 128 distinct samples
    assert len(chunk_reads) < sum(len(b) for b in plan)  # fewer chunk reads than samples


@pytest.mark.parametrize("layout", ["hdf5", "zarr"])
def test_two_iterators_over_one_store_share_no_read_ahead_state(layout, store_dirs):
    """Training and validation each read through their own ReadState: neither evicts, hints or gathers
    for the other, and the store's own state (plain reads) is left alone; closing one ends its threads."""
    with ooc.open_store(store_dirs[layout]) as store:
        train = ooc.batches(store, "train", batch_size=16, shuffle="chunk", seed=1, prefetch=2)
        test = ooc.batches(store, "test", batch_size=16, prefetch=2)
        first_train, first_test = next(train), next(test)
        assert train._state is not test._state and store._state not in (train._state, test._state)
        assert {split for split, _ in train._state.chunks} | {split for split, _ in train._state.ahead} == {
            "train"
        }
        assert {split for split, _ in test._state.chunks} == {"test"}
        assert not store._state.chunks and not store._state.ahead
        expected = store.read("train", batch_plan(store, "train", batch_size=16, shuffle="chunk", seed=1)[0])
        assert np.array_equal(first_train[0], expected[0]) and np.array_equal(first_train[1], expected[1])
        assert np.array_equal(first_test[0], store.read("test", np.arange(16))[0])
        train.close()
        assert train._state._pool is None
        test.close()
