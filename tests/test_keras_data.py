"""PyDataset and tf.data views give the same batches as ooc.batches, epoch after epoch."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ooc


def _plan_x(store, epoch, **kw):
    return [x for x, _ in ooc.batches(store, "train", epoch=epoch, **kw)]


@pytest.mark.any_backend
def test_pydataset_reshuffles_samples_each_epoch(store_dirs):
    store = ooc.open_store(store_dirs["zarr"])
    kw = dict(batch_size=40, shuffle="chunk", seed=2)
    ds = ooc.as_pydataset(store, "train", **kw)
    assert len(ds) == 8
    for epoch in range(2):
        expected = _plan_x(store, epoch, **kw)
        got = [ds[i][0] for i in range(len(ds))]
        assert all(np.array_equal(a, b) for a, b in zip(got, expected))
        ds.on_epoch_end()
    assert not np.array_equal(_plan_x(store, 0, **kw)[0], _plan_x(store, 1, **kw)[0])


def test_tf_dataset_is_one_epoch_per_iteration(store_dirs):
    store = ooc.open_store(store_dirs["hdf5"])
    kw = dict(batch_size=64, shuffle="global", seed=4)
    ds = ooc.as_tf_dataset(store, "train", **kw)
    for epoch in range(2):
        got = [(x.numpy(), y.numpy()) for x, y in ds]
        expected = list(ooc.batches(store, "train", epoch=epoch, **kw))
        assert len(got) == len(expected) == 5
        assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(got, expected))


@pytest.mark.any_backend
def test_fit_loop_trains(store_dirs):
    from ooc.train import train

    report = train(
        ooc.open_store(store_dirs["zarr"]), epochs=2, batch_size=16, loop="fit", log=lambda line: None
    )
    assert report["config"]["loop"] == "fit"
    assert [e["epoch"] for e in report["history"]] == [1, 2]
    assert all(e["seconds"] > 0 and 0 <= e["val_accuracy"] <= 1 for e in report["history"])
    assert report["test"]["accuracy"] > 0.3  # 270 samples, 2 epochs; chance is 0.1


@pytest.mark.any_backend
def test_set_epoch_serves_that_epochs_plan(store_dirs):
    store = ooc.open_store(store_dirs["zarr"])
    kw = dict(batch_size=40, shuffle="chunk", seed=2)
    ds = ooc.as_pydataset(store, "train", **kw)
    ds.set_epoch(3)
    assert all(np.array_equal(ds[i][0], x) for i, x in enumerate(_plan_x(store, 3, **kw)))


@pytest.mark.any_backend
def test_fit_loop_trains_the_same_batches_as_train_on_batch(store_dirs, tmp_path):
    """fit(shuffle=False) and set_epoch: the same batches in the same order, so the same weights bit for bit."""
    import keras

    from ooc.train import train

    store = ooc.open_store(store_dirs["hdf5"])
    run = dict(epochs=2, batch_size=32, seed=1, log=lambda line: None)
    fit = train(store, **run, loop="fit", model_path=tmp_path / "fit.keras")
    ours = train(store, **run, model_path=tmp_path / "ours.keras")
    a, b = (keras.saving.load_model(tmp_path / name).get_weights() for name in ("fit.keras", "ours.keras"))
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert fit["test"] == ours["test"]


def test_fit_on_the_tf_dataset_knows_its_length(store_dirs):
    import warnings

    import keras

    dataset = ooc.as_tf_dataset(
        ooc.open_store(store_dirs["npy"]), "train", batch_size=64, shuffle="chunk", seed=0
    )
    assert int(dataset.cardinality()) == 5  # 300 samples: 4 batches of 64 and one of 44
    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(dataset, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert not [w for w in caught if "ran out of data" in str(w.message)]


@pytest.mark.any_backend
def test_fit_resumes_mid_epoch_with_the_batches_and_weights_of_an_uninterrupted_fit(store_dirs, tmp_path):
    import keras

    store = ooc.open_store(store_dirs["zarr"])

    seen = []  # batches fit itself trained, in the last run

    def run(directory, stop_at=None):
        seen.clear()
        keras.utils.set_random_seed(3)
        model = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Flatten(),
                keras.layers.Dropout(0.2),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        data = ooc.as_pydataset(store, "train", batch_size=32, shuffle="chunk", seed=1)
        callbacks = [
            ooc.resumable_fit(directory, data, every=2),
            keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(batch)),
        ]
        if stop_at is not None:

            class Kill(keras.callbacks.Callback):
                def on_train_batch_end(self, batch, logs=None):
                    if (self.epoch, batch + 1) == stop_at:
                        raise KeyboardInterrupt

                def on_epoch_begin(self, epoch, logs=None):
                    self.epoch = epoch

            callbacks.append(Kill())
        model.fit(data, epochs=3, shuffle=False, verbose=0, callbacks=callbacks)
        return model

    reference = run(tmp_path / "reference")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", stop_at=(1, 7))  # epoch 2, after batch 7: its checkpoint is at batch 6
    state = json.loads((tmp_path / "killed" / "state.json").read_text())
    assert (state["epoch"], state["batch"]) == (1, 6)
    resumed = run(tmp_path / "killed")  # the same script run again
    assert len(seen) == 10  # fit trained epoch 3 only: the callback trained the rest of epoch 2 before it
    assert all(np.array_equal(a, b) for a, b in zip(reference.get_weights(), resumed.get_weights()))
    assert all(
        np.array_equal(a, b) for a, b in zip(reference.optimizer.variables, resumed.optimizer.variables)
    )
