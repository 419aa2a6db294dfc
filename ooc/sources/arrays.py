"""Array sources: an ``.npz`` (streamed from its zip members), a pair of ``.npy`` files, an HDF5 file
or a Zarr group with dataset paths. Any sample shape of rank 1 to 4 and any of ooc's dtypes; targets
of any kind (``ooc.schema``)."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ooc.errors import SourceError
from ooc.schema import Schema, schema_for
from ooc.sources.base import SPLITS, FileSource, RandomAccess, read_exact, read_npy_header

NPZ_KEYS = ("x_{split}", "y_{split}")
GROUP_KEYS = ("{split}/x", "{split}/y")


@dataclass
class _Member:
    """Where one array lies inside the .npz (a zip member holding a .npy stream)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass
class NpzSource(FileSource):
    """A ``.npz`` with an x and a y array per split (``x_train``, ``y_train``, ``x_test``, ``y_test``,
    the layout of ``keras.datasets.mnist``; other names through ``keys``, patterns with ``{split}``).

    Arrays are streamed from the zip members chunk by chunk (``np.load`` would read each array
    whole), so a source larger than memory can be converted."""

    path: Path
    members: dict[str, _Member] = field(default_factory=dict)
    schema: Schema | None = None
    keys: tuple[str, str] = NPZ_KEYS  # the x and y arrays' names, with {split}
    _sha256: str | None = None

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        keys: tuple[str, str] = NPZ_KEYS,
        raw: bool = False,
        target_kind: str | None = None,
    ) -> NpzSource:
        path = Path(path)
        if not path.is_file():
            raise SourceError(
                f"{path}: no such source file; pass --source PATH to an .npz with x_train, y_train, x_test, "
                "y_test"
            )
        if not all("{split}" in key for key in keys):
            raise SourceError(
                f"{path}: --x and --y of an .npz source name one array per split, with {{split}} in the name "
                f"(x_{{split}} finds x_train and x_test); save a single x and y as two .npy files instead"
            )
        # absolute: tasks on --dask workers resolve it, not our working directory
        source = cls(path.absolute(), keys=tuple(keys))
        wanted = [key.format(split=split) for split in SPLITS for key in keys]
        try:
            with zipfile.ZipFile(path) as zf:
                names = {n.removesuffix(".npy") for n in zf.namelist()}
                for key in wanted:
                    if key not in names:
                        raise SourceError(
                            f"{path} has no array '{key}' (found: {', '.join(sorted(names)) or 'none'}); an "
                            ".npz source needs "
                            f"{', '.join(wanted)}"
                        )
                    with zf.open(key + ".npy") as fp:
                        shape, dtype = read_npy_header(fp, f"{path}:{key}")
                    source.members[key] = _Member(key + ".npy", shape, dtype)
        except (zipfile.BadZipFile, OSError) as e:
            raise SourceError(f"{path} is not a readable .npz file ({e})") from None
        source.schema = _array_schema(
            str(path),
            {split: (source._x(split), source._y(split)) for split in SPLITS},
            names={split: [key.format(split=split) for key in keys] for split in SPLITS},
            raw=raw,
            target_kind=target_kind,
        )
        return source

    def _x(self, split):
        return self.members[self._key(0, split)]

    def _y(self, split):
        return self.members[self._key(1, split)]

    def _key(self, which: int, split: str) -> str:
        return self.keys[which].format(split=split)

    @property
    def splits(self) -> tuple[str, ...]:
        return SPLITS

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.schema.sample_shape

    def num_samples(self, split: str) -> int:
        return self._x(split).shape[0]

    def iter_chunks(
        self, split: str, chunk_size: int, limit: int | None = None, start: int = 0
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(x, y)`` for samples ``[start, min(limit, n))`` in order, ``chunk_size`` at a time,
        in the arrays' own dtypes. Samples before ``start`` (a resumed conversion's) are skipped by
        seeking, which in a compressed member reads and discards them."""
        x_m, y_m = self._x(split), self._y(split)
        total = x_m.shape[0] if limit is None else min(limit, x_m.shape[0])
        x_bytes = int(np.prod(x_m.shape[1:])) * x_m.dtype.itemsize
        y_bytes = int(np.prod(y_m.shape[1:])) * y_m.dtype.itemsize
        with zipfile.ZipFile(self.path) as zf, zf.open(x_m.name) as xf, zf.open(y_m.name) as yf:
            read_npy_header(xf, x_m.name)
            read_npy_header(yf, y_m.name)
            if start:
                xf.seek(min(start, total) * x_bytes, 1)
                yf.seek(min(start, total) * y_bytes, 1)
            for first in range(start, total, chunk_size):
                n = min(chunk_size, total - first)
                x = read_exact(xf, n * x_bytes, f"{self.path}:{x_m.name}")
                y = read_exact(yf, n * y_bytes, f"{self.path}:{y_m.name}")
                yield (
                    np.frombuffer(x, x_m.dtype).reshape((n, *self.schema.sample_shape)),
                    np.frombuffer(y, y_m.dtype).reshape((n, *y_m.shape[1:])),
                )


def _array_schema(
    where: str, arrays: dict, *, names: dict, raw: bool, target_kind: str | None, class_names=None
) -> Schema:
    """The schema every split's (x, y) arrays share; refuses, naming the arrays, what does not fit."""
    schemas = {}
    for split, (x, y) in arrays.items():
        x_name, y_name = names[split]
        if len(x.shape) < 2 or len(y.shape) < 1:
            raise SourceError(
                f"{where}: {x_name} is {x.dtype} of shape {tuple(x.shape)}; ooc expects samples (n, ...) with "
                ""
                ""
                "at least one value each, and targets (n, ...)"
            )
        if y.shape[0] != x.shape[0]:
            raise SourceError(
                f"{where}: {x_name} has {x.shape[0]} samples but {y_name} has {y.shape[0]} labels"
            )
        schemas[split] = schema_for(
            tuple(x.shape),
            x.dtype,
            tuple(y.shape),
            y.dtype,
            where=f"{where}: {x_name}, {y_name}",
            raw=raw,
            target_kind=target_kind,
            class_names=class_names,
        )
    first, *others = schemas.items()
    for split, schema in others:
        if (schema.sample_shape, schema.dtype, schema.target_shape, schema.target_dtype) != (
            first[1].sample_shape,
            first[1].dtype,
            first[1].target_shape,
            first[1].target_dtype,
        ):
            raise SourceError(
                f"{where}: {first[0]} samples are {first[1].dtype} {first[1].sample_shape} with targets "
                f"{first[1].target_dtype} {first[1].target_shape}, but {split} samples are {schema.dtype} "
                f"{schema.sample_shape} with targets {schema.target_dtype} {schema.target_shape}"
            )
    return first[1]


class ArraySource(FileSource, RandomAccess):
    """x and y arrays that can be read at any index: ``.npy`` memmaps, HDF5 datasets, Zarr arrays."""

    def __init__(self, path: Path, arrays: dict, schema: Schema, files: list[Path], opener=None):
        self.path = path
        self.schema = schema
        self._arrays = arrays  # split -> (x, y) array-likes
        self._files = files
        self._opener = opener  # re-opens the arrays in a worker process (h5py and zarr handles do not pickle)

    def __getstate__(self):
        return {**self.__dict__, "_arrays": None}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._arrays = self._opener()

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self._arrays)

    def num_samples(self, split: str) -> int:
        return int(self._arrays[split][0].shape[0])

    def _hashed_files(self) -> list[Path]:
        return self._files

    def _file_tag(self, path: Path) -> bytes:
        """A file's place in a Zarr group (its chunks are named by it); a file's name otherwise."""
        return f"{path.relative_to(self.path).as_posix() if path.is_relative_to(self.path) else path.name}\0".encode()

    def targets(self, split: str) -> np.ndarray:
        return np.asarray(self._arrays[split][1][:])

    def read(self, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = self._arrays[split]
        return (
            _take(x, indices).reshape((len(indices), *self.schema.sample_shape)),
            _take(y, indices).reshape((len(indices), *self.schema.target_shape)),
        )


def _take(array, indices: np.ndarray) -> np.ndarray:
    """Rows at sorted ``indices``: one slice when they are a run (h5py reads points slowly)."""
    if len(indices) and indices[-1] - indices[0] == len(indices) - 1:
        return np.asarray(array[int(indices[0]) : int(indices[-1]) + 1])
    if hasattr(array, "oindex"):  # zarr
        return np.asarray(array.oindex[indices])
    return np.asarray(array[indices])


def open_npy_pair(
    x_path: str | Path, y_path: str | Path, *, raw: bool = False, target_kind: str | None = None
) -> ArraySource:
    """Two ``.npy`` files, samples and targets: one split, which ``--test-fraction`` cuts."""
    x_path, y_path = Path(x_path).absolute(), Path(y_path).absolute()

    def opener():
        arrays = []
        for path in (x_path, y_path):
            try:
                arrays.append(np.load(path, mmap_mode="r"))
            except (OSError, ValueError) as e:
                raise SourceError(
                    f"{path} is not a readable .npy file ({e}); pass --source X.npy --targets Y.npy"
                ) from None
        return {"train": tuple(arrays)}

    arrays = opener()
    schema = _array_schema(
        str(x_path), arrays, names={"train": [x_path.name, y_path.name]}, raw=raw, target_kind=target_kind
    )
    return ArraySource(x_path, arrays, schema, [x_path, y_path], opener)


def open_group(
    path: str | Path,
    kind: str,
    *,
    keys: tuple[str, str] = GROUP_KEYS,
    raw: bool = False,
    target_kind: str | None = None,
) -> ArraySource:
    """An HDF5 file or a Zarr group with x and y datasets: per split (keys with ``{split}``) or one
    pair (a single split, which ``--test-fraction`` cuts)."""
    path = Path(path).absolute()
    per_split = all("{split}" in key for key in keys)

    def opener():
        group = _open_group(path, kind)
        arrays = {}
        for split in SPLITS if per_split else ("train",):
            pair = []
            for key in keys:
                name = key.format(split=split)
                try:
                    pair.append(group[name])
                except KeyError:
                    raise SourceError(
                        f"{path} has no dataset '{name}'; name the samples and targets with --x and --y "
                        "(e.g. --x images --y labels, or --x {split}/x --y {split}/y)"
                    ) from None
            arrays[split] = tuple(pair)
        return arrays

    arrays = opener()
    names = {split: [key.format(split=split) for key in keys] for split in arrays}
    schema = _array_schema(str(path), arrays, names=names, raw=raw, target_kind=target_kind)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return ArraySource(path, arrays, schema, files, opener)


def _open_group(path: Path, kind: str):
    try:
        if kind == "hdf5":
            import h5py

            return h5py.File(path, "r", locking=False)
        import zarr

        return zarr.open_group(path, mode="r")
    except (OSError, ValueError, FileNotFoundError) as e:
        raise SourceError(
            f"{path} is not a readable {'HDF5 file' if kind == 'hdf5' else 'Zarr group'} ({e})"
        ) from None
