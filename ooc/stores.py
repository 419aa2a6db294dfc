"""Opening stores: from a directory (the manifest says which layout), or from memory as a baseline."""

from __future__ import annotations

import os

import numpy as np

from ooc.errors import FormatMismatchError
from ooc.formats import get_format
from ooc.formats.base import Store
from ooc.manifest import read_manifest
from ooc.sources import NpzSource


def open_store(path: str | os.PathLike, *, expect_format: str | None = None) -> Store:
    """The store at ``path``, of whatever layout its manifest names.

    ``expect_format`` guards against training on another layout than the caller meant.
    """
    manifest = read_manifest(path)
    fmt = manifest["format"]
    if expect_format is not None and fmt != expect_format:
        raise FormatMismatchError(f"{path} holds a {fmt} store, not {expect_format}: pass --store {fmt}, or --path to a {expect_format} store")
    return get_format(fmt).Store(path, manifest)


class MemoryStore(Store):
    """Every split held in numpy arrays: the in-memory baseline, read through the same surface."""

    format_name = "memory"

    def __init__(self, arrays: dict[str, tuple[np.ndarray, np.ndarray]], *, name: str = "memory"):
        first_x = next(iter(arrays.values()))[0]
        manifest = {
            "format": "memory",
            "splits": {split: {"count": len(x)} for split, (x, _) in arrays.items()},
            "sample_shape": list(first_x.shape[1:]),
            "num_classes": int(max(y.max() for _, y in arrays.values())) + 1,
            "options": {"chunk_size": None, "compression": "none", "dtype": str(first_x.dtype)},
        }
        super().__init__(name, manifest)
        self._arrays = arrays

    @classmethod
    def from_source(cls, source: NpzSource, *, limit: int | None = None) -> "MemoryStore":
        arrays = {}
        for split in source.splits:
            chunks = list(source.iter_chunks(split, 1 << 14, limit))
            arrays[split] = (np.concatenate([x for x, _ in chunks]), np.concatenate([y for _, y in chunks]))
        return cls(arrays, name=f"memory:{source.name}")

    def _read_labels(self, split):
        return self._arrays[split][1]

    def _read_sorted(self, split, indices):
        return self._arrays[split][0][indices]
