"""The local cache of remote stores (``ooc.cache``, ``--cache-dir``/``--cache-size``), against moto's S3
server (``s3_endpoint``, ``remote_stores`` in conftest): the exact batches of an uncached read, cold
and warm; epoch 2 without requests; the LRU bound; a directory it does not own; damaged entries."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

import ooc
from ooc.cache import MARKER, ChunkCache
from ooc.errors import CorruptStoreError, OptionError

from conftest import BUCKET, CHUNK, LIMIT, MNIST

REMOTE = ["zarr", "parquet"]


@pytest.fixture
def s3_requests(monkeypatch):
    """Requests s3fs sends (every zarr and parquet read goes through it): a one-item list, counting."""
    import s3fs

    count, call = [0], s3fs.S3FileSystem._call_s3

    async def counted(self, method, *args, **kwargs):
        count[0] += 1
        return await call(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counted)
    return count


def epoch(store, seed: int, requests=None):
    """A chunk-shuffled epoch of the train split: its batches, and the requests they cost."""
    store.labels("train")
    before = requests[0] if requests else 0
    plan = ooc.epoch_batches(LIMIT, batch_size=50, shuffle="chunk", seed=seed, chunk_size=CHUNK)
    batches = [store.read("train", batch) for batch in plan]
    return batches, (requests[0] - before if requests else 0)


def same(a, b) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(x, u) and np.array_equal(y, v) for (x, y), (u, v) in zip(a, b)
    )


@pytest.mark.parametrize("fmt", REMOTE)
def test_cached_batches_are_exact_and_epoch_2_fetches_nothing(fmt, remote_stores, tmp_path, s3_requests):
    url, where = remote_stores[fmt], tmp_path / "cache"
    for seed in (0, 1):  # a cold cache, then a warm one: each a fresh store (a new run), as uncached
        uncached, cost = epoch(ooc.open_store(url), seed, s3_requests)
        cached_store = ooc.open_store(url, cache_dir=where, cache_size="16M")
        cached, cached_cost = epoch(cached_store, seed, s3_requests)
        assert same(cached, uncached)
        chunks = -(-LIMIT // CHUNK)
        assert cost >= chunks if fmt == "zarr" else cost >= 1  # parquet: one range request per run
        if seed == 0:
            assert cached_store.cache.stats == {"hits": 0, "misses": chunks, "dropped": 0, "evicted": 0}
        else:  # zarr opens its array's metadata once per store; no chunk is fetched again
            assert cached_store.cache.stats == {"hits": chunks, "misses": 0, "dropped": 0, "evicted": 0}
            assert cached_cost <= (2 if fmt == "zarr" else 0) < cost
    again = pickle.loads(pickle.dumps(cached_store))  # what a worker process gets: the cache goes along
    assert isinstance(again.cache, ChunkCache) and again.cache.directory == where
    assert same(epoch(again, 1)[0], uncached) and again.cache.stats["hits"] == chunks


def test_lru_keeps_the_total_within_the_size_and_survives_the_run(tmp_path):
    store, size = "0" * 16, 16 * 108  # sixteen entries of 100 bytes (+ 8 of header)
    cache = ChunkCache(tmp_path / "c", size)
    for i in range(16):
        cache.put(store, f"e{i}", bytes([i]) * 100)
    assert cache.total_bytes() == size and cache.stats["evicted"] == 0
    old = time.time() - 100
    for i in range(16):  # a clear order, whatever the filesystem's mtime resolution
        os.utime(tmp_path / "c" / store / f"e{i}.unit", (old + i, old + i))
    assert cache.get(store, "e0") == bytes([0]) * 100  # a hit: now the most recently used
    reopened = ChunkCache(tmp_path / "c", size)  # another run: the order from the directory
    reopened.put(store, "new", b"n" * 100)  # full: down to 15/16 of the size, least recently used first
    kept = {i for i in range(16) if reopened.get(store, f"e{i}") is not None}
    assert kept == {0, *range(3, 16)} and reopened.stats["evicted"] == 2
    assert reopened.get(store, "new") == b"n" * 100 and reopened.total_bytes() == 15 * 108
    for i in range(40):
        reopened.put(f"{i:016x}", "x", os.urandom(50 + i))
        assert reopened.total_bytes() <= size
    reopened.put(store, "big", b"x" * size)  # larger than the whole cache: not kept, nothing evicted
    assert reopened.get(store, "big") is None and reopened.total_bytes() <= size


def test_it_deletes_only_its_own_files(tmp_path):
    outside = tmp_path / "precious"
    outside.write_bytes(b"mine")
    with pytest.raises(OptionError) as error:
        ChunkCache(tmp_path, 1000)
    assert (
        str(error.value)
        == f"--cache-dir {tmp_path} is not empty and not an ooc cache; choose a new or empty directory"
    )
    with pytest.raises(
        OptionError, match=r"^--cache-dir .*precious is a file; choose a new or empty directory$"
    ):
        ChunkCache(outside, 1000)
    assert outside.read_bytes() == b"mine"

    where = tmp_path / "cache"
    where.mkdir()  # an empty directory is adopted
    cache = ChunkCache(where, 300)
    assert (where / MARKER).is_file()
    folder = where / ("0" * 16)
    cache.put("0" * 16, "a", b"a" * 100)
    (where / "notes.txt").write_bytes(b"user")  # a user's files, in the directory and in a store folder
    (folder / "mine.unit.bak").write_bytes(b"user")
    (folder / "b.unit").symlink_to(outside)  # an entry's name, pointing outside
    assert cache.get("0" * 16, "b") is None  # never followed, never served
    cache.put("0" * 16, "b", b"b" * 100)  # nor replaced
    for i in range(30):  # many evictions
        cache.put("0" * 16, f"n{i}", os.urandom(100))
    cache.get("0" * 16, "n29")
    assert (where / "notes.txt").read_bytes() == b"user" and (
        folder / "mine.unit.bak"
    ).read_bytes() == b"user"
    assert (folder / "b.unit").is_symlink() and outside.read_bytes() == b"mine"
    assert cache.total_bytes() <= 300
    ChunkCache(where, 300)  # a marked directory is adopted whatever it holds


@pytest.mark.parametrize("fmt", REMOTE)
def test_a_damaged_entry_is_fetched_again(fmt, remote_stores, tmp_path):
    url, where = remote_stores[fmt], tmp_path / "cache"
    expected, _ = epoch(ooc.open_store(url, cache_dir=where, cache_size="16M"), 0)
    entries = sorted(where.glob("*/*.unit"))
    assert len(entries) == -(-LIMIT // CHUNK)
    damaged = bytearray(entries[1].read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    entries[1].write_bytes(bytes(damaged))
    entries[2].write_bytes(entries[2].read_bytes()[:20])  # and one truncated
    store = ooc.open_store(url, cache_dir=where, cache_size="16M")
    assert same(epoch(store, 0)[0], expected)
    assert store.cache.stats["dropped"] == 2 and store.cache.stats["misses"] == 2
    store = ooc.open_store(url, cache_dir=where, cache_size="16M")  # fetched again and kept
    assert same(epoch(store, 0)[0], expected) and store.cache.stats["hits"] == len(entries)


def test_a_damaged_chunk_object_is_not_served_or_kept(s3_endpoint, tmp_path):
    import s3fs

    url = f"s3://{BUCKET}/cache-damaged/zarr"
    ooc.convert(url, format="zarr", source=MNIST, limit=100, chunk_size=32, compression="none")
    key = f"{BUCKET}/cache-damaged/zarr/train/x/c/1/0/0/0"
    fs = s3fs.S3FileSystem()
    data = bytearray(fs.cat_file(key))
    data[100] ^= 1  # uncompressed: zarr alone would serve the flipped pixel
    fs.pipe_file(key, bytes(data))
    store = ooc.open_store(url, cache_dir=tmp_path / "cache", cache_size="16M")
    with pytest.raises(
        CorruptStoreError, match=r"samples 32–63 of split 'train' differ from their checksum"
    ) as e:
        store.read("train", [40, 70])
    assert e.value.split == "train" and list(e.value.indices) == [40, 70]  # the samples asked for
    assert not list((tmp_path / "cache").glob("*/*train%2Fx%2Fc%2F1*"))
    fs.rm_file(f"{BUCKET}/cache-damaged/zarr/train/x/c/2/0/0/0")
    with pytest.raises(CorruptStoreError, match=r"c/2/0/0/0: chunk file is missing \(samples 64–95"):
        store.read("train", [70])


def test_the_options_are_refused_in_one_line(remote_stores, store_dirs, tmp_path):
    url, where = remote_stores["zarr"], tmp_path / "cache"
    with pytest.raises(OptionError) as error:
        ooc.open_store(url, cache_dir=where, cache_size="10K")
    assert str(error.value) == (
        f"--cache-size 10 KiB cannot hold one stretch of chunks of {url} (8 units of up to 10.3 KiB: 82.6 KiB); "
        "give at least --cache-size 83K"
    )
    refusals = [
        (dict(cache_dir=where, cache_size="lots"), "--cache-size 'lots': give a size such as 1G"),
        (dict(cache_dir=where), f"--cache-dir {where} needs --cache-size: how much disk it may use"),
        (dict(cache_size="1G"), "--cache-size goes with --cache-dir"),
    ]
    for options, message in refusals:
        with pytest.raises(OptionError) as error:
            ooc.open_store(url, **options)
        assert str(error.value).startswith(message)
    with pytest.raises(OptionError) as error:
        ooc.open_store(store_dirs["zarr"], cache_dir=where, cache_size="1G")
    assert str(error.value) == (
        f"--cache-dir applies to stores on object storage (s3://…), not the local store {store_dirs['zarr']}; "
        "drop --cache-dir"
    )
    assert not where.exists()  # nothing written on bad input


def test_cli_train_with_a_cache(remote_stores, tmp_path):
    command = [sys.executable, "-m", "ooc", "train", "--store", "parquet", "--path", remote_stores["parquet"]]
    cache = ["--cache-dir", "cache", "--cache-size", "64M"]
    done = subprocess.run(
        [*command, "--epochs", "2", "--batch-size", "64", "--report", "run.json", *cache],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=os.environ,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "run.json").read_text())
    assert len(report["history"]) == 2
    cached = report["store"]["cache"]  # epoch 2 comes from the store's decoded chunks in memory: all 5 fit
    assert (
        cached["max_bytes"] == 64 << 20
        and cached["misses"] == 2 * -(-LIMIT // CHUNK)
        and not cached["dropped"]
    )
    assert len(list((tmp_path / "cache").glob("*/*.unit"))) == 2 * -(-LIMIT // CHUNK)  # train and test
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("")
    done = subprocess.run(
        [*command, "--cache-dir", "other", "--cache-size", "64M"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=os.environ,
    )
    assert done.returncode == 1
    assert (
        done.stderr
        == "ooc: error: --cache-dir other is not empty and not an ooc cache; choose a new or empty directory\n"
    )


def test_several_caches_share_one_directory(tmp_path):
    """Two caches on one directory (what two processes see), used from threads at once: a unit is
    served whole or not at all, and the directory stays within the size."""
    from concurrent.futures import ThreadPoolExecutor

    caches = [ChunkCache(tmp_path / "c", 20 * 1008) for _ in range(2)]
    units = {f"u{i}": bytes([i]) * 1000 for i in range(40)}

    def work(k: int) -> int:
        cache, wrong = caches[k % 2], 0
        for i in range(200):
            name = f"u{(i * 7 + k) % 40}"
            data = cache.get("0" * 16, name)
            if data is None:
                cache.put("0" * 16, name, units[name])
            elif data != units[name]:
                wrong += 1
        return wrong

    with ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(work, range(4))) == 0
    assert caches[0].total_bytes() <= 20 * 1008
    assert not list((tmp_path / "c").glob("*/.*.tmp"))
