"""Every store reads without ooc, with its format's standard tool (the README shows each snippet)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from conftest import expected_x


def _standard_read(fmt, path):
    if fmt == "csv":
        labels = pd.read_csv(path / "train_target.csv", header=None).iloc[:, 1].to_numpy()
        x = np.stack([np.loadtxt(path / "train" / f"{i + 1:03d}.csv", delimiter=",", dtype=np.float32) for i in range(10)])
        return x[..., None], labels[:10]
    if fmt == "hdf5":
        import h5py

        with h5py.File(path / "data.h5", "r") as f:
            return f["train/x"][:10], f["train/y"][:10]
    if fmt == "zarr":
        import zarr

        group = zarr.open_group(path, mode="r")
        return group["train/x"][:10], group["train/y"][:10]
    if fmt == "npy":
        return np.load(path / "train_x.npy", mmap_mode="r")[:10], np.load(path / "train_y.npy")[:10]
    if fmt == "parquet":
        df = pd.read_parquet(path / "train.parquet")
        return np.stack([np.frombuffer(b, np.uint8) for b in df.image[:10]]).reshape(-1, 28, 28, 1), df.label[:10]
    if fmt == "tfrecord":
        import tensorflow as tf

        spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64),
                "shape": tf.io.FixedLenFeature([3], tf.int64)}
        records = tf.data.TFRecordDataset(sorted(map(str, path.glob("train-*.tfrecord")))).take(10)
        parsed = [tf.io.parse_single_example(r, spec) for r in records]
        x = np.stack([tf.io.decode_raw(p["image"], tf.uint8).numpy().reshape(p["shape"].numpy()) for p in parsed])
        return x, np.array([p["label"].numpy() for p in parsed])
    raise AssertionError(f"no standard reader written for {fmt}: add one here and to the README")


def test_readable_without_ooc(fmt, store_dirs, mnist):
    x, y = _standard_read(fmt, store_dirs[fmt])
    x = np.asarray(x)
    pixels = x if x.dtype == np.uint8 else None
    if pixels is not None:
        assert np.array_equal(pixels, mnist["x_train"][:10, ..., None])
    else:
        assert np.array_equal(x, expected_x(mnist["x_train"][:10]))
    assert np.array_equal(np.asarray(y), mnist["y_train"][:10])
