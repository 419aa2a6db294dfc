"""One Parquet file per split, ``<store>/train.parquet``: one row per sample, columns ``image`` and
``label``, row groups of ``chunk_size`` rows. ``pandas.read_parquet`` reads it as is.

``image`` is ``fixed_size_binary[h*w]`` (the raw uint8 pixels, row-major) or, for ``--dtype
float32``, ``fixed_size_list<float>[h*w]``; the schema metadata holds ``ooc.sample_shape``. Fixed
sizes keep a row group's pixels one contiguous buffer, so a chunk becomes a numpy array without a
per-row copy. The image column gets neither dictionary encoding nor statistics (every value is
unique: both only cost space).

Reads go row group by row group through ``ChunkedStore``'s cache.

An interrupted conversion keeps the files of the splits it finished and starts the split it was
writing over: a Parquet file killed mid-write has no footer (the row groups' index), so it cannot
be trusted or appended to.
"""

from __future__ import annotations

import json

import numpy as np

from ooc.errors import CorruptStoreError
from ooc.formats.base import ChunkedStore, LayoutOptions, Writer as _Writer, encode

NAME = "parquet"
OPTIONS = LayoutOptions(compressions=("none", "snappy", "zstd", "gzip"), default_compression="zstd",
                        dtypes=("uint8", "float32"), default_dtype="uint8", default_chunk_size=1024)
SHAPE_KEY = b"ooc.sample_shape"


def file_path(store, split: str):
    return store / f"{split}.parquet"


def _pyarrow():
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa, pq


class Writer(_Writer):
    def begin_split(self, split, count, sample_shape, label_dtype):
        pa, pq = _pyarrow()
        self._files = getattr(self, "_files", {})
        self._counts = {**getattr(self, "_counts", {}), split: count}
        width = int(np.prod(sample_shape))
        image_type = pa.binary(width) if self.dtype == "uint8" else pa.list_(pa.float32(), width)
        schema = pa.schema([("image", image_type), ("label", pa.from_numpy_dtype(label_dtype))],
                           metadata={SHAPE_KEY: json.dumps(list(sample_shape)).encode()})
        self._files[split] = pq.ParquetWriter(file_path(self.path, split), schema, compression=self.compression,
                                              use_dictionary=["label"], write_statistics=["label"])

    def write(self, split, start, x, y):
        pa, _ = _pyarrow()
        writer = self._files[split]
        pixels = np.ascontiguousarray(encode(x, self.dtype)).reshape(-1)
        image_type = writer.schema.field("image").type
        if self.dtype == "uint8":
            images = pa.FixedSizeBinaryArray.from_buffers(image_type, len(x), [None, pa.py_buffer(pixels)])
        else:
            images = pa.FixedSizeListArray.from_arrays(pa.array(pixels), image_type.list_size)
        table = pa.Table.from_arrays([images, pa.array(y)], schema=writer.schema)
        writer.write_table(table, row_group_size=self.chunk_size)

    def commit(self, split, done):
        if done == self._counts[split] and split in self._files:
            self._files.pop(split).close()  # a finished split's file is final, kept by a resumed conversion
        return {}

    def resume_split(self, split, count, sample_shape, label_dtype, done, state):
        if done == count:
            self._counts = {**getattr(self, "_counts", {}), split: count}
            return done  # the finished file was checked against the journal
        return super().resume_split(split, count, sample_shape, label_dtype, done, state)

    def final_files(self, split, done):
        return [file_path(self.path, split)] if done == self._counts[split] else []

    def path_of(self, split, index):
        return file_path(self.path, split)

    def close(self):
        for writer in getattr(self, "_files", {}).values():
            writer.close()
        self._files = {}


class Store(ChunkedStore):
    format_name = NAME

    def __init__(self, path, manifest):
        super().__init__(path, manifest)
        self._files = {}

    def _file(self, split: str):
        if split not in self._files:
            _, pq = _pyarrow()
            path = file_path(self.path, split)
            try:
                parquet = pq.ParquetFile(path)
            except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
                raise CorruptStoreError(f"{path}: cannot open as Parquet ({e}); re-convert with `ooc convert --format parquet --overwrite`") from None
            if parquet.metadata.num_rows != self.num_samples(split):
                raise CorruptStoreError(f"{path}: holds {parquet.metadata.num_rows} rows, the manifest says {self.num_samples(split)}; re-convert with `ooc convert --format parquet --overwrite`")
            self._files[split] = parquet
        return self._files[split]

    def _read_labels(self, split):
        self._file(split)  # checks the row count
        # a handle of its own: a ParquetFile must not serve two threads at once (chunk reads hold the chunk lock)
        _, pq = _pyarrow()
        return pq.read_table(file_path(self.path, split), columns=["label"], use_threads=False).column("label").to_numpy()

    def _file_of(self, split, index):
        return file_path(self.path, split)

    def _read_rows(self, split, start, stop):
        size = self.chunk_size
        groups = list(range(start // size, -(-stop // size)))
        column = self._file(split).read_row_groups(groups, columns=["image"], use_threads=False).column("image").combine_chunks()
        n = len(column)
        if self.options["dtype"] == "uint8":
            width = column.type.byte_width
            pixels = np.frombuffer(column.buffers()[1], np.uint8, count=n * width, offset=column.offset * width)
        else:
            pixels = column.flatten().to_numpy()
        return pixels.reshape((n, *self.sample_shape))

    def close(self):
        super().close()
        for parquet in self._files.values():
            parquet.close()
        self._files = {}

    def _closed_state(self):
        return {"_files": {}}
