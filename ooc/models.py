"""Models ooc trains: the recipe's LeNets, a small MLP for any sample shape, or the user's own
(a saved ``.keras`` file, a ``module:function`` that builds one, a ``keras.Model`` from Python).

Whatever the model, its loss and metric follow the store's target kind (``Task``): a model that
comes compiled keeps its own; one that does not is compiled with Adam and the task's."""

from __future__ import annotations

import importlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ooc.errors import OptionError
from ooc.schema import Schema

MODELS = ("lenet", "lenet-wide", "mlp")
# Keras clips probabilities to [eps, 1 - eps] in its cross-entropies; so do we, to report the same loss.
_EPSILON = 1e-7


@dataclass(frozen=True)
class Task:
    """What training on a target kind means: the output layer, the loss, the metric logged."""

    kind: str
    outputs: int
    target_shape: tuple[int, ...]

    @classmethod
    def of(cls, schema: Schema) -> Task:
        kind = "multilabel" if schema.target_kind == "binary" else schema.target_kind
        outputs = schema.num_classes if kind == "classes" else int(np.prod(schema.target_shape))
        return cls(kind, int(outputs), schema.target_shape)

    @property
    def loss(self) -> str:
        return {
            "classes": "sparse_categorical_crossentropy",
            "onehot": "categorical_crossentropy",
            "multilabel": "binary_crossentropy",
            "regression": "mean_squared_error",
        }[self.kind]

    @property
    def activation(self) -> str | None:
        return {"classes": "softmax", "onehot": "softmax", "multilabel": "sigmoid", "regression": None}[
            self.kind
        ]

    @property
    def metric(self) -> str:
        """The metric's name in Keras' logs and in ooc's history: accuracy, or mae for regression."""
        return "mae" if self.kind == "regression" else "accuracy"

    def output_shape(self) -> tuple[int, ...]:
        return () if self.kind == "classes" else self.target_shape

    def loss_and_metric(self, predictions: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Sums over the batch of the per-sample loss and metric, as Keras computes them."""
        p = np.asarray(predictions, np.float64).reshape(len(y), -1)
        if self.kind == "classes":
            picked = np.clip(p[np.arange(len(y)), y], _EPSILON, 1 - _EPSILON)
            return float(-np.log(picked).sum()), float((p.argmax(axis=1) == y).sum())
        t = np.asarray(y, np.float64).reshape(len(y), -1)
        if self.kind == "onehot":
            loss = -(t * np.log(np.clip(p / p.sum(axis=1, keepdims=True), _EPSILON, 1 - _EPSILON))).sum(
                axis=1
            )
            return float(loss.sum()), float((p.argmax(axis=1) == t.argmax(axis=1)).sum())
        if self.kind == "multilabel":
            q = np.clip(p, _EPSILON, 1 - _EPSILON)
            loss = -(t * np.log(q) + (1 - t) * np.log(1 - q)).mean(axis=1)
            return float(loss.sum()), float(((p > 0.5) == (t > 0.5)).mean(axis=1).sum())
        return float(((p - t) ** 2).mean(axis=1).sum()), float(np.abs(p - t).mean(axis=1).sum())


def build_model(name: str, *, input_shape: tuple[int, ...], task: Task, learning_rate=1e-3):
    """``lenet``: the recipe's LeNet-5 (conv 6 → pool → conv 16 → pool → dense 120 → 64 →
    outputs, "same" padding, He-uniform convolutions, He-normal dense layers; 105,166 parameters on
    MNIST); ``lenet-wide``: the recipe's revision (conv 20 → pool → conv 50 → pool → dense 500);
    ``mlp``: flatten → dense 256 → 128 → outputs, for samples of any shape. Adam (``learning_rate``
    may be a Keras schedule), the task's loss."""
    import keras
    from keras import layers

    def conv(filters):
        return layers.Conv2D(filters, 5, padding="same", activation="relu", kernel_initializer="he_uniform")

    def dense(units):
        return layers.Dense(units, activation="relu", kernel_initializer="he_normal")

    if name in ("lenet", "lenet-wide") and len(input_shape) != 3:
        raise OptionError(
            f"--model {name} takes images (height, width, channels); the store holds samples of shape "
            f"{tuple(input_shape)}: choose --model mlp, or your own model"
        )
    if name == "lenet":
        body = [
            conv(6),
            layers.MaxPooling2D(2),
            conv(16),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            dense(120),
            dense(64),
        ]
    elif name == "lenet-wide":
        body = [
            conv(20),
            layers.MaxPooling2D(2),
            conv(50),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            dense(500),
        ]
    elif name == "mlp":
        body = [layers.Flatten(), dense(256), dense(128)]
    else:
        raise OptionError(
            f"unknown --model {name!r}: choose one of {', '.join(MODELS)}, a .keras file or module:function"
        )
    head = [layers.Dense(task.outputs, activation=task.activation, kernel_initializer="he_normal")]
    if task.kind == "regression" and len(task.target_shape) != 1:
        head.append(layers.Reshape(task.target_shape or ()))
    model = keras.Sequential([keras.Input(shape=input_shape), *body, *head], name=name.replace("-", "_"))
    return compiled(model, task, learning_rate)


def compiled(model, task: Task, learning_rate):
    import keras

    # named explicitly: Keras' "accuracy" on 0/1 vectors would be the categorical one, wrong for multi-label
    metric = {
        "classes": keras.metrics.SparseCategoricalAccuracy,
        "onehot": keras.metrics.CategoricalAccuracy,
        "multilabel": keras.metrics.BinaryAccuracy,
        "regression": keras.metrics.MeanAbsoluteError,
    }[task.kind]
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss=task.loss, metrics=[metric(name=task.metric)]
    )
    return model


def resolve_model(spec: Any, *, input_shape: tuple[int, ...], task: Task, learning_rate):
    """The model ``spec`` names, compiled and checked against the store's samples and targets."""
    import keras

    if isinstance(spec, str) and spec in MODELS:
        return build_model(spec, input_shape=input_shape, task=task, learning_rate=learning_rate)
    if isinstance(spec, (str, Path)) and str(spec).endswith(".keras"):
        if not Path(spec).is_file():
            raise OptionError(f"--model {spec}: no such file; pass a model saved with model.save('….keras')")
        try:
            model = keras.saving.load_model(spec)
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
            raise OptionError(
                f"--model {spec}: cannot load it ({type(e).__name__}: {' '.join(str(e).split())[:200]}); pass "
                "a model saved with model.save('….keras')"
            ) from None
    elif isinstance(spec, str) and ":" in spec:
        module, _, function = spec.partition(":")
        try:
            build = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as e:
            raise OptionError(
                f"--model {spec}: cannot import it ({e}); pass module:function of an importable module"
            ) from None
        model = build(input_shape, task)
    elif isinstance(spec, keras.Model):
        model = spec
    elif callable(spec):
        model = spec(input_shape, task)
    else:
        raise OptionError(
            f"unknown --model {spec!r}: choose one of {', '.join(MODELS)}, a .keras file or module:function"
        )
    if not isinstance(model, keras.Model):
        raise OptionError(f"--model {spec}: built a {type(model).__name__}, not a keras.Model")
    _check_fits(model, input_shape, task, spec)
    return (
        model
        if getattr(model, "optimizer", None) is not None and model.compiled
        else compiled(model, task, learning_rate)
    )


def _check_fits(model, input_shape, task: Task, spec) -> None:
    want_in = tuple(input_shape)
    got_in = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    want_out = (task.outputs,) if task.kind == "classes" else task.target_shape
    got_out = tuple(model.output_shape[1:]) if not isinstance(model.output_shape, list) else None
    if (
        got_in is None
        or any(a is not None and a != b for a, b in zip(got_in, want_in))
        or len(got_in) != len(want_in)
    ):
        raise OptionError(
            f"--model {model_name(spec)}: takes input of shape {got_in}, the store's samples are {want_in}; "
            f"give it keras.Input({want_in}), or choose --model mlp"
        )
    if got_out != want_out:
        raise OptionError(
            f"--model {model_name(spec)}: gives output of shape {got_out}, the store's {task.kind} targets "
            f"need {want_out}; end it with a layer of that shape, or choose --model mlp"
        )


def model_name(spec: Any) -> str:
    """What reports and checkpoints call the model."""
    return (
        spec
        if isinstance(spec, str)
        else str(spec)
        if isinstance(spec, Path)
        else getattr(spec, "name", None) or getattr(spec, "__name__", "model")
    )
