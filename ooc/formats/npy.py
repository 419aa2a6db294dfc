"""Raw ``.npy`` arrays, one pair per split: ``<store>/train_x.npy`` (n, h, w) and
``<store>/train_y.npy`` (n,). ``np.load(path, mmap_mode="r")`` reads them as is.

Written through ``np.lib.format.open_memmap`` chunk by chunk, read through a read-only memmap:
no chunks, no codec, so any sample costs only its own pages — the physical bound for reading this
payload, as a layout of its own.
"""

from __future__ import annotations

import numpy as np

from ooc.errors import CorruptStoreError
from ooc.formats.base import LayoutOptions, Store as _Store, Writer as _Writer, encode

NAME = "npy"
OPTIONS = LayoutOptions(compressions=("none",), default_compression="none", dtypes=("uint8", "float32"),
                        default_dtype="uint8", default_chunk_size=None, chunking="none (one contiguous array per split)")


def array_path(store, split: str, name: str):
    return store / f"{split}_{name}.npy"


class Writer(_Writer):
    def begin_split(self, split, count, sample_shape, label_dtype):
        self._arrays = getattr(self, "_arrays", {})
        self._arrays[split] = (
            np.lib.format.open_memmap(array_path(self.path, split, "x"), mode="w+", dtype=self.dtype, shape=(count, *sample_shape)),
            np.lib.format.open_memmap(array_path(self.path, split, "y"), mode="w+", dtype=label_dtype, shape=(count,)),
        )

    def write(self, split, start, x, y):
        xs, ys = self._arrays[split]
        xs[start:start + len(x)] = encode(x, self.dtype)
        ys[start:start + len(y)] = y

    def close(self):
        for xs, ys in getattr(self, "_arrays", {}).values():
            xs.flush()
            ys.flush()
        self._arrays = {}


class Store(_Store):
    format_name = NAME

    def __init__(self, path, manifest):
        super().__init__(path, manifest)
        self._maps: dict[tuple[str, str], np.memmap] = {}

    def _map(self, split: str, name: str) -> np.ndarray:
        key = (split, name)
        if key not in self._maps:
            path = array_path(self.path, split, name)
            try:
                array = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise CorruptStoreError(f"{path}: cannot read as .npy ({e}); re-convert with `ooc convert --format npy --overwrite`") from None
            expected = self.num_samples(split)
            if array.shape[0] != expected:
                raise CorruptStoreError(f"{path}: holds {array.shape[0]} samples, the manifest says {expected}; re-convert with `ooc convert --format npy --overwrite`")
            self._maps[key] = array
        return self._maps[key]

    def _read_labels(self, split):
        return np.array(self._map(split, "y"))

    def _read_sorted(self, split, indices):
        return self._map(split, "x")[indices]

    def close(self):
        self._maps = {}  # a live memmap keeps its pages cached: drop them so a cold read is cold

    def _closed_state(self):
        return {"_maps": {}}
