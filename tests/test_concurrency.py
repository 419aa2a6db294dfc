"""Several readers of one store at once: processes (each opens the store itself, as DataLoader-style
workers do) and threads sharing one store object. Every reader must see exactly the source's bytes."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

import ooc

from conftest import LIMIT, expected_x


def _read_epoch(path, seed):
    """One shuffled epoch read in a worker; returns the samples in source order."""
    store = ooc.open_store(path)
    x = np.empty((LIMIT, 28, 28, 1), np.float32)
    y = np.empty(LIMIT, np.int64)
    for batch in ooc.epoch_batches(LIMIT, batch_size=32, shuffle=True, seed=seed):
        x[batch], y[batch] = store.read("train", batch)
    return x, y


@pytest.fixture(scope="module")
def pool():
    # spawn: a fresh interpreter per worker, as users' worker processes often are (fork after TF is unsafe)
    with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("spawn")) as executor:
        yield executor


def test_processes_read_one_store_at_once(fmt, store_dirs, mnist, pool):
    want_x, want_y = expected_x(mnist["x_train"]), mnist["y_train"]
    futures = [pool.submit(_read_epoch, store_dirs[fmt], seed) for seed in range(3)]
    here = _read_epoch(store_dirs[fmt], 99)  # and this process too, meanwhile
    for x, y in [here] + [f.result(timeout=300) for f in futures]:
        assert np.array_equal(x, want_x) and np.array_equal(y, want_y)


def test_threads_share_one_store(fmt, store_dirs, mnist):
    store = ooc.open_store(store_dirs[fmt])
    plan = ooc.epoch_batches(LIMIT, batch_size=16, shuffle="chunk", seed=3, chunk_size=store.chunk_size)
    with ThreadPoolExecutor(4) as threads:
        results = list(threads.map(lambda batch: (batch, store.read("train", batch)), plan * 3))
    want = expected_x(mnist["x_train"])
    for batch, (x, y) in results:
        assert np.array_equal(x, want[batch]) and np.array_equal(y, mnist["y_train"][batch])
