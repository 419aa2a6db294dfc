"""What every source shares: the protocol's pieces, file checksums, reading in any order, and the
two wrappers that change which samples a split holds (``Carved``) and in what order (``Shuffled``)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ooc.errors import OptionError, SourceError

SPLITS = ("train", "test")
DEFAULT_TEST_FRACTION = 0.1  # carved from a source with one split


class FileSource:
    """A source read from files: its name, its order and a checksum of its files (what a resumed
    conversion compares)."""

    path: Path
    _sha256: str | None = None

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def order(self) -> dict[str, Any]:
        return {"kind": "source"}

    def _hashed_files(self) -> list[Path]:
        return [self.path]

    def _file_tag(self, path: Path) -> bytes:
        """Hashed before each file's bytes; empty where the file names carry no data."""
        return b""

    # Whether the identity is the files' names, sizes and modification times rather than their bytes:
    # for a folder of a file per sample, hashing every byte would read the whole source once more
    # before converting it (measured: half the conversion time of the recipe's folder).
    identity_by_stat = False

    def sha256(self) -> str:
        """Of the source's file bytes as stored, streamed (or of their stat, ``identity_by_stat``)."""
        if self._sha256 is None:
            digest = hashlib.sha256()
            for path in self._hashed_files():
                digest.update(self._file_tag(path))
                if self.identity_by_stat:
                    stat = os.stat(path)
                    digest.update(f"{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
                    continue
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
            self._sha256 = digest.hexdigest()
        return self._sha256


class RandomAccess:
    """A source that can read any samples (``read(split, sorted indices)``) and hand out all its
    targets at once (``targets(split)``, small): it streams in order from ``read``, and can be
    shuffled at write time or have its test split carved out."""

    any_order = False  # True: read() takes indices in any order, as fast (a file per sample)

    def read(self, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def targets(self, split: str) -> np.ndarray:
        raise NotImplementedError

    def iter_chunks(
        self, split: str, chunk_size: int, limit: int | None = None, start: int = 0
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        total = self.num_samples(split) if limit is None else min(limit, self.num_samples(split))
        for first in range(start, total, chunk_size):
            yield self.read(split, np.arange(first, min(first + chunk_size, total)))


class Wrapped(RandomAccess):
    """A source seen through an index map per split; everything else is the source's."""

    def __init__(self, source, indices: dict[str, np.ndarray]):
        self.source = source
        self.indices = indices

    def __getattr__(self, name):  # path, name, schema, sha256: the source's
        if name.startswith("__") or name == "source":
            raise AttributeError(name)
        return getattr(self.source, name)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.indices)

    def num_samples(self, split: str) -> int:
        return len(self.indices[split])

    def targets(self, split: str) -> np.ndarray:
        base, where = self._base(split)
        return self.source.targets(base)[where]

    def _base(self, split: str) -> tuple[str, np.ndarray]:
        return split, self.indices[split]

    @property
    def any_order(self) -> bool:
        return getattr(self.source, "any_order", False)

    def read(self, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Samples of this view at ``indices``, read from the source in its sorted order (or as they
        come, where the source reads any order as fast: no copy to put them back)."""
        base, where = self._base(split)
        wanted = where[indices]
        if self.any_order:
            return self.source.read(base, wanted)
        order = np.argsort(wanted, kind="stable")
        x, y = self.source.read(base, wanted[order])
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return x[inverse], y[inverse]


def carve_test(targets: np.ndarray, *, test_fraction: float, seed: int, classes: bool, what: str):
    """Sorted (train, test) indices of ``targets``' samples: ``test_fraction`` of them as test, seeded,
    stratified when they are classes. ``what`` names the samples in an error."""
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise OptionError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    everything = np.arange(len(targets))
    try:
        train, test = train_test_split(
            everything, test_size=test_fraction, random_state=seed, stratify=targets if classes else None
        )
    except ValueError as e:
        raise OptionError(
            f"--test-fraction {test_fraction} cannot carve a test split from {len(everything)} {what} ({e})"
        ) from None
    return np.sort(train), np.sort(test)


class Carved(Wrapped):
    """A source with one split, cut into train and test (stratified for classes, seeded)."""

    def __init__(self, source, *, test_fraction: float, seed: int):
        (split,) = source.splits
        train, test = carve_test(
            source.targets(split),
            test_fraction=test_fraction,
            seed=seed,
            classes=source.schema.target_kind == "classes",
            what=f"samples of {source.name}",
        )
        super().__init__(source, {"train": train, "test": test})
        self._split = split
        self.carved = {"test_fraction": test_fraction, "seed": seed}

    def _base(self, split):
        return self._split, self.indices[split]


class Shuffled(Wrapped):
    """Every split written in a seeded random order: a source listed class by class (an image folder
    is) must not give chunks of one class, which the chunk shuffle would feed as whole batches."""

    def __init__(self, source, *, seed: int):
        indices = {
            split: np.random.default_rng([seed, i]).permutation(source.num_samples(split))
            for i, split in enumerate(source.splits)
        }
        super().__init__(source, indices)
        self.seed = seed

    @property
    def order(self) -> dict[str, Any]:
        return {"kind": "shuffled", "seed": self.seed}


def read_npy_header(fp, where: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    except ValueError as e:
        raise SourceError(f"{where} is not a valid .npy array ({e})") from None
    if fortran or dtype.hasobject:
        raise SourceError(
            f"{where} is a Fortran-ordered or object array; save it with np.save from a C-ordered numeric "
            "array"
        )
    return shape, dtype


def read_exact(fp, nbytes: int, where: str) -> bytes:
    data = fp.read(nbytes)
    if len(data) != nbytes:
        raise SourceError(f"{where} is truncated: expected {nbytes} more bytes, got {len(data)}")
    return data


MAX_SIZE = 4096  # pixels a side: larger is a typo (a chunk of 1024 such RGB images is 48 GiB)


def parse_size(size) -> tuple[int, int] | None:
    """``--size`` as (height, width): from N, (H, W), or the command line's "N" and "HxW"."""
    if size is None:
        return None
    if isinstance(size, str):
        dims = [int(part) if part.strip().isdigit() else 0 for part in size.lower().split("x")]
    elif isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        dims = [size]
    elif isinstance(size, (tuple, list)) and all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in size
    ):
        dims = list(size)
    else:
        dims = []
    if len(dims) not in (1, 2) or min(dims) < 1:
        raise OptionError(f"--size must be N or HxW in pixels, e.g. 28 or 32x32, got {size!r}")
    if max(dims) > MAX_SIZE:
        height, width = int(dims[0]), int(dims[-1])
        mib = height * width * 3 / 2**20
        raise OptionError(
            f"--size {size}: at most {MAX_SIZE} pixels a side (one {height}x{width} RGB sample would be "
            + (f"{mib / 1024:,.1f} GiB" if mib >= 1024 else f"{mib:,.1f} MiB")
            + "); pass the size the model takes, e.g. 224"
        )
    return int(dims[0]), int(dims[-1])


def parse_shape(shape) -> tuple[int, ...] | None:
    """``--sample-shape`` as a tuple of positive sizes: from "28,28", "32x32x3" or a sequence."""
    if shape is None:
        return None
    parts = shape.replace("x", ",").split(",") if isinstance(shape, str) else list(shape)
    try:
        dims = tuple(int(part) for part in parts)
    except (TypeError, ValueError):
        dims = ()
    if not dims or min(dims) < 1 or len(dims) > 4:
        raise OptionError(
            f"--sample-shape must be 1 to 4 positive sizes separated by commas, e.g. 28,28 or 32,32,3; got "
            f"{shape!r}"
        )
    return dims
