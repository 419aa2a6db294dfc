"""Models for any data: the loss and metric follow the target kind, the recipe's LeNet as the recipe
builds it, and the user's own model (a .keras file, module:function, a keras.Model)."""

from __future__ import annotations

import sys

import keras
import numpy as np
import pytest

import ooc
from ooc.errors import OptionError
from ooc.models import Task, build_model
from ooc.train import evaluate, train

pytestmark = pytest.mark.any_backend  # run under KERAS_BACKEND=jax too (README)

QUIET = {"log": lambda line: None, "strategy": None}


def memory_store(kind, *, n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6, 4)).astype(np.float32)
    w = rng.standard_normal((24, 3))
    signal = x.reshape(n, -1) @ w
    y = {
        "classes": signal.argmax(axis=1).astype(np.int64),
        "onehot": np.eye(3, dtype=np.uint8)[signal.argmax(axis=1)],
        "multilabel": (signal > 0).astype(np.uint8),
        "regression": signal.astype(np.float32),
    }[kind]
    return ooc.MemoryStore({"train": (x[:64], y[:64]), "test": (x[64:], y[64:])})


def test_the_recipes_lenet():
    model = build_model("lenet", input_shape=(28, 28, 1), task=Task("classes", 10, ()))
    assert model.count_params() == 105_166
    assert model.layers[0].output.shape == (None, 28, 28, 6) and model.layers[4].output.shape == (None, 784)
    with pytest.raises(
        OptionError,
        match=r"^--model lenet takes images \(height, width, channels\); the store holds samples of shape "
        r"\(6, 4\): choose --model mlp, or your own model$",
    ):
        train(memory_store("classes"), model="lenet", epochs=1, **QUIET)


@pytest.mark.parametrize(
    "kind,loss,metric",
    [
        ("classes", "sparse_categorical_crossentropy", "accuracy"),
        ("onehot", "categorical_crossentropy", "accuracy"),
        ("multilabel", "binary_crossentropy", "accuracy"),
        ("regression", "mean_squared_error", "mae"),
    ],
)
def test_the_loss_follows_the_target_kind(kind, loss, metric):
    store = memory_store(kind)
    assert store.schema.target_kind == kind
    models = []
    report = train(
        store, model="mlp", epochs=2, batch_size=16, val_fraction=0.25, after_training=models.append, **QUIET
    )
    net = models[0]
    assert net.loss == loss and set(report["history"][0]) >= {"loss", metric, "val_loss", f"val_{metric}"}
    assert report["model"] == {
        "name": "mlp",
        "spec": "mlp",
        "parameters": net.count_params(),
        "task": kind,
        "backend": keras.backend.backend(),
    }
    x, y = store.read("test", np.arange(32))
    keras_loss, keras_metric = net.evaluate(x, y, batch_size=32, verbose=0)
    ours = evaluate(net, store, "test")
    assert ours["loss"] == pytest.approx(keras_loss, rel=1e-4) and ours[metric] == pytest.approx(
        keras_metric, rel=1e-4
    )


def build(input_shape, task):
    """A user's model function, as --model test_models:build names it."""
    import keras

    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(task.outputs, activation=task.activation),
        ],
        name="mine",
    )


def test_the_users_own_model(tmp_path):
    import keras

    store = memory_store("classes")
    sys.modules.setdefault("test_models", sys.modules[__name__])
    report = train(store, model="test_models:build", epochs=1, **QUIET)
    assert report["model"]["name"] == "mine" and report["model"]["spec"] == "test_models:build"
    saved = build((6, 4), Task("classes", 3, ()))
    saved.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    saved.save(tmp_path / "mine.keras")
    models = []
    train(store, model=str(tmp_path / "mine.keras"), epochs=1, after_training=models.append, **QUIET)
    assert isinstance(models[0].optimizer, keras.optimizers.SGD)  # compiled: its own optimizer is kept
    wrong = build((6, 4), Task("classes", 7, ()))
    with pytest.raises(
        OptionError,
        match=r"^--model mine: gives output of shape \(7,\), the store's classes targets need \(3,\); end it with "
        r"a layer of that shape, or choose --model mlp$",
    ):
        train(store, model=wrong, epochs=1, **QUIET)
    wrong = build((5, 4), Task("classes", 3, ()))
    with pytest.raises(
        OptionError,
        match=r"^--model mine: takes input of shape \(5, 4\), the store's samples are \(6, 4\); give it "
        r"keras.Input\(\(6, 4\)\), or choose --model mlp$",
    ):
        train(store, model=wrong, epochs=1, **QUIET)
    with pytest.raises(
        OptionError,
        match=r"^--model nowhere.keras: no such file; pass a model saved with model.save\('….keras'\)$",
    ):
        train(store, model="nowhere.keras", epochs=1, **QUIET)
