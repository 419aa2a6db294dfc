"""``model.fit`` that resumes mid-epoch: Keras' ``BackupAndRestore`` restores the epoch only, so an
epoch killed at batch 180 of 200 is trained again from its first batch. ``ResumableFit`` gives
``fit`` what ooc's own loop has: a checkpoint every ``every`` batches and at every epoch end (the
model, its optimizer state and its random generators, by ``ooc.checkpoint``), and a fit started
again with the same callback continues from the next batch, with the batches and the weights of an
uninterrupted run.

It needs the dataset fit reads (an ``ooc.as_pydataset``): that is what knows each epoch's batches.
Resuming mid-epoch, the callback trains the rest of the interrupted epoch itself when fit starts
(``train_on_batch``, the step fit runs) and lets fit go on from the next epoch.
"""

from __future__ import annotations

import os
from typing import Any

from ooc.checkpoint import Checkpointer, Progress, reseed_backend_for_epoch, restore_rng, rng_state
from ooc.errors import CheckpointError, OptionError


def resumable_fit(
    directory: str | os.PathLike, dataset: Any, *, every: int = 200, config: dict[str, Any] | None = None
):
    """The callback (a ``keras.callbacks.Callback``): pass it to ``fit`` with ``dataset``, and
    ``shuffle=False`` (the dataset orders the samples itself)."""
    import keras

    if every < 0:
        raise OptionError(f"every must be a number of batches (0: at epoch ends only), got {every}")
    if not hasattr(dataset, "set_epoch"):
        raise OptionError("ResumableFit needs the dataset fit reads to be an ooc.as_pydataset(...)")

    class ResumableFit(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.checkpoints = Checkpointer(directory, config or {}, every=every)
            self.progress = Progress()

        def on_train_begin(self, logs=None):
            if not self.checkpoints.exists():
                return
            saved, self.progress = self.checkpoints.load()
            self.model.set_weights(saved.get_weights())
            optimizer = self.model.optimizer
            if not optimizer.built:
                optimizer.build(self.model.trainable_variables)
            if len(optimizer.variables) != len(saved.optimizer.variables):
                raise CheckpointError(
                    f"{directory} holds the checkpoint of another model or optimizer; "
                    "pass another directory, or remove it to start afresh"
                )
            for mine, theirs in zip(optimizer.variables, saved.optimizer.variables):
                mine.assign(theirs)
            restore_rng(self.model, rng_state(saved))
            if self.progress.batch:  # mid-epoch: train the rest of it here, as fit would have
                dataset.set_epoch(self.progress.epoch)
                for index in range(self.progress.batch, len(dataset)):
                    self.model.train_on_batch(*dataset[index])
                self.progress = Progress(epoch=self.progress.epoch + 1, history=self.progress.history)
                self.checkpoints.save(self.model, self.progress)
            self.model._initial_epoch = self.progress.epoch  # what BackupAndRestore sets: fit starts there

        def on_epoch_begin(self, epoch, logs=None):
            dataset.set_epoch(epoch)  # before fit reads the epoch: epoch k is plan k
            reseed_backend_for_epoch(dataset.seed, epoch)
            self.progress = Progress(epoch=epoch, history=self.progress.history)

        def on_train_batch_end(self, batch, logs=None):
            self.progress.batch = batch + 1
            if self.checkpoints.due(self.progress.batch, len(dataset)):
                self.checkpoints.save(self.model, self.progress)

        def on_epoch_end(self, epoch, logs=None):
            record = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
            self.progress = Progress(epoch=epoch + 1, history=[*self.progress.history, record])
            self.checkpoints.save(self.model, self.progress)

    return ResumableFit()
