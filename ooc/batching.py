"""The only place that decides which samples form a batch, and in what order.

An epoch is a list of index arrays that together hold every selected sample exactly once (the
last one shorter unless ``drop_remainder``): consecutive slices of one order of the samples.
The order, drawn afresh each epoch from ``default_rng([seed, epoch])``, so the same (seed, epoch)
always gives the same batches whatever the store, is one of

- ``"none"``: the samples in index order;
- ``"global"``: a uniform permutation (every batch is a random draw from the whole split; on a
  chunked store, each batch then decodes most of the store's chunks);
- ``"chunk"``: the chunks in a random order, cut into stretches of ``SHUFFLE_BUFFER_CHUNKS``
  chunks, and the samples of each stretch in a random order. Each chunk is decoded once per epoch.
  Without chunks (CSV, memory) it is the global shuffle.

``shuffle=True`` means ``"global"`` and ``False`` means ``"none"``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ooc.core.threads import PREFETCH_NICENESS, lower_priority  # noqa: F401  (PREFETCH_NICENESS: kept here)
from ooc.errors import OptionError
from ooc.formats.base import SHUFFLE_BUFFER_CHUNKS, Store

SHUFFLE_MODES = ("none", "global", "chunk")


def epoch_batches(
    indices: int | np.ndarray,
    *,
    batch_size: int,
    shuffle: bool | str,
    seed: int | None = None,
    epoch: int = 0,
    drop_remainder: bool = False,
    chunk_size: int | None = None,
    stretch_chunks: int = SHUFFLE_BUFFER_CHUNKS,
) -> list[np.ndarray]:
    """Index arrays of one epoch over ``indices`` (or ``range(indices)`` when given a count);
    ``stretch_chunks``: chunks per stretch of the chunk shuffle."""
    if batch_size < 1:
        raise OptionError(f"batch size must be a positive number of samples, got {batch_size}")
    mode = {True: "global", False: "none"}.get(shuffle, shuffle)
    if mode not in SHUFFLE_MODES:
        raise OptionError(f"unknown shuffle {shuffle!r}: choose one of {', '.join(SHUFFLE_MODES)}")
    if mode == "none":
        order = np.arange(indices, dtype=np.int64) if np.isscalar(indices) else np.asarray(indices, np.int64)
    elif seed is None:
        raise OptionError("shuffle=True needs a seed, so that the run can be reproduced")
    else:
        order = _shuffled(indices, np.random.default_rng([seed, epoch]), mode, chunk_size, stretch_chunks)
    stop = len(order) - len(order) % batch_size if drop_remainder else len(order)
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]


def _shuffled(indices, rng, mode: str, chunk_size: int | None, stretch_chunks: int) -> np.ndarray:
    """The epoch's order. ``"chunk"`` is defined as a lexsort of the samples by (their chunk's
    stretch, one ``rng.random()`` key per sample in ``indices`` order) after ``rng.permutation`` of
    the chunks; on sorted indices (a whole split) ``_chunk_order`` builds that same order stretch by
    stretch, holding 8 bytes a sample instead of ~50 (19 M samples: 150 MB, not 950)."""
    if mode == "global" or not chunk_size:
        if np.isscalar(indices):
            return rng.permutation(int(indices)).astype(np.int64, copy=False)
        order = np.asarray(indices, dtype=np.int64)
        return order[rng.permutation(len(order))]
    if np.isscalar(indices):
        return _chunk_order(int(indices), rng, chunk_size, stretch_chunks)
    order = np.asarray(indices, dtype=np.int64)
    if len(order) > 1 and np.any(order[1:] < order[:-1]):
        chunk_of = order // chunk_size
        chunks = np.unique(chunk_of)
        stretch_of_chunk = np.empty(chunks.max() + 1 if len(chunks) else 0, np.int64)
        stretch_of_chunk[chunks] = rng.permutation(len(chunks)) // stretch_chunks
        return order[np.lexsort((rng.random(len(order)), stretch_of_chunk[chunk_of]))]
    return _chunk_order(order, rng, chunk_size, stretch_chunks)


def _chunk_order(order: int | np.ndarray, rng, chunk_size: int, stretch_chunks: int) -> np.ndarray:
    """The chunk shuffle of sorted ``order`` (a count: ``range(order)``, never built): each chunk's
    samples are one run of positions, so a stretch's keys are drawn by jumping the generator to its
    runs (``advance``), and the stretch is ordered by them alone (a stable argsort over ascending
    positions: the lexsort's tie rule)."""
    count = order if isinstance(order, int) else len(order)
    if not count:
        return np.arange(0, dtype=np.int64)
    if isinstance(order, int):
        bounds = np.minimum(np.arange(0, -(-count // chunk_size) + 1, dtype=np.int64) * chunk_size, count)
    else:
        first, last = int(order[0]) // chunk_size, int(order[-1]) // chunk_size
        bounds = np.searchsorted(order, np.arange(first, last + 2, dtype=np.int64) * chunk_size)
    starts, ends = bounds[:-1], bounds[1:]
    present = np.flatnonzero(ends > starts)
    starts, ends = starts[present], ends[present]
    chunk_at_rank = np.argsort(rng.permutation(len(present)))  # stretch s: ranks [s*k, (s+1)*k)
    keys_at, generator = rng.bit_generator.state, rng.bit_generator
    out, filled = np.empty(count, np.int64), 0
    for first_rank in range(0, len(chunk_at_rank), stretch_chunks):
        keys, positions = [], []
        for c in np.sort(chunk_at_rank[first_rank : first_rank + stretch_chunks]).tolist():
            generator.state = keys_at
            generator.advance(int(starts[c]))
            keys.append(rng.random(int(ends[c] - starts[c])))
            positions.append(np.arange(starts[c], ends[c]))
        positions = np.concatenate(positions)[np.argsort(np.concatenate(keys), kind="stable")]
        out[filled : filled + len(positions)] = positions if isinstance(order, int) else order[positions]
        filled += len(positions)
    return out


def split_sizes(n: int, parts: int) -> list[int]:
    """``n`` cut into ``parts`` sizes as even as possible: the first ``n % parts`` one larger."""
    return [n // parts + (k < n % parts) for k in range(parts)]


def worker_shard(plan: list[np.ndarray], *, worker: int, workers: int) -> list[np.ndarray]:
    """Worker ``worker``'s part of every batch of an epoch's ``plan``, for ``workers`` workers that
    train on each (global) batch together.

    Each global batch is cut into ``workers`` contiguous slices of sizes ``split_sizes(len(batch),
    workers)``, and the worker takes slice ``worker``. So every worker has one part per global
    batch — the same number of steps, which the all-reduce of each step needs — and the workers'
    parts are disjoint and together exactly the plan: one pass over the split. The last, shorter
    global batch is split the same way, neither dropped nor padded (with fewer samples than
    workers, some parts are empty; the distributed step pads every part to one shape with
    zero-weight samples, see ``ooc.distributed``).
    """
    if not 0 <= worker < workers:
        raise OptionError(f"worker must be in [0, {workers}), got {worker}")
    shards = []
    for batch in plan:
        sizes = split_sizes(len(batch), workers)
        start = sum(sizes[:worker])
        shards.append(batch[start : start + sizes[worker]])
    return shards


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
    return read_ahead(
        store.read,
        split,
        plan,
        prefetch,
        will_need=store.will_need,
        ahead=hint_ahead(store, batch_size, shuffle=shuffle),
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
) -> Iterator:
    """``read(split, batch)`` of each batch of ``plan``, in order, on a thread up to ``prefetch``
    batches ahead (0: in the caller's thread). The training loop reads through its own ``read``
    (which skips unreadable samples and says which batch it read).

    With ``will_need`` (a store's ``will_need``), reading batch i first hints batch i + ``ahead``
    (and the first read hints batches 1 to ``ahead``): the disk fetches the next stretch of chunks
    while this one is decoded. Hints change no batch."""
    tasks = [(lambda b=b: read(split, b)) for b in plan]
    if will_need is not None and ahead > 0:
        tasks = [
            (lambda i=i: _hinted(will_need, split, plan, i, ahead) or read(split, plan[i]))
            for i in range(len(plan))
        ]
    if prefetch <= 0:
        return (task() for task in tasks)
    return _Prefetched(iter(tasks), prefetch)


def _hinted(will_need, split: str, plan: list[np.ndarray], i: int, ahead: int) -> None:
    for j in range(i + 1 if i == 0 else i + ahead, min(i + ahead + 1, len(plan))):
        will_need(split, plan[j])


_DONE = object()


class _Prefetched:
    """Runs the tasks in order on one thread, at most ``depth`` results ahead of the consumer.

    The thread starts at once, not at the first ``next``: the training loop makes the next epoch's
    batches before it validates, so that the first, slowest batch (a whole stretch of chunks to
    decode) is read while the model validates. ``close()`` (or dropping the iterator) stops it."""

    def __init__(self, tasks, depth: int):
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
