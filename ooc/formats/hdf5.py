"""One HDF5 file, ``<store>/data.h5``, with datasets ``<split>/x`` (n, *sample_shape) and ``<split>/y``
(n, *target_shape), chunked along the sample axis, in the source's dtypes.

An interrupted conversion starts over: an HDF5 file killed mid-write cannot be trusted (its chunk
index and free-space data live in the file and are updated in place), so re-running the conversion
rewrites ``data.h5`` from the first sample of every split.

Reads go chunk by chunk through ``ChunkedStore``'s cache. An uncompressed chunk with only a few
wanted rows is read as points instead, because h5py's point selection costs ~30 µs a row while
a slice of cached data costs ~0.1 µs a row; compressed chunks are always decoded whole.
"""

from __future__ import annotations

import numpy as np

from ooc.direct_io import advise_will_need, read_into
from ooc.errors import CorruptStoreError
from ooc.formats.base import LayoutOptions
from ooc.formats.base import Writer as _Writer
from ooc.formats.chunked import ChunkedStore

NAME = "hdf5"
FILE_NAME = "data.h5"
OPTIONS = LayoutOptions(
    compressions=("none", "gzip", "lzf"),
    default_compression="none",
    default_chunk_size=1024,
    bench_variants=({"compression": "gzip"},),
    out_of_core=True,
)
GZIP_LEVEL = 4
# Reading a whole uncompressed chunk beats point reads while it holds at most this many rows per
# wanted row (measured: point read ~30 µs, sliced row ~0.1 µs from the page cache).
SLICE_ROWS_PER_HIT = 256


def _h5py():
    import h5py

    return h5py


class Writer(_Writer):
    """Neither resumable nor parallel: one file, which only one process can write without MPI."""

    one_process_because = "one file, data.h5, which only one process can write without MPI"

    def __init__(self, path, **options):
        super().__init__(path, **options)
        self._file = None

    def begin_split(self, split, count, schema):
        if self._file is None:
            self._file = _h5py().File(self.path / FILE_NAME, "w")
        compression = None if self.compression == "none" else self.compression
        opts = {"compression_opts": GZIP_LEVEL} if compression == "gzip" else {}
        group = self._file.create_group(split)
        group.create_dataset(
            "x",
            shape=(count, *schema.sample_shape),
            dtype=schema.dtype,
            chunks=(max(1, min(self.chunk_size, count)), *schema.sample_shape),
            compression=compression,
            **opts,
        )
        group.create_dataset(
            "y",
            shape=(count, *schema.target_shape),
            dtype=schema.target_dtype,
            chunks=(max(1, min(1 << 16, count)), *schema.target_shape),
            compression=compression,
            **opts,
        )

    def write(self, split, start, x, y):
        group = self._file[split]
        group["x"][start : start + len(x)] = x
        group["y"][start : start + len(y)] = y

    def path_of(self, split, index):
        return self.path / FILE_NAME

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


class Store(ChunkedStore):
    format_name = NAME

    reads_ahead = True

    def _reset_handles(self):
        super()._reset_handles()
        self._file = None
        self._raw_chunks: dict[str, np.ndarray | None] = {}  # split -> file offset of each chunk, or None

    def _dataset(self, split: str, name: str):
        if self._file is None:
            path = self.path / FILE_NAME
            chunk_bytes = (
                self.options["chunk_size"] * int(np.prod(self.sample_shape)) * self.schema.dtype.itemsize
            )
            try:
                # room for a few chunks: enough for any run we slice, bounded whatever the data size
                # no HDF5 file locks: a finished store is never written again (the manifest comes last),
                # and locks only fail readers on filesystems without flock (NFS, some containers)
                self._file = _h5py().File(path, "r", rdcc_nbytes=max(1 << 20, 4 * chunk_bytes), locking=False)
            except OSError as e:
                raise CorruptStoreError(
                    f"{path}: cannot open as HDF5 ({e}); re-convert with `ooc convert --format hdf5 "
                    "--overwrite`"
                ) from None
        try:
            return self._file[split][name]
        except KeyError:
            raise CorruptStoreError(
                f"{self.path / FILE_NAME}: dataset {split}/{name} is missing; re-convert with `ooc convert "
                "--format hdf5 --overwrite`"
            ) from None

    @property
    def check_unit(self):  # gzip chunks carry zlib's adler32; uncompressed and lzf ones nothing
        return self.chunk_size if self.options["compression"] in ("none", "lzf") else None

    def _check_manifest(self):
        for split in self.splits:
            x, y = self._dataset(split, "x"), self._dataset(split, "y")
            where = self.path / FILE_NAME
            self._check_array(where, split, "x", x.shape, x.dtype, (x.chunks or x.shape)[0])
            self._check_array(where, split, "y", y.shape, y.dtype)

    def _read_labels(self, split):
        return self._dataset(split, "y")[:]

    def _file_of(self, split, index):
        return self.path / FILE_NAME

    def _read_rows(self, split, start, stop):
        places = self._offsets(split)
        if places is None:
            return self._dataset(split, "x")[start:stop]
        size = self.chunk_size
        first, last = start // size, -(-stop // size)
        rows = np.empty(((last - first) * size, *self.sample_shape), self.schema.dtype)
        view, chunk_bytes = memoryview(rows).cast("B"), rows.nbytes // (last - first)
        direct = self._reads_direct()
        for c in range(first, last):
            part = view[(c - first) * chunk_bytes : (c - first + 1) * chunk_bytes]
            if read_into(self.path / FILE_NAME, int(places[c]), part, direct=direct) != chunk_bytes:
                raise EOFError(f"{self.path / FILE_NAME}: chunk {c} of {split}/x is cut short")
        return rows[: stop - start]

    def _reads_ahead_here(self):
        """Uncompressed chunks are read as raw bytes with ``os.preadv`` (the GIL released, so in the
        reader thread while the caller decodes), from the offsets of HDF5's chunk index, read once;
        anything else (filters, another byte order, a chunk never written) goes through h5py."""
        return all(self._offsets(split) is not None for split in self.splits)

    def _offsets(self, split):
        """The file offset of each chunk of ``split``'s samples (None: read through h5py), found once."""
        if split not in self._raw_chunks:
            self._raw_chunks[split] = self._chunk_offsets(split)
        return self._raw_chunks[split]

    def _chunk_offsets(self, split):
        dataset = self._dataset(split, "x")
        full = (self.chunk_size, *self.sample_shape)
        if self.options["compression"] != "none" or dataset.chunks != full or not dataset.dtype.isnative:
            return None
        chunk_bytes = int(np.prod(full)) * dataset.dtype.itemsize
        infos = []
        dataset.id.chunk_iter(infos.append)  # the whole index in one call: ~100x get_chunk_info's loop
        if len(infos) != -(-self.num_samples(split) // self.chunk_size) or any(
            i.filter_mask or i.size != chunk_bytes or i.byte_offset is None for i in infos
        ):
            return None
        offsets = np.empty(len(infos), np.int64)
        for info in infos:
            offsets[info.chunk_offset[0] // self.chunk_size] = info.byte_offset
        return offsets

    def _advise_chunks(self, split, chunk_ids):
        dataset = self._dataset(split, "x")
        rank = len(self.sample_shape)
        ranges = []
        for c in chunk_ids:  # where the chunk index says each chunk's bytes are
            info = dataset.id.get_chunk_info_by_coord((c * self.chunk_size, *[0] * rank))
            if info.byte_offset is not None:  # None: a chunk never written
                ranges.append((info.byte_offset, info.size))
        advise_will_need(self.path / FILE_NAME, ranges)

    def _points_are_cheaper(self, hits):
        return self.options["compression"] == "none" and hits * SLICE_ROWS_PER_HIT < self.chunk_size

    def _read_points(self, split, indices):
        return self._dataset(split, "x")[indices]

    def close(self):
        if self._file is not None:
            self._file.close()
        super().close()
