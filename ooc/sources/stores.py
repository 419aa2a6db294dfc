"""An ooc store (any layout, local or URL) as a source: store-to-store conversion, every sample and
target exactly as stored, and the store's own schema (decoding, target kind, classes) carried over."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from ooc.sources.base import RandomAccess


class StoreSource(RandomAccess):
    def __init__(self, store):
        self.store = store
        self.path = store.path
        self.schema = store.schema

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def splits(self) -> tuple[str, ...]:
        return self.store.splits

    @property
    def order(self) -> dict[str, Any]:
        """The order the store was written in: a copy keeps it."""
        return {**self.store.manifest.get("order", {"kind": "source"}), "from": str(self.path)}

    def num_samples(self, split: str) -> int:
        return self.store.num_samples(split)

    def sha256(self) -> str:
        """Of the store's manifest (which holds every file's checksum): cheap, and changes with any file."""
        manifest = {
            k: v for k, v in self.store.manifest.items() if k not in ("conversion_seconds", "resumed")
        }
        return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()

    def targets(self, split: str) -> np.ndarray:
        return self.store.stored_targets(split)

    def read(self, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.store.read_stored(split, indices)

    def iter_chunks(self, split, chunk_size, limit=None, start=0):
        """In store order, a whole number of the store's chunks at a time where it has chunks."""
        yield from super().iter_chunks(split, chunk_size, limit, start)
