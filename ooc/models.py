"""The recipe's LeNets, built the same way whatever the store feeds them."""

from __future__ import annotations

from ooc.errors import OptionError

MODELS = ("lenet", "lenet-wide")


def build_model(name: str, *, input_shape: tuple[int, ...], num_classes: int, learning_rate=1e-3):
    """``lenet``: conv 6 → pool → conv 16 → pool → dense 120 → 64 → classes (the recipe's);
    ``lenet-wide``: conv 20 → pool → conv 50 → pool → dense 500 → classes (its revision).
    ReLU with He initialisation, softmax output, Adam (``learning_rate`` may be a Keras schedule),
    sparse categorical cross-entropy."""
    import keras
    from keras import layers

    def conv(filters):
        return layers.Conv2D(filters, 5, activation="relu", kernel_initializer="he_normal")

    def dense(units):
        return layers.Dense(units, activation="relu", kernel_initializer="he_normal")

    if name == "lenet":
        body = [conv(6), layers.MaxPooling2D(2), conv(16), layers.MaxPooling2D(2), layers.Flatten(), dense(120), dense(64)]
    elif name == "lenet-wide":
        body = [conv(20), layers.MaxPooling2D(2), conv(50), layers.MaxPooling2D(2), layers.Flatten(), dense(500)]
    else:
        raise OptionError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    model = keras.Sequential([keras.Input(shape=input_shape), *body, layers.Dense(num_classes, activation="softmax")], name=name.replace("-", "_"))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
