"""The training loop trains the same network whatever the store."""

from __future__ import annotations

import numpy as np
import pytest

import ooc
from ooc.errors import OptionError
from ooc.sampling import epoch_batches
from ooc.train import split_validation, train


def test_validation_split_is_stratified_and_disjoint():
    labels = np.repeat(np.arange(10), 50)
    train_idx, val_idx = split_validation(labels, val_fraction=0.1, seed=0)
    assert len(val_idx) == 50 and len(train_idx) == 450
    assert not set(train_idx) & set(val_idx)
    assert np.array_equal(np.bincount(labels[val_idx]), [5] * 10)
    with pytest.raises(OptionError, match=r"^--val-fraction must be in \[0, 1\), got 1.5$"):
        split_validation(labels, val_fraction=1.5, seed=0)


@pytest.mark.any_backend
def test_same_seed_same_weights_whatever_the_store(store_dirs, mnist):
    memory = ooc.MemoryStore(
        {
            "train": (mnist["x_train"], mnist["y_train"].astype(np.int64)),
            "test": (mnist["x_test"], mnist["y_test"].astype(np.int64)),
        }
    )
    quiet = dict(epochs=1, batch_size=50, seed=3, shuffle="global", log=lambda line: None)
    reference = train(memory, **quiet)
    other = train(ooc.open_store(store_dirs["zarr"]), **quiet)
    assert other["history"][0]["loss"] == pytest.approx(reference["history"][0]["loss"], rel=1e-5)
    assert other["test"]["accuracy"] == reference["test"]["accuracy"]
    assert other["store"]["train_samples"] == 270 and other["store"]["val_samples"] == 30


@pytest.mark.parametrize("cold", [False, True])
def test_next_epoch_is_read_while_validating(monkeypatch, cold):
    """The next epoch's batches start reading before validation, except when ``before_epoch`` (the
    bench's cold-cache eviction) must run first; the batches trained are the same either way."""
    import ooc.train as loop

    calls, trained = [], []
    real_plan, real_evaluate = loop.batch_plan, loop.evaluate

    def batch_plan(store, split, **kw):
        if "epoch" in kw:
            calls.append(f"epoch {kw['epoch']}")
        return real_plan(store, split, **kw)

    def evaluate(net, store, split, **kw):
        calls.append(f"evaluate {split}")
        return real_evaluate(net, store, split, **kw)

    monkeypatch.setattr(loop, "batch_plan", batch_plan)
    monkeypatch.setattr(loop, "evaluate", evaluate)
    x = np.random.default_rng(0).integers(0, 255, (120, 28, 28), dtype=np.uint8)
    store = ooc.MemoryStore({"train": (x, np.arange(120) % 10), "test": (x[:20], np.arange(20) % 10)})
    before = (lambda epoch: calls.append(f"before {epoch}")) if cold else None
    train(
        store,
        epochs=3,
        batch_size=32,
        seed=1,
        before_epoch=before,
        log=lambda line: None,
        after_batch=lambda epoch, done, indices: trained.append(indices.copy()),
    )
    if cold:
        assert calls == [
            "before 0",
            "epoch 0",
            "evaluate train",
            "before 1",
            "epoch 1",
            "evaluate train",
            "before 2",
            "epoch 2",
            "evaluate train",
            "evaluate test",
        ]
    else:
        assert calls == [
            "epoch 0",
            "epoch 1",
            "evaluate train",
            "epoch 2",
            "evaluate train",
            "evaluate train",
            "evaluate test",
        ]
    train_idx, _ = split_validation(store.labels("train"), val_fraction=0.1, seed=1)
    expected = [
        b for e in range(3) for b in epoch_batches(train_idx, batch_size=32, shuffle="chunk", seed=1, epoch=e)
    ]
    assert len(trained) == len(expected) and all(np.array_equal(a, b) for a, b in zip(trained, expected))
