"""The one contract every on-disk layout implements: a ``Store`` to read and a ``Writer`` to fill.

Store
    Opened from a directory whose manifest names the format. Its surface is the same for every
    layout: ``splits``, ``num_samples(split)``, ``labels(split)`` and ``read(split, indices)``.
    ``read`` is implemented once, here: it validates the indices, sorts and de-duplicates them,
    asks the layout for those rows (``_read_sorted``), restores the caller's order and decodes to
    float32 in [0, 1] with shape ``(n, height, width, 1)``. Layouts therefore only ever see sorted,
    unique indices (h5py refuses anything else) and can group them by chunk.
    Stores open their files lazily and can be pickled, so they work in worker processes.

Writer
    Receives each split as ``begin_split(split, count, sample_shape, label_dtype)`` followed by
    ``write`` calls with consecutive ``(x, y)`` chunks, then ``close()``. It must never need the
    whole split in memory. It writes data files only; the manifest is written by ``ooc.convert``
    after ``close``. Chunks arrive as uint8 pixels (``encode`` turns them into the stored dtype),
    cut at multiples of ``chunk_size`` so chunked layouts write whole chunks. After each ``write``,
    ``commit`` makes the samples so far durable against a killed process; ``final_files`` names the
    files no later write changes (checksummed into the journal and the manifest); ``resume_split``
    reopens a split of an interrupted conversion and says where to go on (see ``ooc.convert``).

A layout module provides ``NAME``, ``Store``, ``Writer`` and ``OPTIONS`` (the allowed and default
values of chunk size, compression and dtype), and one line in ``ooc.formats.FORMATS``.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ooc.errors import CorruptStoreError, OocError, OptionError
from ooc.remote import URL

# What storage libraries raise on a damaged file (h5py: OSError; zarr codecs: RuntimeError; pyarrow:
# ArrowInvalid/ArrowIOError, subclasses of ValueError/OSError; numpy: ValueError, EOFError). Anything
# else is a bug and keeps its traceback.
LIBRARY_READ_ERRORS = (OSError, ValueError, RuntimeError, EOFError, KeyError)

# float32(v) / float32(255) for every byte: the one definition of "normalised pixel", shared by the
# binary readers and the CSV writer, so that every layout yields bit-identical batches.
U8_TO_FLOAT32 = np.arange(256, dtype=np.float32) / np.float32(255)


def decode(x_uint8: np.ndarray) -> np.ndarray:
    """Normalised float32 pixels: the same bits as ``U8_TO_FLOAT32[x]`` (both divide in float32),
    8x faster than the table lookup (vectorised division, measured 0.07 against 0.5 ms a batch)."""
    return np.divide(x_uint8, np.float32(255), dtype=np.float32)


def encode(x_uint8: np.ndarray, dtype: str) -> np.ndarray:
    """The stored form of a uint8 chunk: itself, or the normalised float32 values."""
    return x_uint8 if dtype == "uint8" else decode(x_uint8)


@dataclass(frozen=True)
class LayoutOptions:
    """What a layout accepts. ``chunk_size`` None means the layout has no chunks to size."""

    compressions: tuple[str, ...]
    default_compression: str
    dtypes: tuple[str, ...]
    default_dtype: str
    default_chunk_size: int | None
    chunking: str = ""  # what stands in for chunks in a layout without them, for `ooc info`
    default_shard_size: int | None = None  # samples per file, for layouts written as shards

    def resolve(self, name: str, *, chunk_size: int | None, compression: str | None, dtype: str | None,
                shard_size: int | None = None) -> dict[str, Any]:
        """Fill defaults and refuse what this layout cannot do, naming the option."""
        if self.default_chunk_size is None:
            if chunk_size is not None:
                hint = "; use --shard-size" if self.default_shard_size else ""
                raise OptionError(f"--chunk-size does not apply to {name} (it has no chunks); drop the option{hint}")
        elif chunk_size is not None and chunk_size < 1:
            raise OptionError(f"--chunk-size must be a positive number of samples, got {chunk_size}")
        if self.default_shard_size is None:
            if shard_size is not None:
                raise OptionError(f"--shard-size does not apply to {name} (it is not written in shards); drop the option")
        elif shard_size is not None and shard_size < 1:
            raise OptionError(f"--shard-size must be a positive number of samples, got {shard_size}")
        compression = compression or self.default_compression
        if compression not in self.compressions:
            raise OptionError(f"--compression {compression!r} is not available for {name}: choose one of {', '.join(self.compressions)}")
        dtype = dtype or self.default_dtype
        if dtype not in self.dtypes:
            raise OptionError(f"--dtype {dtype!r} is not available for {name}: choose one of {', '.join(self.dtypes)}")
        resolved = {"chunk_size": chunk_size or self.default_chunk_size, "compression": compression, "dtype": dtype}
        if self.default_shard_size:
            resolved["shard_size"] = shard_size or self.default_shard_size
        return resolved


class Store(ABC):
    format_name: ClassVar[str]

    def __init__(self, path: str | os.PathLike, manifest: dict[str, Any]):
        self.path = path if isinstance(path, URL) else Path(path)  # a URL (ooc.remote) stays a string
        self.manifest = manifest
        self._labels: dict[str, np.ndarray] = {}

    # -- the common surface -------------------------------------------------------------------
    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.manifest["splits"])

    def num_samples(self, split: str) -> int:
        return int(self._split_info(split)["count"])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest["sample_shape"])

    @property
    def num_classes(self) -> int:
        return int(self.manifest["num_classes"])

    @property
    def options(self) -> dict[str, Any]:
        return self.manifest["options"]

    @property
    def chunk_size(self) -> int | None:
        """Samples per chunk for layouts that read whole chunks (what the chunk shuffle groups by)."""
        return None

    def labels(self, split: str) -> np.ndarray:
        """All labels of a split as int64 (small: one number per sample); read once, then kept."""
        if split not in self._labels:
            with self.__dict__.setdefault("_labels_lock", threading.Lock()):  # threads may all ask at once
                if split not in self._labels:
                    self._split_info(split)
                    try:
                        labels = self._read_labels(split)
                    except OocError:
                        raise  # the layout's own message names the file already
                    except LIBRARY_READ_ERRORS as error:
                        reason = (str(error).strip().splitlines() or [""])[0][:200]
                        raise CorruptStoreError(f"{self.path}: cannot read the labels of split '{split}' ({type(error).__name__}: {reason}); "
                                                f"check the store with `ooc verify {self.path}`, re-convert it to repair") from error
                    self._labels[split] = np.asarray(labels, dtype=np.int64)
        return self._labels[split]

    def read(self, split: str, indices) -> tuple[np.ndarray, np.ndarray]:
        """Samples at ``indices`` (any order, repeats allowed) as float32 x (n, h, w, 1) and int64 y."""
        n = self.num_samples(split)
        indices = np.asarray(indices)
        if indices.ndim != 1 or (indices.size and indices.dtype.kind not in "iu"):
            raise OptionError(f"indices must be a 1-d array of integers, got {indices.dtype} of shape {indices.shape}")
        indices = indices.astype(np.int64, copy=False)
        if indices.size and (indices.min() < 0 or indices.max() >= n):
            bad = indices[(indices < 0) | (indices >= n)][0]
            raise OptionError(f"index {bad} is out of range for split '{split}' of {self.path} ({n} samples)")
        if not indices.size:
            return np.empty((0, *self.sample_shape, 1), np.float32), np.empty(0, np.int64)
        unique, inverse = np.unique(indices, return_inverse=True)
        try:
            x = self._read_sorted(split, unique)
        except OocError as error:
            error.split, error.indices = split, unique
            raise
        except LIBRARY_READ_ERRORS as error:
            raise self._read_error(split, unique, error) from error
        if len(unique) != len(indices) or np.any(unique != indices):
            x = x[inverse]  # the caller's order, while still uint8: a quarter of the bytes to move
        if x.dtype != np.float32:
            x = decode(x)
        return x.reshape((len(indices), *self.sample_shape, 1)), self.labels(split)[indices]

    def close(self) -> None:
        """Release open files; the store reopens them on the next read."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- what each layout implements --------------------------------------------------------------
    @abstractmethod
    def _read_sorted(self, split: str, indices: np.ndarray) -> np.ndarray:
        """Stored rows at sorted, unique ``indices``: uint8 or float32, shape (n, h, w)."""

    @abstractmethod
    def _read_labels(self, split: str) -> np.ndarray:
        """Every label of ``split``, in sample order."""

    def _file_of(self, split: str, index: int) -> Path:
        """The file that holds sample ``index``: what a read error names."""
        return self.path

    def _samples_with(self, split: str, index: int) -> range:
        """The samples stored together with ``index`` (its chunk), lost together when it is damaged."""
        return range(index, index + 1)

    # -- helpers ------------------------------------------------------------------------------------
    def _read_error(self, split: str, indices: np.ndarray, error: Exception) -> CorruptStoreError:
        """A one-line error naming the damaged file and its samples: the batch is re-read sample by
        sample (only on this failure path) to find the first that fails."""
        bad = int(indices[0])
        for index in indices.tolist():
            try:
                self._read_sorted(split, np.array([index]))
            except (OocError, *LIBRARY_READ_ERRORS):
                bad = index
                break
        samples = self._samples_with(split, bad)
        which = f"sample {bad}" if len(samples) == 1 else f"samples {samples.start}–{samples.stop - 1}"
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        result = CorruptStoreError(f"{self._file_of(split, bad)}: cannot read {which} of split '{split}' ({type(error).__name__}: {reason}); "
                                   f"check the store with `ooc verify {self.path}`, re-convert it to repair")
        result.split, result.indices = split, np.asarray(samples, dtype=np.int64)
        return result

    def _split_info(self, split: str) -> dict[str, Any]:
        try:
            return self.manifest["splits"][split]
        except KeyError:
            raise OptionError(f"split {split!r} is not in {self.path}: it has {', '.join(self.splits)}") from None

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_labels_lock", None)
        state.update(self._closed_state())
        return state

    def _closed_state(self) -> dict[str, Any]:
        """Attributes to replace when pickling (open handles become None)."""
        return {}


# The chunk shuffle draws each stretch of batches from this many chunks; a chunked store caches twice
# as many decoded chunks, since a batch may straddle two stretches. Bounded whatever the data's size.
SHUFFLE_BUFFER_CHUNKS = 8
CACHE_CHUNKS = 2 * SHUFFLE_BUFFER_CHUNKS


class ChunkedStore(Store):
    """A layout that stores samples in chunks of ``chunk_size`` along the sample axis and decodes
    a chunk whole (compressed HDF5 and Zarr do; uncompressed HDF5 may read single rows instead).

    ``_read_sorted`` is done here: the wanted rows are grouped by chunk, each chunk is read once
    (runs of adjacent missing chunks in one call, so zarr can fetch them concurrently) and kept in
    a small LRU of decoded chunks. With the chunk shuffle, consecutive batches come from the same
    few chunks, so each chunk is decoded once per epoch instead of once per batch.
    """

    @property
    def chunk_size(self) -> int:
        return int(self.options["chunk_size"])

    def _samples_with(self, split, index):
        first = index - index % self.chunk_size
        return range(first, min(first + self.chunk_size, self.num_samples(split)))

    @abstractmethod
    def _read_rows(self, split: str, start: int, stop: int) -> np.ndarray:
        """Stored rows ``[start, stop)``, a whole number of chunks (the last may be short)."""

    def _points_are_cheaper(self, hits: int) -> bool:
        """Whether reading ``hits`` single rows beats decoding their whole chunk."""
        return False

    def _read_points(self, split: str, indices: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _read_sorted(self, split, indices):
        size, count = self.chunk_size, self.num_samples(split)
        cache = self.__dict__.setdefault("_chunk_cache", OrderedDict())
        lock = self.__dict__.setdefault("_chunk_lock", threading.Lock())
        chunk_of = indices // size
        starts = np.flatnonzero(np.r_[True, chunk_of[1:] != chunk_of[:-1]])
        ends = np.r_[starts[1:], len(indices)]
        chunk_ids = chunk_of[starts].tolist()
        out = None
        with lock:
            missing = [c for c, s, e in zip(chunk_ids, starts, ends)
                       if (split, c) not in cache and not self._points_are_cheaper(int(e - s))]
            fetched = self._fetch_chunks(split, missing, size, count)
            for c, s, e in zip(chunk_ids, starts, ends):
                rows = indices[s:e]
                chunk = fetched.get(c)
                if chunk is None and (split, c) in cache:
                    chunk = cache[(split, c)]
                    cache.move_to_end((split, c))
                if chunk is None:
                    part = self._read_points(split, rows)
                else:
                    part = chunk[rows - c * size]
                if out is None:
                    out = np.empty((len(indices), *part.shape[1:]), part.dtype)
                out[s:e] = part
            for c, chunk in fetched.items():
                cache[(split, c)] = chunk
                cache.move_to_end((split, c))
            while len(cache) > CACHE_CHUNKS:
                cache.popitem(last=False)
        return out

    def _fetch_chunks(self, split: str, chunk_ids: list[int], size: int, count: int) -> dict[int, np.ndarray]:
        """Decode the given chunks, reading runs of adjacent ones (at most CACHE_CHUNKS) per call."""
        fetched = {}
        run: list[int] = []
        for c in chunk_ids + [None]:
            if run and (c is None or c != run[-1] + 1 or len(run) == CACHE_CHUNKS):
                block = self._read_rows(split, run[0] * size, min((run[-1] + 1) * size, count))
                for i, r in enumerate(run):
                    fetched[r] = block[i * size:(i + 1) * size].copy() if len(run) > 1 else block
                run = []
            if c is not None:
                run.append(c)
        return fetched

    def close(self) -> None:
        self.__dict__.pop("_chunk_cache", None)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_chunk_cache", None)
        state.pop("_chunk_lock", None)
        return state


class Writer(ABC):
    def __init__(self, path: Path, *, chunk_size: int | None, compression: str, dtype: str, shard_size: int | None = None):
        self.path = path
        self.chunk_size = chunk_size
        self.shard_size = shard_size
        self.compression = compression
        self.dtype = dtype

    @abstractmethod
    def begin_split(self, split: str, count: int, sample_shape: tuple[int, ...], label_dtype: np.dtype) -> None: ...

    @abstractmethod
    def write(self, split: str, start: int, x: np.ndarray, y: np.ndarray) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def abort(self) -> None:
        """Close whatever is open after a failure, without flushing more than needed."""
        try:
            self.close()
        except Exception:
            pass

    # -- resuming an interrupted conversion (see ooc.convert) -----------------------------------------
    def commit(self, split: str, done: int) -> dict[str, Any]:
        """Samples ``[0, done)`` of ``split`` are written: hand them to the OS (a killed process
        then loses none of them) and, once ``done`` is the split's count, finish the split's files.
        Returns what ``resume_split`` needs besides the final files (JSON, kept in the journal)."""
        return {}

    def final_files(self, split: str, done: int) -> list[Path]:
        """The files of ``split`` that no later write changes once ``commit(split, done)`` returned:
        their checksums go in the journal, and a resumed conversion keeps them."""
        return []

    def resume_split(self, split: str, count: int, sample_shape: tuple[int, ...], label_dtype: np.dtype,
                     done: int, state: dict[str, Any]) -> int:
        """Reopen a split that an interrupted conversion committed ``done`` samples of (``state``:
        what ``commit`` returned then) and return the sample to continue from. By default the split
        starts over: a layout written as one file cannot trust a file killed mid-write."""
        self.begin_split(split, count, sample_shape, label_dtype)
        return 0

    def path_of(self, split: str, index: int) -> Path:
        """The file sample ``index`` of ``split`` is written to: what a write error names."""
        return self.path

    # -- parallel conversion (``--jobs N``, ``--dask ADDRESS``; see ooc.convert) -----------------------
    # A layout whose pieces are independent files lets other processes write the images of a range
    # of samples (``write_part``, on a fresh Writer in the worker, given ``part_spec``) while this
    # writer, in the converting process, takes the rest in sample order (``absorb_part``: labels,
    # indexes, running CRCs), then commits as usual. The files come out byte for byte as one
    # process writes them.
    single_writer: ClassVar[str] = "a layout without write_part"  # why not ("it is …"); "" if it can

    def part_unit(self, step: int) -> int:
        """Samples per parallel task, given the commit unit ``step`` (a multiple of the chunk size)."""
        return step

    def part_spec(self, split: str) -> dict[str, Any]:
        """What a worker needs to write parts of ``split`` (picklable; the split is begun here)."""
        return {}

    def write_part(self, split: str, start: int, x: np.ndarray, y: np.ndarray, spec: dict[str, Any]) -> Any:
        """In a worker: write the pieces of samples ``[start, start + len(x))``; the result (picklable)
        goes to ``absorb_part``."""
        raise NotImplementedError

    def absorb_part(self, split: str, start: int, y: np.ndarray, result: Any) -> None:
        """In the converting process, parts in sample order: what else samples ``[start, start +
        len(y))`` need (their labels, ``write_part``'s result), before ``commit``."""
        raise NotImplementedError


def disk_usage(path: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of every file below ``path``."""
    if isinstance(path, URL):  # objects: what is stored is what is billed
        from ooc import remote

        total = sum(remote.list_files(path).values())
        return total, total
    apparent = allocated = 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.stat(os.path.join(root, name))
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated
