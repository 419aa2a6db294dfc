"""The only place that decides which samples form a batch, and in what order: plans, no reading.

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

``shuffle=True`` means ``"global"`` and ``False`` means ``"none"``. Workers' shards of each batch
(``worker_shard``) are cut here too. Not here: reading (``ooc.loader``), stores (``ooc.formats``).
"""

from __future__ import annotations

import numpy as np

from ooc.errors import OptionError

# The chunk shuffle draws each stretch of batches from this many chunks; a chunked store's reader
# caches twice as many decoded chunks, since a batch may straddle two stretches. ``ooc bench``
# measures other values (its stretch × cache table).
SHUFFLE_BUFFER_CHUNKS = 8
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
