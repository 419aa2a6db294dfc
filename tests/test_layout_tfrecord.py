"""The tfrecord layout: the conformance suite, read back with tf.data."""

from __future__ import annotations

import numpy as np

from ooc.testing import LayoutTests


class TestTfrecord(LayoutTests):
    format = "tfrecord"

    def standard_read(self, path, n):
        import tensorflow as tf

        spec = {
            "image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64),
            "shape": tf.io.FixedLenFeature([3], tf.int64),
        }
        records = tf.data.TFRecordDataset(sorted(map(str, path.glob("train-*.tfrecord")))).take(n)
        parsed = [tf.io.parse_single_example(r, spec) for r in records]
        x = np.stack(
            [tf.io.decode_raw(p["image"], tf.uint8).numpy().reshape(p["shape"].numpy()) for p in parsed]
        )
        return x, np.array([p["label"].numpy() for p in parsed])
