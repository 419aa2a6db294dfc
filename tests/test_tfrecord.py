"""TFRecord specifics beyond the conformance suite: the offset index, GZIP shards read once per
epoch, the streaming tf.data view and damaged shards."""

from __future__ import annotations

import numpy as np
import pytest

import ooc
from ooc.errors import CorruptStoreError
from ooc.formats import tfrecord

from conftest import LIMIT, MNIST, expected_x


def test_index_points_at_every_record(store_dirs):
    store = ooc.open_store(store_dirs["tfrecord"])
    paths = store.shard_paths("train")
    assert [p.name for p in paths] == [f"train-{i:05d}-of-00005.tfrecord" for i in range(5)]
    index = np.load(store.path / "train.index.npy")
    assert index.shape == (LIMIT, 2) and index[0, 0] == tfrecord.RECORD_HEADER
    for i in (0, 63, 64, 299):  # the uint64 before each payload is its length
        data = paths[i // 64].read_bytes()
        assert int.from_bytes(data[index[i, 0] - 12 : index[i, 0] - 4], "little") == index[i, 1]


def test_gzip_shards_are_inflated_once_per_epoch(tmp_path, mnist, monkeypatch):
    ooc.convert(
        tmp_path / "s", format="tfrecord", source=MNIST, limit=LIMIT, shard_size=64, compression="gzip"
    )
    store = ooc.open_store(tmp_path / "s")
    assert store.chunk_size == 64 and store.shard_paths("train")[0].name == "train-00000-of-00005.tfrecord.gz"
    inflated = []
    original = tfrecord.Store._shard_bytes
    monkeypatch.setattr(
        tfrecord.Store,
        "_shard_bytes",
        lambda self, split, shard: inflated.append(shard) or original(self, split, shard),
    )
    got = list(ooc.batches(store, "train", batch_size=32, shuffle="chunk", seed=1))
    order = np.concatenate(ooc.epoch_batches(LIMIT, batch_size=32, shuffle="chunk", seed=1, chunk_size=64))
    assert np.array_equal(np.concatenate([x for x, _ in got]), expected_x(mnist["x_train"][order]))
    assert sorted(inflated) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_tf_data_view_yields_every_sample_once(tmp_path, mnist, compression):
    ooc.convert(
        tmp_path / "s", format="tfrecord", source=MNIST, limit=LIMIT, shard_size=64, compression=compression
    )
    store = ooc.open_store(tmp_path / "s")
    batches = list(tfrecord.tf_dataset(store, "train", batch_size=50, shuffle_buffer=100, seed=0))
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    assert [len(b[1]) for b in batches] == [50] * 6 and x.shape == (LIMIT, 28, 28, 1)
    want = expected_x(mnist["x_train"])
    rows = {row.tobytes(): label for row, label in zip(want, mnist["y_train"])}
    assert sorted(row.tobytes() for row in x) == sorted(rows)  # a permutation of the split …
    assert all(rows[row.tobytes()] == label for row, label in zip(x, y))  # … with its labels
    assert not np.array_equal(y, mnist["y_train"])  # and shuffled


def test_damaged_shards_name_the_file(tmp_path):
    ooc.convert(tmp_path / "s", format="tfrecord", source=MNIST, limit=LIMIT, shard_size=64)
    shard = tmp_path / "s" / "train-00002-of-00005.tfrecord"
    shard.write_bytes(shard.read_bytes()[:1000])
    store = ooc.open_store(tmp_path / "s")
    store._labels["train"] = np.zeros(
        LIMIT, np.int64
    )  # labels come from a full pass; test the sample read alone
    with pytest.raises(
        CorruptStoreError,
        match=r"train-00002-of-00005.tfrecord is truncated: the index needs \d+ bytes, it holds \d+; "
        r"re-convert",
    ):
        store.read("train", [150])
    with pytest.raises(CorruptStoreError, match=r"cannot read the train labels"):
        ooc.open_store(tmp_path / "s").labels("train")
