"""A Zarr v3 group: the store directory is the group, with arrays ``<split>/x`` (n, h, w) and
``<split>/y`` (n,), chunked along the sample axis. ``zarr.open_group(store)`` reads it as is.

Reads go chunk by chunk through ``ChunkedStore``'s cache; a run of adjacent chunks is one slice,
which zarr fetches and decodes concurrently.
"""

from __future__ import annotations


from ooc.errors import CorruptStoreError
from ooc.formats.base import ChunkedStore, LayoutOptions, Writer as _Writer, encode

NAME = "zarr"
OPTIONS = LayoutOptions(compressions=("none", "zstd", "blosc", "gzip"), default_compression="zstd",
                        dtypes=("uint8", "float32"), default_dtype="uint8", default_chunk_size=1024)


def _compressors(name: str):
    from zarr import codecs

    return {
        "none": None,
        "zstd": [codecs.ZstdCodec(level=3)],
        "blosc": [codecs.BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")],
        "gzip": [codecs.GzipCodec(level=4)],
    }[name]


class Writer(_Writer):
    def begin_split(self, split, count, sample_shape, label_dtype):
        import zarr

        if not hasattr(self, "_group"):
            self._group = zarr.open_group(self.path, mode="a", zarr_format=3)
        compressors = _compressors(self.compression)
        self._group.create_array(f"{split}/x", shape=(count, *sample_shape), dtype=self.dtype,
                                 chunks=(max(1, min(self.chunk_size, count)), *sample_shape),
                                 compressors=compressors, dimension_names=("sample", "row", "col"))
        self._group.create_array(f"{split}/y", shape=(count,), dtype=label_dtype,
                                 chunks=(max(1, min(1 << 16, count)),), compressors=compressors,
                                 dimension_names=("sample",))

    def write(self, split, start, x, y):
        self._group[f"{split}/x"][start:start + len(x)] = encode(x, self.dtype)
        self._group[f"{split}/y"][start:start + len(y)] = y

    def close(self):
        self._group = None


class Store(ChunkedStore):
    format_name = NAME
    _group = None

    def _array(self, split: str, name: str):
        import zarr

        if self._group is None:
            try:
                self._group = zarr.open_group(self.path, mode="r")
            except (FileNotFoundError, ValueError) as e:
                raise CorruptStoreError(f"{self.path}: cannot open as a Zarr group ({e}); re-convert with `ooc convert --format zarr --overwrite`") from None
        try:
            return self._group[f"{split}/{name}"]
        except KeyError:
            raise CorruptStoreError(f"{self.path}: array {split}/{name} is missing; re-convert with `ooc convert --format zarr --overwrite`") from None

    def _read_labels(self, split):
        return self._array(split, "y")[:]

    def _read_rows(self, split, start, stop):
        return self._array(split, "x")[start:stop]

    def close(self):
        super().close()
        self._group = None

    def _closed_state(self):
        return {"_group": None}
