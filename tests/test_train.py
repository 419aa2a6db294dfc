"""The training loop trains the same network whatever the store."""

from __future__ import annotations

import numpy as np
import pytest

import ooc
from ooc.errors import OptionError
from ooc.train import split_validation, train


def test_validation_split_is_stratified_and_disjoint():
    labels = np.repeat(np.arange(10), 50)
    train_idx, val_idx = split_validation(labels, val_fraction=0.1, seed=0)
    assert len(val_idx) == 50 and len(train_idx) == 450
    assert not set(train_idx) & set(val_idx)
    assert np.array_equal(np.bincount(labels[val_idx]), [5] * 10)
    with pytest.raises(OptionError, match=r"^--val-fraction must be in \[0, 1\), got 1.5$"):
        split_validation(labels, val_fraction=1.5, seed=0)


def test_same_seed_same_weights_whatever_the_store(store_dirs, mnist):
    memory = ooc.MemoryStore({"train": (mnist["x_train"], mnist["y_train"].astype(np.int64)),
                              "test": (mnist["x_test"], mnist["y_test"].astype(np.int64))})
    quiet = dict(epochs=1, batch_size=50, seed=3, shuffle="global", log=lambda line: None)
    reference = train(memory, **quiet)
    other = train(ooc.open_store(store_dirs["zarr"]), **quiet)
    assert other["history"][0]["loss"] == pytest.approx(reference["history"][0]["loss"], rel=1e-5)
    assert other["test"]["accuracy"] == reference["test"]["accuracy"]
    assert other["store"]["train_samples"] == 270 and other["store"]["val_samples"] == 30
