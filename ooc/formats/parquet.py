"""One Parquet file per split, ``<store>/train.parquet``: one row per sample, columns ``image`` and
``label``, row groups of ``chunk_size`` rows. ``pandas.read_parquet`` reads it as is.

``image`` holds a sample's values, row-major: ``fixed_size_binary[size]`` for uint8 (the raw bytes),
else ``fixed_size_list<T>[size]`` of the stored type; ``label`` a scalar target, or a
``fixed_size_list`` for a vector target; the schema metadata holds ``ooc.sample_shape``. Fixed
sizes keep a row group's pixels one contiguous buffer, so a chunk becomes a numpy array without a
per-row copy. The image column gets neither dictionary encoding nor statistics (every value is
unique: both only cost space).

Reads go row group by row group through ``ChunkedStore``'s cache.

An interrupted conversion keeps the files of the splits it finished and starts the split it was
writing over: a Parquet file killed mid-write has no footer (the row groups' index), so it cannot
be trusted or appended to.

A store may be a URL (``s3://bucket/mnist.parquet``, see ``ooc.remote``): pyarrow reads and writes
through the fsspec filesystem; the row groups a batch misses are fetched concurrently (one range
request per run of adjacent row groups, through s3fs's async ``cat_ranges``), then decoded from memory.
"""

from __future__ import annotations

import io
import json

import numpy as np

from ooc.cache import store_key
from ooc.errors import CorruptStoreError
from ooc.formats.base import LayoutOptions, Resumable
from ooc.formats.base import Writer as _Writer
from ooc.formats.chunked import ChunkedStore
from ooc.fs import is_remote

NAME = "parquet"
OPTIONS = LayoutOptions(
    compressions=("none", "snappy", "zstd", "gzip"),
    default_compression="zstd",
    default_chunk_size=1024,
    remote=True,
)
SHAPE_KEY = b"ooc.sample_shape"


def file_path(store, split: str):
    return store / f"{split}.parquet"


def _pyarrow():
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa, pq


def _column(values: np.ndarray, n: int):
    """``n`` rows of ``values`` (n, ...) as one fixed-size Arrow column (a plain one for scalars)."""
    pa, _ = _pyarrow()
    flat = np.ascontiguousarray(values).reshape(-1)
    width = flat.size // n if n else int(np.prod(values.shape[1:]))
    if values.ndim == 1:
        return pa.array(flat)
    if values.dtype == np.uint8:
        return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(flat)])
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), width)


def _arrow_type(dtype: np.dtype, shape: tuple[int, ...]):
    pa, _ = _pyarrow()
    width = int(np.prod(shape))
    if not shape:
        return pa.from_numpy_dtype(dtype)
    return pa.binary(width) if dtype == np.uint8 else pa.list_(pa.from_numpy_dtype(dtype), width)


def _values(column, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """A fixed-size column back to (n, *shape) values of ``dtype`` (one buffer, no per-row copy)."""
    n = len(column)
    if not shape:
        return column.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    if dtype == np.uint8:
        width = column.type.byte_width
        values = np.frombuffer(column.buffers()[1], np.uint8, count=n * width, offset=column.offset * width)
    else:
        values = column.flatten().to_numpy(zero_copy_only=False)
    return values.reshape((n, *shape))


class Writer(_Writer, Resumable):
    """Resumes split by split: a finished split's file is final; the one being written starts over."""

    one_process_because = "one file per split, which only one process can write"
    resume_unit = "split"

    def __init__(self, path, **options):
        super().__init__(path, **options)
        self._files: dict = {}  # split -> open ParquetWriter
        self._objects: dict = {}  # split -> open fsspec file, for a URL
        self._counts: dict[str, int] = {}

    def begin_split(self, split, count, schema):
        pa, pq = _pyarrow()
        self._counts[split] = count
        table_schema = pa.schema(
            [
                ("image", _arrow_type(schema.dtype, schema.sample_shape)),
                ("label", _arrow_type(schema.target_dtype, schema.target_shape)),
            ],
            metadata={SHAPE_KEY: json.dumps(list(schema.sample_shape)).encode()},
        )
        where = file_path(self.path, split)
        if is_remote(where):  # an fsspec file: a multipart upload, completed when closed
            self._objects[split] = where.fs.open(where.key, "wb")
            where = self._objects[split]
        self._files[split] = pq.ParquetWriter(
            where,
            table_schema,
            compression=self.compression,
            use_dictionary=["label"],
            write_statistics=["label"],
        )

    def write(self, split, start, x, y):
        pa, _ = _pyarrow()
        writer = self._files[split]
        table = pa.Table.from_arrays([_column(x, len(x)), _column(y, len(y))], schema=writer.schema)
        writer.write_table(table, row_group_size=self.chunk_size)

    def commit(self, split, done):
        if done == self._counts[split] and split in self._files:
            self._files.pop(split).close()  # a finished split's file is final, kept by a resumed conversion
            if split in self._objects:
                self._objects.pop(split).close()
        return {}

    def resume_split(self, split, count, schema, done, state):
        self._counts[split] = count
        if done == count:
            return done  # the finished file was checked against the journal
        self.begin_split(split, count, schema)
        return 0

    def final_files(self, split, done):
        return [file_path(self.path, split)] if done == self._counts[split] else []

    def path_of(self, split, index):
        return file_path(self.path, split)

    def close(self):
        for writer in self._files.values():
            writer.close()
        for handle in self._objects.values():
            handle.close()
        self._files, self._objects = {}, {}


def _row_group_range(row_group) -> tuple[int, int]:
    """(first byte, end) of a row group's column chunks in the file."""
    starts, ends = [], []
    for i in range(row_group.num_columns):
        column = row_group.column(i)
        start = (
            column.dictionary_page_offset
            if column.has_dictionary_page and column.dictionary_page_offset
            else column.data_page_offset
        )
        starts.append(start)
        ends.append(start + column.total_compressed_size)
    return min(starts), max(ends)


def _row_groups(metadata):
    return (metadata.row_group(g) for g in range(metadata.num_row_groups))


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


class _Parts(io.RawIOBase):
    """A read-only file of which only some byte ranges are known (fetched beforehand): what pyarrow
    reads a remote store's row groups from. A read outside them is an error, never a silent fetch."""

    def __init__(self, parts: list[tuple[int, bytes]], size: int):
        self._parts, self._size, self._pos = parts, size, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=io.SEEK_SET):
        self._pos = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence] + offset
        return self._pos

    def tell(self):
        return self._pos

    def read(self, n=-1):
        n = self._size - self._pos if n is None or n < 0 else min(n, self._size - self._pos)
        for start, blob in self._parts:
            if start <= self._pos and self._pos + n <= start + len(blob):
                data = blob[self._pos - start : self._pos - start + n]
                self._pos += n
                return data
        raise OSError(f"bytes {self._pos}–{self._pos + n} were not fetched")


class Store(ChunkedStore):
    format_name = NAME
    damage_errors = (OSError, EOFError, ValueError)  # pyarrow's ArrowInvalid is a ValueError

    def _reset_handles(self):
        super()._reset_handles()
        self._files = {}  # split -> open ParquetFile
        self._sizes = {}  # split -> a remote file's size

    def _file(self, split: str):
        if split not in self._files:
            _, pq = _pyarrow()
            path = file_path(self.path, split)
            try:
                if is_remote(path):  # range requests only, no read-ahead: a chunk read fetches its row groups
                    handle = path.fs.open(path.key, "rb", cache_type="none")
                    self._sizes[split] = handle.size
                    parquet = pq.ParquetFile(handle, pre_buffer=True)
                else:
                    parquet = pq.ParquetFile(path)
            except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
                raise CorruptStoreError(
                    f"{path}: cannot open as Parquet ({' '.join(str(e).split())}); re-convert with `ooc convert "
                    "--format parquet "
                    "--overwrite`"
                ) from None
            if parquet.metadata.num_rows != self.num_samples(split):
                raise CorruptStoreError(
                    f"{path}: holds {parquet.metadata.num_rows} rows, the manifest says "
                    f"{self.num_samples(split)}; re-convert with `ooc convert --format parquet --overwrite`"
                )
            self._check_types(path, parquet.schema_arrow)
            self._files[split] = parquet
        return self._files[split]

    @property
    def check_unit(self):
        """Every row group, whatever the codec: pyarrow writes no page checksums, and a flipped bit in a
        zstd page decodes to other pixels (31 of 40 random flips read back wrong, measured)."""
        return None if is_remote(self.path) else self.chunk_size

    def _check_manifest(self):
        for split in self.splits:
            metadata, where = self._file(split).metadata, file_path(self.path, split)  # checks the row count
            shape = json.loads((metadata.metadata or {}).get(SHAPE_KEY, b"null"))
            rows = metadata.row_group(0).num_rows if metadata.num_row_groups else 0
            n = self.num_samples(split)
            if shape != list(self.sample_shape) or (n and rows != min(self.chunk_size, n)):
                raise CorruptStoreError(
                    f"{where}: holds samples of shape {shape} in row groups of {rows}, the manifest says "
                    f"{list(self.sample_shape)} in row groups of {min(self.chunk_size, n)}; re-convert the store"
                )

    def _check_types(self, path, schema) -> None:
        """The file's columns are what the manifest declares (an edited manifest would misread them)."""
        for column, dtype, shape in (
            ("image", self.schema.dtype, self.sample_shape),
            ("label", self.schema.target_dtype, self.schema.target_shape),
        ):
            expected = _arrow_type(dtype, shape)
            found = schema.field(column).type if column in schema.names else None
            if found != expected:
                raise CorruptStoreError(
                    f"{path}: its {column} column is {found}, but the manifest declares {dtype} {column}s of "
                    f"shape {tuple(shape)} ({expected}): the manifest was edited; re-convert with `ooc "
                    "convert --format parquet --overwrite`"
                )

    def _read_labels(self, split):
        self._file(split)  # checks the row count
        # a handle of its own: a ParquetFile must not serve two threads at once (chunk reads hold the chunk lock)
        _, pq = _pyarrow()
        path = file_path(self.path, split)
        if is_remote(path):
            table = pq.read_table(path.key, filesystem=path.fs, columns=["label"], use_threads=False)
        else:
            table = pq.read_table(path, columns=["label"], use_threads=False)
        return _values(
            table.column("label").combine_chunks(), self.schema.target_dtype, self.schema.target_shape
        )

    def _file_of(self, split, index):
        return file_path(self.path, split)

    def _read_rows(self, split, start, stop):
        size = self.chunk_size
        groups = list(range(start // size, -(-stop // size)))
        column = (
            self._file(split)
            .read_row_groups(groups, columns=["image"], use_threads=False)
            .column("image")
            .combine_chunks()
        )
        return self._pixels(column)

    def _pixels(self, column):
        return _values(column, self.schema.dtype, self.sample_shape)

    def largest_unit(self):  # the largest row group's byte range (the footers are read when opened)
        sizes = [
            end - start
            for split in self.splits
            for start, end in map(_row_group_range, _row_groups(self._file(split).metadata))
        ]
        return max(sizes, default=None)

    def _read_chunks(self, split, chunk_ids):
        size, count = self.chunk_size, self.num_samples(split)
        if not is_remote(self.path) or (len(chunk_ids) < 2 and self.cache is None):
            return None
        # remote: the byte ranges of every missing row group fetched concurrently (adjacent ones
        # merged), then decoded by pyarrow from memory with the footer already read
        metadata, path = self._file(split).metadata, file_path(self.path, split)
        if self.cache is not None:
            parts = self._ranges_through_cache(split, metadata, chunk_ids)
        else:
            ranges = _merged([_row_group_range(metadata.row_group(g)) for g in chunk_ids])
            blobs = path.fs.cat_ranges(
                [path.key] * len(ranges), [a for a, _ in ranges], [b for _, b in ranges]
            )
            parts = [(a, blob) for (a, _), blob in zip(ranges, blobs)]
        _, pq = _pyarrow()
        parts = _Parts(parts, self._sizes[split])
        column = (
            pq.ParquetFile(parts, metadata=metadata)
            .read_row_groups(chunk_ids, columns=["image"], use_threads=False)
            .column("image")
        )
        fetched, at = {}, 0
        for c in chunk_ids:
            n = min((c + 1) * size, count) - c * size
            fetched[c] = self._pixels(column.slice(at, n).combine_chunks()).copy()
            at += n
        return fetched

    def _ranges_through_cache(self, split, metadata, chunk_ids) -> list[tuple[int, bytes]]:
        """(offset, bytes) of the row groups' byte ranges, adjacent ones joined: each row group from
        the cache, else fetched with the others missing (one range request per run of adjacent ones,
        concurrently) and kept. A unit is named by its byte range, so another file never matches."""

        path, key = file_path(self.path, split), store_key(self.path, self.manifest)
        ranges = {g: _row_group_range(metadata.row_group(g)) for g in chunk_ids}
        names = {g: f"{split}.parquet@{a}-{b}" for g, (a, b) in ranges.items()}
        blobs = {g: self.cache.get(key, names[g]) for g in chunk_ids}
        missing = [g for g in chunk_ids if blobs[g] is None]
        if missing:
            runs = _merged([ranges[g] for g in missing])
            fetched = path.fs.cat_ranges([path.key] * len(runs), [a for a, _ in runs], [b for _, b in runs])
            for g in missing:
                a, b = ranges[g]
                start, run = next(
                    (start, blob) for (start, end), blob in zip(runs, fetched) if start <= a < end
                )
                blobs[g] = run[a - start : b - start]
                self.cache.put(key, names[g], blobs[g])
        parts: list[tuple[int, bytes]] = []
        for g in sorted(chunk_ids, key=lambda g: ranges[g][0]):
            a, b = ranges[g]
            if parts and parts[-1][0] + len(parts[-1][1]) == a:
                parts[-1] = (parts[-1][0], parts[-1][1] + blobs[g])
            else:
                parts.append((a, blobs[g]))
        return parts

    def close(self):
        for parquet in self._files.values():
            parquet.close()
        super().close()
