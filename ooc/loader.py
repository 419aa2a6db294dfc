"""Where a plan meets a store: the batches of an epoch read in order, a thread ahead of the caller.

``batches`` draws the epoch's plan (``ooc.sampling``) and reads it through ``read_ahead``: one
prefetch thread a few batches ahead, and hints to the store a stretch (or, for the global shuffle,
two gathered windows) ahead, so that the disk works while the caller decodes. What the reading keeps
(decoded chunks, chunks on their way, gathered windows) is a ``ReadState`` this iterator owns and
closes: two iterators over one store (training and validation) share none of it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np

from ooc.core.threads import lower_priority
from ooc.errors import OptionError
from ooc.formats.base import ReadState, Store
from ooc.sampling import SHUFFLE_BUFFER_CHUNKS, epoch_batches, worker_shard


def batches(
    store: Store,
    split: str,
    *,
    batch_size: int = 32,
    shuffle: bool | str = False,
    seed: int | None = None,
    epoch: int = 0,
    indices: np.ndarray | None = None,
    drop_remainder: bool = False,
    prefetch: int = 2,
    start_batch: int = 0,
    shard: tuple[int, int] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(x, y)`` batches of one epoch of ``split`` (or of its ``indices`` subset): ``store.read``
    of each index array of ``batch_plan`` (which says what ``start_batch`` and ``shard`` do).

    With ``prefetch`` > 0 a background thread, started by this call, reads up to that many batches
    ahead, so reading overlaps with whatever the caller does with the previous batch (the storage
    libraries and numpy release the GIL for their heavy parts); ``close()`` the iterator (or drop
    it) to stop the thread early.
    """
    plan = batch_plan(
        store,
        split,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        epoch=epoch,
        indices=indices,
        drop_remainder=drop_remainder,
        start_batch=start_batch,
        shard=shard,
    )
    state = store.new_read_state()  # this iterator's: closed with it
    return read_ahead(
        partial(store.read, state=state),
        split,
        plan,
        prefetch,
        will_need=partial(store.will_need, state=state),
        ahead=hint_ahead(store, batch_size, shuffle=shuffle),
        state=state,
    )


def batch_plan(
    store: Store,
    split: str,
    *,
    batch_size: int,
    shuffle: bool | str = False,
    seed: int | None = None,
    epoch: int = 0,
    indices: np.ndarray | None = None,
    drop_remainder: bool = False,
    start_batch: int = 0,
    shard: tuple[int, int] | None = None,
) -> list[np.ndarray]:
    """The index arrays of one epoch (``epoch_batches`` over the store's chunks), from batch
    ``start_batch`` on: the plan is drawn whole and then cut, so a run resumed mid-epoch gets exactly
    the batches the uninterrupted one would have. ``shard=(worker, workers)`` keeps only that
    worker's part of each batch (``worker_shard``): ``batch_size`` is then the global batch size."""
    plan = epoch_batches(
        store.num_samples(split) if indices is None else indices,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        epoch=epoch,
        drop_remainder=drop_remainder,
        chunk_size=store.shuffle_unit,
    )
    if not 0 <= start_batch <= len(plan):
        raise OptionError(
            f"start_batch must be in [0, {len(plan)}] (the epoch has {len(plan)} batches), got {start_batch}"
        )
    plan = plan[start_batch:]
    return worker_shard(plan, worker=shard[0], workers=shard[1]) if shard is not None else plan


def hint_ahead(
    store: Store, batch_size: int, stretch_chunks: int = SHUFFLE_BUFFER_CHUNKS, shuffle: bool | str = "chunk"
) -> int:
    """How many batches ahead ``read_ahead`` hints a store's reads: a stretch of the chunk shuffle
    (the next stretch's chunks are then on their way while the current one is consumed), two
    gathered windows of the global shuffle (``Store.gather_window``), or ``HINT_BATCHES`` for a store
    without chunks."""
    window = store.gather_window() if shuffle in ("global", True) else 0
    if window:
        return 2 * -(-window // batch_size)
    if store.shuffle_unit is None:
        return HINT_BATCHES
    return max(1, -(-stretch_chunks * store.shuffle_unit // batch_size))


# batches hinted ahead on a store without chunks (npy): random rows, so a few batches of queued reads
HINT_BATCHES = 4


def read_ahead(
    read: Callable[[str, np.ndarray], Any],
    split: str,
    plan: list[np.ndarray],
    prefetch: int = 2,
    *,
    will_need: Callable[[str, np.ndarray], None] | None = None,
    ahead: int = 0,
    state: ReadState | None = None,
) -> Iterator:
    """``read(split, batch)`` of each batch of ``plan``, in order, on a thread up to ``prefetch``
    batches ahead (0: in the caller's thread). The training loop reads through its own ``read``
    (which skips unreadable samples and says which batch it read).

    With ``will_need`` (a store's ``will_need``), reading batch i first hints batch i + ``ahead``
    (and the first read hints batches 1 to ``ahead``): the disk fetches the next stretch of chunks
    while this one is decoded. Hints change no batch. ``state``, the reader's ``ReadState`` that
    ``read`` and ``will_need`` use, is closed when the iterator ends, is closed or is dropped."""
    tasks = [(lambda b=b: read(split, b)) for b in plan]
    if will_need is not None and ahead > 0:
        tasks = [
            (lambda i=i: _hinted(will_need, split, plan, i, ahead) or read(split, plan[i]))
            for i in range(len(plan))
        ]
    if prefetch <= 0:
        return _in_order(tasks, state)
    return _Prefetched(iter(tasks), prefetch, state)


def _in_order(tasks, state: ReadState | None) -> Iterator:
    try:
        for task in tasks:
            yield task()
    finally:
        if state is not None:
            state.close()


def _hinted(will_need, split: str, plan: list[np.ndarray], i: int, ahead: int) -> None:
    for j in range(i + 1 if i == 0 else i + ahead, min(i + ahead + 1, len(plan))):
        will_need(split, plan[j])


_DONE = object()


class _Prefetched:
    """Runs the tasks in order on one thread, at most ``depth`` results ahead of the consumer.

    The thread starts at once, not at the first ``next``: the training loop makes the next epoch's
    batches before it validates, so that the first, slowest batch (a whole stretch of chunks to
    decode) is read while the model validates. ``close()`` (or dropping the iterator) stops it."""

    def __init__(self, tasks, depth: int, state: ReadState | None = None):
        self._state = state  # the reader's, closed after the thread
        self._results: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._closed = False
        # the thread holds the queue and the event, not self: dropping the iterator closes it
        thread = threading.Thread(
            target=_produce, args=(tasks, self._results, self._stop), name="ooc-prefetch", daemon=True
        )
        thread.start()
        self._thread = thread

    def __iter__(self):
        return self

    def __next__(self):
        if self._closed:
            raise StopIteration
        ok, item = self._results.get()
        if not ok:
            self.close()
            raise item
        if item is _DONE:
            self.close()
            raise StopIteration
        return item

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        while self._thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                self._results.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()
        if self._state is not None:
            self._state.close()

    def __del__(self):
        if hasattr(self, "_thread"):  # not if the thread could not even start
            self.close()


def _produce(tasks, results: queue.Queue, stop: threading.Event) -> None:
    lower_priority()
    try:
        for task in tasks:
            if stop.is_set():
                return
            results.put((True, task()))
    except BaseException as error:  # handed to the consumer, who re-raises it
        results.put((False, error))
        return
    results.put((True, _DONE))
