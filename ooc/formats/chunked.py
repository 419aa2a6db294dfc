"""The read engine of a layout that stores samples in chunks along the sample axis.

A layout declares ``_read_rows`` (the rows of whole chunks, decoded) and inherits from ``ChunkedStore``
the rest: the wanted rows grouped by chunk, each chunk read once (runs of adjacent missing chunks in one
call) and kept in the reader's small LRU of decoded chunks; with the chunk shuffle, consecutive batches
come from the same few chunks, so each is decoded once per epoch instead of once per batch. Where chunks
are the check units, each chunk's CRC-32 is taken from the bytes just read, for ``ooc.formats.integrity``
to find instead of reading the unit again.

What a reader keeps (the decoded chunks, the chunks on their way, gathered windows, read CRCs, its
reader threads) is a ``ChunkReads``: the loader makes one per iterator (``Store.new_read_state``), so
that training and validation share none of it. The reading ahead itself is ``ooc.formats.readahead``.
Not here: what a batch holds (``ooc.sampling``), integrity (``ooc.formats.integrity``).
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ClassVar

import numpy as np

from ooc.core.threads import lower_priority
from ooc.direct_io import larger_than_memory
from ooc.formats import integrity, readahead
from ooc.formats.base import ReadState, Store
from ooc.formats.readahead import READER_THREADS, runs
from ooc.fs import disk_usage, is_remote
from ooc.manifest import checksum_size
from ooc.sampling import SHUFFLE_BUFFER_CHUNKS

# a chunked store caches twice a stretch of the chunk shuffle's decoded chunks (a batch may straddle
# two stretches), bounded whatever the data's size. ``ooc bench`` measures other values.
CACHE_CHUNKS = 2 * SHUFFLE_BUFFER_CHUNKS
READ_CRCS_KEPT = 1 << 16  # chunk CRCs taken at read time, kept until checked (a gathered window: all chunks)


class ChunkReads(ReadState):
    """What one reader of a chunked store keeps between its reads (see the module docstring)."""

    def __init__(self):
        super().__init__()
        self.chunks: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()  # decoded, least recent first
        self.hinted: OrderedDict[tuple[str, int], None] = OrderedDict()  # chunks will_need asked for lately
        self.read_crcs: OrderedDict[tuple[str, int], str] = OrderedDict()  # taken as read, until checked
        # chunks being read in the background: (the read of their run, their place in it)
        self.ahead: OrderedDict[tuple[str, int], tuple[Future, int]] = OrderedDict()
        self.scattered: dict[str, list[np.ndarray]] = {}  # split -> hinted samples not yet gathered
        # gathered windows: [split, sorted samples, the read of their rows, samples not yet read]
        self.gathered: list[list] = []
        self.lock = threading.Lock()
        self.crc_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def pool(self) -> ThreadPoolExecutor:
        """The reader threads, made at the first read ahead, niced like the loader's prefetch thread:
        they run on the cycles the model leaves idle."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                READER_THREADS, thread_name_prefix="ooc-read-ahead", initializer=lower_priority
            )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class ChunkedStore(Store):
    """A layout read a chunk at a time (compressed HDF5 and Zarr decode a chunk whole; uncompressed
    HDF5 and npy, whose "chunks" are runs of rows, may read single rows instead: ``_points_are_cheaper``)."""

    # decoded chunks a reader keeps (least recently used dropped): what a chunk-shuffled read needs
    cache_chunks: int = CACHE_CHUNKS
    # whether will_need reads the chunks it is told of in the reader's threads (else: advises the
    # kernel). Only for a layout whose ``_read_rows`` is thread-safe and spends its time outside the
    # GIL (a pread, a decoder that releases it), so that it overlaps the caller's decoding.
    reads_ahead: ClassVar[bool] = False
    # read past the page cache (``ooc.direct_io``), in layouts that read their files themselves:
    # None decides at the first read (yes when the store's files are larger than the memory this
    # process may use), True or False forces it
    direct_io: bool | None = None

    # -- what a chunked layout implements ----------------------------------------------------------
    @abstractmethod
    def _read_rows(self, split: str, start: int, stop: int) -> np.ndarray:
        """Stored rows ``[start, stop)``, a whole number of chunks (the last may be short)."""

    def _read_chunks(self, split: str, chunk_ids: list[int]) -> dict[int, np.ndarray] | None:
        """Optional: the rows of each of ``chunk_ids`` (ascending) fetched at once, e.g. concurrently
        from object storage; None: read in runs of adjacent chunks through ``_read_rows``."""
        return None

    def _points_are_cheaper(self, hits: int) -> bool:
        """Optional: whether reading ``hits`` single rows beats decoding their whole chunk."""
        return False

    def _read_points(self, split: str, indices: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _advise_chunks(self, split: str, chunk_ids: list[int]) -> None:
        """Optional: ``advise_will_need`` of the bytes of these chunks (the kernel reads them ahead)."""

    def _advise_points(self, split: str, indices: np.ndarray) -> None:
        """Optional: ``advise_will_need`` of the bytes of rows read one by one (``_points_are_cheaper``)."""

    def _reads_ahead_here(self) -> bool:
        """Optional: whether this store (its options, its files) can read ahead in the background."""
        return True

    # -- the engine ---------------------------------------------------------------------------------
    @property
    def chunk_size(self) -> int:
        return int(self.options["chunk_size"])

    def new_read_state(self) -> ChunkReads:
        return ChunkReads()

    def will_need(self, split, indices, state=None):
        readahead.will_need(self, state or self._state, split, np.asarray(indices, dtype=np.int64))

    def gather_window(self) -> int:
        return readahead.gather_window(self)

    def _reads_direct(self) -> bool:
        """Whether this store's own file reads bypass the page cache (``direct_io``)."""
        if self.direct_io is not None:
            return self.direct_io
        if self._direct is None and is_remote(self.path):
            self._direct = False
        if self._direct is None:
            files = self.manifest.get("checksums", {}).get("files")  # "<crc> <size>" each: no walk
            size = sum(map(checksum_size, files.values())) if files else disk_usage(self.path)[0]
            self._direct = larger_than_memory(size)
        return self._direct

    def _samples_with(self, split, index):
        first = index - index % self.shuffle_unit
        return range(first, min(first + self.shuffle_unit, self.num_samples(split)))

    def _reset_handles(self):
        super()._reset_handles()
        self._direct: bool | None = None  # direct_io's decision, once made

    def _read_sorted(self, split, indices, state):
        if state.gathered:
            with state.lock:
                found, rows = readahead.from_gathered(self, state, split, indices)
            if found.any():
                if not found.all():
                    rows[~found] = self._read_cached(split, indices[~found], state)
                return rows
        return self._read_cached(split, indices, state)

    def _read_cached(self, split: str, indices: np.ndarray, state: ChunkReads) -> np.ndarray:
        size = self.shuffle_unit
        cache = state.chunks
        chunk_of = indices // size
        starts = np.flatnonzero(np.r_[True, chunk_of[1:] != chunk_of[:-1]])
        ends = np.r_[starts[1:], len(indices)]
        span = dict(zip(chunk_of[starts].tolist(), zip(starts.tolist(), ends.tolist())))
        out = None

        def put(start: int, end: int, part: np.ndarray) -> None:
            nonlocal out
            if out is None:
                out = np.empty((len(indices), *part.shape[1:]), part.dtype)
            out[start:end] = part

        with state.lock:
            missing = []
            for c, (s, e) in span.items():  # cached chunks first: the fetches below may evict them
                if (split, c) in cache:
                    cache.move_to_end((split, c))
                    put(s, e, cache[(split, c)][indices[s:e] - c * size])
                elif self._points_are_cheaper(e - s):
                    put(s, e, self._read_points(split, indices[s:e]))
                else:
                    missing.append(c)
            # at most cache_chunks decoded at a time: a batch drawing from more chunks (the global
            # shuffle) holds no more decoded chunks than the cache, whatever the store's size
            for at in range(0, len(missing), self.cache_chunks):
                group = missing[at : at + self.cache_chunks]
                fetched = self._fetch_chunks(split, group, state)
                for c in group:
                    s, e = span[c]
                    put(s, e, fetched[c][indices[s:e] - c * size])
                    cache[(split, c)] = fetched[c]
                    cache.move_to_end((split, c))
                while len(cache) > self.cache_chunks:
                    cache.popitem(last=False)
        return out

    def _fetch_chunks(self, split: str, chunk_ids: list[int], state: ChunkReads) -> dict[int, np.ndarray]:
        """Decode the given chunks (ascending: file order): those read ahead from their background
        read (its error, if any, raised here), the others through ``_read_chunks`` or in runs of
        adjacent ones (at most ``cache_chunks``) per call."""
        size = self.shuffle_unit
        fetched = {}
        for c in chunk_ids:
            if (split, c) in state.ahead:
                block, at = state.ahead.pop((split, c))
                fetched[c] = block.result()[at * size : (at + 1) * size]
        rest = [c for c in chunk_ids if c not in fetched]
        if rest and (at_once := self._read_chunks(split, rest)) is not None:
            return {**fetched, **at_once}
        for run in runs(rest, self.cache_chunks):
            block = self.read_run(split, run, state)
            for i, r in enumerate(run):
                fetched[r] = block[i * size : (i + 1) * size].copy() if len(run) > 1 else block
        return fetched

    def read_run(self, split: str, run: list[int], state: ChunkReads) -> np.ndarray:
        """The rows of a run of adjacent chunks; where chunks are the check units, each one's CRC-32
        is taken here, from the bytes just read (in a reader thread, for a run read ahead)."""
        size, count = self.shuffle_unit, self.num_samples(split)
        block = self._read_rows(split, run[0] * size, min((run[-1] + 1) * size, count))
        if self.check_unit == size and integrity.recorded(self, split).get("x"):
            crcs = {c: integrity.crc(block[i * size : (i + 1) * size]) for i, c in enumerate(run)}
            with state.crc_lock:
                for c, crc in crcs.items():
                    state.read_crcs[(split, c)] = crc
                while len(state.read_crcs) > READ_CRCS_KEPT:
                    state.read_crcs.popitem(last=False)
        return block

    def _unit_crc(self, split, unit, start, stop, state):
        """The CRC taken as the unit was read, else of the reader's decoded chunk when units are
        chunks (the bytes the batch was cut from), else of the unit read again."""
        with state.crc_lock:
            crc = state.read_crcs.pop((split, unit), None)
        if crc is None and self.check_unit == self.shuffle_unit:
            with state.lock:
                cached = state.chunks.get((split, unit))
            if cached is not None:
                crc = integrity.crc(cached)
        return crc if crc is not None else super()._unit_crc(split, unit, start, stop, state)
