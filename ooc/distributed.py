"""Training on several workers or local devices: which ``tf.distribute`` strategy, and its training step.

``strategy_from_env()`` picks ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` describes a cluster
of more than one worker, ``MirroredStrategy`` when this machine has more than one GPU, else none
(the plain ``train_on_batch`` step). The shared loop in ``ooc.train`` stays one loop: under a
strategy it calls ``DistributedStep`` where it would call ``model.train_on_batch``.

Why a step of our own: with Keras 3 on TensorFlow 2.21, ``model.fit`` and ``model.train_on_batch``
both fail under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585: "Attempt to convert a value
(PerReplica…)", "Invalid reduction dimension 0"). A ``tf.function`` that runs ``strategy.run`` over a
``tf.GradientTape`` step with the Keras optimizer's ``apply_gradients`` (which sums the replicas'
gradients), the model and optimizer built under ``strategy.scope()``, works.

Each worker reads its own part of every global batch (``ooc.sampling.worker_shard``) and splits it
among its local replicas. Every replica's part is padded to one fixed shape with zero-weight
samples, so the step is traced once (the same collectives on every worker, whatever the last
batch's size) and a worker with fewer, or no, samples in a batch still takes part in the step. The
loss is the sum of the replicas' weighted per-sample losses over the global number of samples (an
all-reduce), so the gradient is the global batch's mean gradient, as ``tf.nn.compute_average_loss``
would give with that global batch size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import numpy as np

from ooc.errors import OptionError
from ooc.sampling import split_sizes


def tf_config(environ: Mapping[str, str] | None = None) -> dict:
    """``TF_CONFIG`` parsed ({} when unset), or an ``OptionError`` naming what is wrong with it."""
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not text:
        return {}
    try:
        config = json.loads(text)
    except ValueError as e:
        raise OptionError(f"TF_CONFIG is not JSON ({e}); see README, 'Several workers'") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster", {}), dict):
        raise OptionError(
            "TF_CONFIG must be a JSON object like "
            '{"cluster": {"worker": ["host1:port", …]}, "task": {"type": "worker", "index": 0}}'
        )
    return config


def cluster_size(config: dict) -> int:
    """Workers the cluster of a ``TF_CONFIG`` holds (a ``chief`` counts as one)."""
    cluster = config.get("cluster", {})
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def strategy_from_env(environ: Mapping[str, str] | None = None):
    """``MultiWorkerMirroredStrategy`` if ``TF_CONFIG`` has a cluster of more than one worker,
    ``MirroredStrategy`` if there is more than one local GPU, else ``None`` (always, on another
    Keras backend than TensorFlow: tf.distribute cannot drive a JAX or PyTorch model).

    Call it before TensorFlow runs anything: the multi-worker strategy configures collective ops,
    which TensorFlow only allows at start-up."""
    import keras

    config = tf_config(environ)
    if keras.backend.backend() != "tensorflow":
        if cluster_size(config) > 1:
            raise OptionError(
                f"TF_CONFIG describes a cluster, and training on several workers takes Keras on TensorFlow, "
                f"not {keras.backend.backend()}: set KERAS_BACKEND=tensorflow or unset TF_CONFIG"
            )
        return None
    import tensorflow as tf

    if cluster_size(config) > 1:
        task = config.get("task", {})
        if not isinstance(task, dict) or "type" not in task or "index" not in task:
            raise OptionError(
                'TF_CONFIG describes a cluster but not this process\'s place in it: add "task": '
                '{"type": "worker", "index": K}'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return None


def strategy_name(strategy) -> str:
    """The public name: ``MultiWorkerMirroredStrategy`` is ``CollectiveAllReduceStrategy`` inside."""
    name = type(strategy).__name__
    return "MultiWorkerMirroredStrategy" if name == "CollectiveAllReduceStrategy" else name


def worker_rank(strategy) -> tuple[int, int]:
    """(this worker's rank, number of workers); rank 0 is the chief (the ``chief`` task if the
    cluster has one, else worker 0), the order ``MultiWorkerMirroredStrategy`` numbers replicas in."""
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    workers = len(spec.get("chief", [])) + len(spec.get("worker", []))
    if workers <= 1:
        return 0, 1
    rank = 0 if resolver.task_type == "chief" else len(spec.get("chief", [])) + int(resolver.task_id)
    return rank, workers


class DistributedStep:
    """``step(x, y)`` trains ``net`` on this worker's part of a global batch under ``strategy`` and
    returns the global batch's (sum of per-sample losses, correct predictions, samples), all-reduced
    over every replica, so every worker logs the same numbers.

    ``local_batch``: the most samples one worker's part of a global batch can hold. Build ``net``
    (and its optimizer) under ``strategy.scope()`` before making the step."""

    def __init__(self, net, strategy, *, local_batch: int):
        import keras
        import tensorflow as tf

        self.strategy = strategy
        _, workers = worker_rank(strategy)
        self.local_replicas = max(strategy.num_replicas_in_sync // workers, 1)
        self.pad = max(-(-local_batch // self.local_replicas), 1)
        if not net.optimizer.built:  # a resumed model's optimizer is built (under the scope) by loading it
            with strategy.scope():
                net.optimizer.build(
                    net.trainable_variables
                )  # its slots are mirrored variables, made here, not in the step
        sum_ = tf.distribute.ReduceOp.SUM

        def replica_step(x, y, weight):
            count = tf.distribute.get_replica_context().all_reduce(sum_, tf.reduce_sum(weight))
            with tf.GradientTape() as tape:
                probs = net(x, training=True)
                per_sample = keras.losses.sparse_categorical_crossentropy(y, probs) * weight
                loss = tf.math.divide_no_nan(
                    tf.reduce_sum(per_sample), count
                )  # = compute_average_loss(…, global_batch_size=count)
            grads = tape.gradient(loss, net.trainable_variables)
            net.optimizer.apply_gradients(zip(grads, net.trainable_variables))
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(probs, axis=1), y), tf.float32) * weight)
            return tf.stack([tf.reduce_sum(per_sample), correct, tf.reduce_sum(weight)])

        @tf.function
        def step(values):
            return strategy.reduce(sum_, strategy.run(replica_step, args=values), axis=None)

        self._step = step

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
        import tensorflow as tf

        parts, start = [], 0
        for size in split_sizes(len(y), self.local_replicas):
            xs, ys = np.zeros((self.pad, *x.shape[1:]), np.float32), np.zeros(self.pad, np.int64)
            xs[:size], ys[:size] = x[start : start + size], y[start : start + size]
            parts.append((xs, ys, (np.arange(self.pad) < size).astype(np.float32)))
            start += size
        local = self.local_replicas

        def value(context):
            xs, ys, weight = parts[context.replica_id_in_sync_group % local]
            return tf.constant(xs), tf.constant(ys), tf.constant(weight)

        loss_sum, correct, seen = self._step(
            self.strategy.experimental_distribute_values_from_function(value)
        ).numpy()
        return float(loss_sum), float(correct), round(float(seen))


def local_predict(net):
    """``predict_on_batch`` for evaluating on one worker alone: ``model.predict_on_batch`` runs
    ``strategy.run`` and gathers across workers, which every worker would have to join."""
    import tensorflow as tf

    forward = tf.function(
        lambda x: net(x, training=False),
        input_signature=[tf.TensorSpec((None, *net.input_shape[1:]), tf.float32)],
    )
    return lambda x: forward(tf.constant(x)).numpy()
