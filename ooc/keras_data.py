"""Keras and tf.data views over ``ooc.loader``: the same batches, for ``model.fit``.

``fit(shuffle=True)`` only reorders whole batches of a PyDataset, so the sample order is redrawn
here, in ``on_epoch_end``, from the same (seed, epoch) plan the ``train_on_batch`` loop uses.
``fit`` also calls ``on_epoch_end`` once before its first epoch (Keras 3 resets its data iterator),
so on its own the dataset serves plan k + 1 in fit's epoch k; ``ooc.train``'s fit loop passes
``shuffle=False`` and calls ``set_epoch(k)`` from a callback, so epoch k is plan k, batch for batch.
"""

from __future__ import annotations

import itertools

import numpy as np

from ooc.formats.base import Store
from ooc.loader import batches
from ooc.sampling import epoch_batches


def as_pydataset(
    store: Store,
    split: str,
    *,
    batch_size: int = 32,
    shuffle: bool | str = False,
    seed: int | None = None,
    indices: np.ndarray | None = None,
    drop_remainder: bool = False,
    workers: int = 1,
    max_queue_size: int = 4,
):
    """A ``keras.utils.PyDataset`` of ``(x, y)`` batches; ``workers`` > 1 reads batches in threads.

    On JAX, ``fit`` reads one batch to build an unbuilt model's loss and metrics, and with
    ``workers`` > 1 Keras' reader threads serve the batches read ahead then again first: build them
    before the first ``fit`` (``model.evaluate`` on one sample), as ``ooc train --loop fit`` does."""
    import keras

    class StorePyDataset(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max_queue_size)
            self.epoch = 0
            self.seed = seed
            self.plan = self._make_plan()

        def _make_plan(self):
            return epoch_batches(
                store.num_samples(split) if indices is None else indices,
                batch_size=batch_size,
                shuffle=shuffle,
                seed=seed,
                epoch=self.epoch,
                drop_remainder=drop_remainder,
                chunk_size=store.chunk_size,
            )

        def __len__(self):
            return len(self.plan)

        def __getitem__(self, index):
            return store.read(split, self.plan[index])

        def on_epoch_end(self):
            self.epoch += 1
            self.plan = self._make_plan()

        def set_epoch(self, epoch):
            """Serve ``epoch``'s plan from now on: call it while no batch is being read (a callback's
            ``on_epoch_begin`` runs before fit starts its reader threads)."""
            if epoch != self.epoch:
                self.epoch = epoch
                self.plan = self._make_plan()

    return StorePyDataset()


def as_tf_dataset(
    store: Store,
    split: str,
    *,
    batch_size: int = 32,
    shuffle: bool | str = False,
    seed: int | None = None,
    indices: np.ndarray | None = None,
    drop_remainder: bool = False,
):
    """A ``tf.data.Dataset`` of ``(x, y)`` batches; each iteration over it is the next epoch."""
    import tensorflow as tf

    epochs = itertools.count()

    def generate():
        yield from batches(
            store,
            split,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            epoch=next(epochs),
            indices=indices,
            drop_remainder=drop_remainder,
        )

    schema = store.schema
    y_dtype = tf.int64 if schema.target_kind == "classes" else tf.as_dtype(schema.target_dtype)
    signature = (
        tf.TensorSpec((None, *schema.sample_shape), tf.as_dtype(schema.read_dtype)),
        tf.TensorSpec((None, *schema.target_shape), y_dtype),
    )
    # the number of batches, told to tf.data: without it fit warns "Your input ran out of data" at the
    # end of the first epoch although every step ran
    n = store.num_samples(split) if indices is None else len(indices)
    steps = n // batch_size if drop_remainder else -(-n // batch_size)
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return dataset.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(2)
