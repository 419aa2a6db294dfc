"""Reading ahead of a chunked store: what the loader's hints start, into the hinting reader's own state.

``will_need(store, state, split, indices)`` is told the samples a reader will read soon (the loader
hints a stretch of the chunk shuffle ahead, or two windows of the global shuffle): the chunks neither
cached nor hinted lately are advised to the kernel (unless read past the page cache) and, for a layout
that ``reads_ahead``, read in the reader's threads, so that the disk works while the caller decodes
what it has. A hint spread over more chunks than the cache holds (the exact global shuffle) is collected
into a gathered window: all reader threads read the window's chunks, each decoded once for all of the
window's samples in it, not once a sample. Hints never change what a read returns.

Everything here lives in the ``ChunkReads`` of the reader that hinted (``ooc.formats.chunked``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ooc.fs import is_remote

if TYPE_CHECKING:
    from ooc.formats.chunked import ChunkedStore, ChunkReads

# Bytes of rows a gathered window holds (up to 3 windows are held: one read, two gathering).
GATHER_BYTES = 32 << 20
# the reader threads of a store that reads ahead: mostly waiting on the disk, several reads in flight
READER_THREADS = 4


def gather_window(store: ChunkedStore) -> int:
    """Samples of a gathered window (``GATHER_BYTES`` of rows); 0 where this store cannot read in
    the background (the loader then hints the global shuffle as it hints the chunk shuffle)."""
    if not (store.reads_ahead and not is_remote(store.path) and store._reads_ahead_here()):
        return 0
    row = int(np.prod(store.sample_shape)) * store.schema.dtype.itemsize
    return max(1, GATHER_BYTES // max(row, 1))


def will_need(store: ChunkedStore, state: ChunkReads, split: str, indices: np.ndarray) -> None:
    """The chunks of ``indices`` neither cached nor hinted lately (at most ``cache_chunks``) are
    advised and read ahead; rows read one by one are advised alone; a hint over more chunks than
    the cache holds is gathered a window at a time."""
    if is_remote(store.path) or not len(indices) or store.shuffle_unit is None:
        return
    chunk_of = indices // store.shuffle_unit
    chunks, hits = np.unique(chunk_of, return_counts=True)
    if len(chunks) > store.cache_chunks and store.gather_window():
        _gather_later(store, state, split, indices)
        return
    points = np.array([store._points_are_cheaper(h) for h in hits.tolist()], bool)
    if points.any():
        store._advise_points(split, indices[np.isin(chunk_of, chunks[points])])
    with state.lock:
        wanted = [
            c
            for c, point in zip(chunks.tolist(), points.tolist())
            if (split, c) not in state.chunks and (split, c) not in state.hinted and not point
        ][: store.cache_chunks]
        for c in wanted:
            state.hinted[(split, c)] = None
        while len(state.hinted) > 4 * store.cache_chunks:
            state.hinted.popitem(last=False)
    if not wanted:
        return
    if not store._reads_direct():
        store._advise_chunks(split, wanted)  # the kernel reads them all at once
    if store.reads_ahead and store._reads_ahead_here():
        _read_in_background(store, state, split, wanted)


def _read_in_background(store: ChunkedStore, state: ChunkReads, split: str, chunk_ids: list[int]) -> None:
    """Start reading runs of adjacent ``chunk_ids`` in the reader's threads; a read takes the chunk
    from ``state.ahead`` (at most ``cache_chunks`` pending: older ones are dropped unread)."""
    with state.lock:
        for run in runs(sorted(chunk_ids), store.cache_chunks):
            block = state.pool().submit(store.read_run, split, run, state)
            for at, c in enumerate(run):
                state.ahead[(split, c)] = (block, at)
        while len(state.ahead) > store.cache_chunks:
            state.ahead.popitem(last=False)


def _gather_later(store: ChunkedStore, state: ChunkReads, split: str, indices: np.ndarray) -> None:
    """Collect hinted samples; a window's worth is gathered by all the reader threads, each taking
    a share of its chunks. (A smaller first window would not come sooner: a window of more samples
    than the store has chunks reads nearly every chunk, whatever its size.)"""
    with state.lock:
        pending = state.scattered.setdefault(split, [])
        pending.append(indices)
        if sum(map(len, pending)) < store.gather_window():
            return
        wanted = np.unique(np.concatenate(pending))
        pending.clear()
        chunk_of = wanted // store.shuffle_unit
        cuts = np.searchsorted(chunk_of, np.quantile(chunk_of, np.linspace(0, 1, READER_THREADS + 1)[1:-1]))
        parts = [state.pool().submit(_gather, store, state, split, part) for part in np.split(wanted, cuts)]
        state.gathered.append([split, wanted, parts, len(wanted)])  # the last: samples not yet read
        while len(state.gathered) > 3:
            state.gathered.pop(0)


def _gather(store: ChunkedStore, state: ChunkReads, split: str, wanted: np.ndarray) -> np.ndarray:
    """Rows ``wanted`` (sorted), each chunk read once (``read_run``: its CRC taken) and dropped."""
    size = store.shuffle_unit
    out = np.empty((len(wanted), *store.sample_shape), store.schema.dtype)
    if not len(wanted):
        return out
    chunk_of = wanted // size
    bounds = np.flatnonzero(np.r_[True, chunk_of[1:] != chunk_of[:-1], True])
    for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        c = int(chunk_of[s])
        out[s:e] = store.read_run(split, [c], state)[wanted[s:e] - c * size]
    return out


def from_gathered(
    store: ChunkedStore, state: ChunkReads, split: str, indices: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Which of ``indices`` a gathered window holds, and their rows (waiting for the window)."""
    found = np.zeros(len(indices), bool)
    rows = None
    for entry in list(state.gathered):
        where, wanted, block, _ = entry
        if where != split:
            continue
        at = np.minimum(np.searchsorted(wanted, indices), len(wanted) - 1)
        hit = (wanted[at] == indices) & ~found
        if hit.any():
            if rows is None:
                rows = np.empty((len(indices), *store.sample_shape), store.schema.dtype)
            if isinstance(block, list):  # the threads' parts, in order: joined once
                block = entry[2] = np.concatenate([part.result() for part in block])
            rows[hit] = block[at[hit]]
            found |= hit
            entry[3] -= int(hit.sum())
            if entry[3] <= 0:
                state.gathered.remove(entry)
    return found, rows


def runs(ascending: list[int], longest: int) -> list[list[int]]:
    """``ascending`` cut into runs of consecutive numbers, each at most ``longest`` long."""
    out: list[list[int]] = []
    for c in ascending:
        if out and c == out[-1][-1] + 1 and len(out[-1]) < longest:
            out[-1].append(c)
        else:
            out.append([c])
    return out
