"""Raw ``.npy`` arrays, one pair per split: ``<store>/train_x.npy`` (n, *sample_shape) and
``<store>/train_y.npy`` (n, *target_shape), in the source's dtypes. ``np.load(path, mmap_mode="r")`` reads them as is.

Written through ``np.lib.format.open_memmap`` chunk by chunk, read through a read-only memmap:
no chunks, no codec, so any sample costs only its own pages — the physical bound for reading this
payload, as a layout of its own. An interrupted conversion resumes after its last committed sample.
"""

from __future__ import annotations

import errno
import mmap
import os
import tokenize
import zlib

import numpy as np

from ooc.direct_io import advise_will_need, read_into
from ooc.errors import CorruptStoreError
from ooc.formats.base import LayoutOptions, ParallelParts, Resumable
from ooc.formats.base import Writer as _Writer
from ooc.formats.chunked import ChunkedStore

# what np.load raises on a damaged file: a header it cannot parse falls back on tokenize, which has its own
HEADER_ERRORS = (OSError, ValueError, SyntaxError, tokenize.TokenError)

NAME = "npy"
OPTIONS = LayoutOptions(
    compressions=("none",),
    default_compression="none",
    default_chunk_size=None,
    chunking="none (one contiguous array per split)",
    out_of_core=True,
)
# Samples per unit whose CRC-32 reads check (the arrays have no chunks): a unit is checked the first
# time one of its samples is read in a pass over the split. It is also the run of rows the chunk
# shuffle keeps together and reads with one pread.
CHECK_UNIT = 1024
# A unit is read whole (one pread of ~1 MB for MNIST) when a batch wants at least 2 of its rows (the
# chunk shuffle, whatever the batch size), else row by row through the memmap (a page each: out of
# core, one small disk read each; the global shuffle of a large split draws 1 row a unit).
ROWS_PER_HIT = 512


def array_path(store, split: str, name: str):
    return store / f"{split}_{name}.npy"


class Writer(_Writer, Resumable, ParallelParts):
    """Writes go through a shared memmap, so the kernel holds them as soon as they are made: a
    killed process loses none. The journal keeps a CRC of the bytes committed so far, which a
    resumed conversion checks (one read of them) before it writes on from there."""

    def __init__(self, path, **options):
        super().__init__(path, **options)
        self._arrays: dict[str, tuple[np.memmap, np.memmap]] = {}  # split -> open (x, y) maps
        self._crcs: dict[str, list[int]] = {}  # split -> running CRCs of the x and y bytes written
        self._counts: dict[str, int] = {}

    def begin_split(self, split, count, schema):
        self._open(split, count, schema, "w+")
        self._crcs[split] = [0, 0]

    def _open(self, split, count, schema, mode):
        self._counts[split] = count
        arrays = []
        for name, dtype, shape in (
            ("x", schema.dtype, (count, *schema.sample_shape)),
            ("y", schema.target_dtype, (count, *schema.target_shape)),
        ):
            path = array_path(self.path, split, name)
            array = np.lib.format.open_memmap(path, mode=mode, dtype=dtype, shape=shape)
            if (
                mode == "w+"
            ):  # allocate now: a full disk is an OSError here, not a SIGBUS in a later write to the map
                with open(path, "r+b") as f:
                    try:
                        os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
                    except OSError as e:
                        if e.errno in (errno.ENOSPC, errno.EDQUOT):
                            raise  # else the filesystem cannot preallocate: write as before
            arrays.append(array)
        self._arrays[split] = tuple(arrays)

    def resume_split(self, split, count, schema, done, state):
        self._counts[split] = count
        if done == count:
            return done  # the split's files are final and were checked against the journal
        try:
            self._open(split, count, schema, "r+")
            xs, ys = self._arrays[split]
            fits = (
                xs.shape == (count, *schema.sample_shape)
                and xs.dtype == schema.dtype
                and ys.shape == (count, *schema.target_shape)
                and ys.dtype == schema.target_dtype
            )
            crcs = [zlib.crc32(xs[:done]), zlib.crc32(ys[:done])] if fits else None
        except HEADER_ERRORS:
            crcs = None
        if not done or crcs != state.get("crc"):
            self.begin_split(split, count, schema)
            return 0
        self._crcs[split] = crcs
        return done

    def write(self, split, start, x, y):
        xs, ys = self._arrays[split]
        stored = np.ascontiguousarray(x)
        targets = np.ascontiguousarray(y)
        xs[start : start + len(x)] = stored
        ys[start : start + len(y)] = targets
        crcs = self._crcs[split]
        crcs[0], crcs[1] = zlib.crc32(stored, crcs[0]), zlib.crc32(targets, crcs[1])

    def commit(self, split, done):
        state = {"crc": list(self._crcs.get(split, [0, 0]))}
        if done == self._counts[split] and split in self._arrays:
            for array in self._arrays.pop(split):
                array.flush()
        return state

    def final_files(self, split, done):
        return (
            [array_path(self.path, split, "x"), array_path(self.path, split, "y")]
            if done == self._counts[split]
            else []
        )

    def path_of(self, split, index):
        return array_path(self.path, split, "x")

    # parallel: the arrays are made here (begin_split); workers write their rows through a memmap of
    # the same file, and the running CRC is taken here from the rows they wrote
    def write_part(self, split, start, x, y, spec):
        xs = np.lib.format.open_memmap(array_path(self.path, split, "x"), mode="r+")
        xs[start : start + len(x)] = x
        xs.flush()
        del xs

    def absorb_part(self, split, start, y, result):
        xs, ys = self._arrays[split]
        targets = np.ascontiguousarray(y)
        ys[start : start + len(y)] = targets
        crcs = self._crcs[split]
        crcs[0], crcs[1] = (
            zlib.crc32(np.ascontiguousarray(xs[start : start + len(y)]), crcs[0]),
            zlib.crc32(targets, crcs[1]),
        )

    def close(self):
        for xs, ys in self._arrays.values():
            xs.flush()
            ys.flush()
        self._arrays = {}


class Store(ChunkedStore):
    """Rows come from the units of ``CHECK_UNIT`` rows as from chunks (``ChunkedStore``): a unit a
    batch draws many rows from is read whole with one ``os.preadv`` (no page faults, the GIL
    released, read ahead whole by ``will_need``) and kept decoded; scattered rows come through the
    memmap, which costs each only its own pages."""

    format_name = NAME
    damage_errors = (OSError, EOFError, ValueError)  # numpy: a memmap of a file cut short
    reads_ahead = True

    def _reset_handles(self):
        super()._reset_handles()
        # a live memmap keeps its pages cached: closing drops them, so that a cold read is cold
        self._maps: dict[tuple[str, str], np.memmap] = {}

    def _map(self, split: str, name: str) -> np.ndarray:
        key = (split, name)
        if key not in self._maps:
            path = array_path(self.path, split, name)
            try:
                array = np.load(path, mmap_mode="r")
            except HEADER_ERRORS as e:
                raise CorruptStoreError(
                    f"{path}: cannot read as .npy ({e}); re-convert with `ooc convert --format npy "
                    "--overwrite`"
                ) from None
            expected = self.num_samples(split)
            shape, dtype = (
                ((expected, *self.sample_shape), self.schema.dtype)
                if name == "x"
                else ((expected, *self.schema.target_shape), self.schema.target_dtype)
            )
            if array.shape != shape or array.dtype != dtype:
                raise CorruptStoreError(
                    f"{path}: holds {array.dtype} {array.shape}, the manifest says {dtype} {shape}; "
                    "re-convert with `ooc convert --format npy --overwrite`"
                )
            if name == "x" and hasattr(mmap, "MADV_RANDOM") and isinstance(array, np.memmap):
                # Random rows: without this each page fault reads ahead 128 KiB or more, which out of core
                # cost 36x in samples/s (a 3 GB store under 1 GiB: 330 -> 12,000 samples/s); the
                # sequential reads (a unit's check, will_need) ask for their read-ahead explicitly.
                array._mmap.madvise(mmap.MADV_RANDOM)
            self._maps[key] = array
        return self._maps[key]

    @property
    def chunk_size(self):
        return None  # no chunks in the file: the units below are ooc's own

    @property
    def check_unit(self):
        return CHECK_UNIT

    @property
    def shuffle_unit(self):
        """A run of rows read as one: the chunk shuffle's stretches are then a few contiguous runs,
        which out of core read ahead whole, instead of random rows, a page fault each."""
        return CHECK_UNIT

    def _samples_with(self, split, index):
        return range(index, index + 1)  # a damaged unit loses no more than its damaged rows

    def _check_manifest(self):
        for split in self.splits:  # the headers: shape and dtype (the maps are kept open)
            self._map(split, "x"), self._map(split, "y")

    def _read_labels(self, split):
        return np.array(self._map(split, "y"))

    def _file_of(self, split, index):
        return array_path(self.path, split, "x")

    def _targets_file(self, split):
        return array_path(self.path, split, "y")

    def _read_rows(self, split, start, stop):
        array = self._map(split, "x")
        rows = np.empty((stop - start, *array.shape[1:]), array.dtype)
        offset = array.offset + start * array.strides[0]
        got = read_into(array.filename, offset, memoryview(rows).cast("B"), direct=self._reads_direct())
        if got != rows.nbytes:
            raise EOFError(f"{array.filename}: {got} of {rows.nbytes} bytes at offset {offset}")
        return rows

    def _points_are_cheaper(self, hits):
        return hits * ROWS_PER_HIT < CHECK_UNIT

    def _read_points(self, split, indices):
        return self._map(split, "x")[indices]

    def _advise_chunks(self, split, chunk_ids):
        array = self._map(split, "x")
        unit = CHECK_UNIT * array.strides[0]
        advise_will_need(array.filename, [(array.offset + c * unit, unit) for c in chunk_ids])

    def _advise_points(self, split, indices):
        """The pages of scattered rows, one by one (units read whole are read ahead whole)."""
        array = self._map(split, "x")
        row, page = array.strides[0], mmap.PAGESIZE
        starts = array.offset + np.unique(indices) * row
        first, last = starts // page * page, (starts + row + page - 1) // page * page
        advise_will_need(array.filename, list(zip(first.tolist(), (last - first).tolist())))

    def _unit_rows(self, split, start, stop):
        array = self._map(split, "x")  # a view of the map: the CRC reads the pages, no copy
        row = array.strides[0]  # one read-ahead of the unit's bytes, not a page fault a page
        advise_will_need(array.filename, [(array.offset + start * row, (stop - start) * row)])
        return array[start:stop]
