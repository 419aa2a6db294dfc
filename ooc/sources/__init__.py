"""Dataset sources: where samples come from before they are converted.

The ``Source`` protocol (what ``ooc.convert`` takes; a hand-made source object must have it too):

- ``name`` (str), ``splits`` (tuple: ``("train", "test")``), ``schema`` (``ooc.schema.Schema``:
  sample shape and dtype, how reads decode them, target kind, shape and dtype);
- ``num_samples(split)``;
- ``iter_chunks(split, chunk_size, limit=None, start=0)``: the samples ``[start, min(limit, n))`` in
  order as ``(x, y)`` numpy chunks of ``chunk_size`` (the last may be shorter), ``x`` of the schema's
  dtype and shape ``(n, *sample_shape)``, ``y`` of ``(n, *target_shape)``: a conversion refuses a
  chunk that is anything else;
- ``sha256()``: what identifies the data (a resumed conversion compares it); ``order``: how the
  samples are ordered, for the manifest.

Sources that can read any samples (``RandomAccess``: ``read(split, sorted indices)`` and
``targets(split)``) can also be shuffled at write time and have a test split carved out.

``open_source`` picks the source for a path by the ordered table ``PATH_SOURCES`` of (detect, open):
an ooc store, HDF5, a Zarr group, tables per split, the recipe's CSV folder, an image folder, a
Parquet or CSV table, ``.npy`` (with ``targets``), IDX files, ``.npz``. Belongs here: reading what
users have, streamed; does not belong here: writing stores (``ooc.formats``) or converting (``ooc.convert``).
``as_source`` also takes Python objects (``ooc.sources.python``): ``(x, y)`` numpy arrays,
``{"train": ..., "test": ...}``, iterables of ``(x, y)`` chunks, a ``tf.data.Dataset``, a Hugging Face
``Dataset`` or ``DatasetDict``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ooc.errors import OptionError, SourceError
from ooc.remote import is_url
from ooc.schema import TARGET_KINDS, Schema
from ooc.sources.arrays import ArraySource, NpzSource, open_group, open_npy_pair
from ooc.sources.base import (
    DEFAULT_TEST_FRACTION,
    SPLITS,
    Carved,
    RandomAccess,
    Shuffled,
    parse_shape,
    parse_size,
)
from ooc.sources.images import COLORS, IdxSource, ImageFolderSource, is_image_folder
from ooc.sources.python import ArrayPairs, HuggingFaceSource, python_source
from ooc.sources.recipe import RecipeSource, is_recipe_folder
from ooc.sources.stores import StoreSource
from ooc.sources.table import TableSource, is_table, split_tables
from ooc.stores import open_store

__all__ = [
    "ArrayPairs",
    "ArraySource",
    "COLORS",
    "HuggingFaceSource",
    "IdxSource",
    "ImageFolderSource",
    "NpzSource",
    "ORDERS",
    "RecipeSource",
    "RepeatedSource",
    "SPLITS",
    "Source",
    "SourceOptions",
    "StoreSource",
    "TableSource",
    "as_source",
    "open_source",
    "parse_shape",
    "parse_size",
]

BUNDLED_MNIST = Path("data") / "mnist.npz"
_REPO_MNIST = Path(__file__).resolve().parent.parent.parent / "data" / "mnist.npz"
ORDERS = ("auto", "shuffle", "source")


@runtime_checkable
class Source(Protocol):
    name: str
    schema: Schema

    @property
    def splits(self) -> tuple[str, ...]: ...

    def num_samples(self, split: str) -> int: ...

    def iter_chunks(
        self, split: str, chunk_size: int, limit: int | None = None, start: int = 0
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...

    def sha256(self) -> str: ...


@dataclass(frozen=True)
class SourceOptions:
    """How to read a source path: what each kind of source needs besides the path."""

    size: tuple[int, int] | None = None  # image folders: resize
    color: str = "auto"  # image folders: auto, rgb, gray
    targets: str | os.PathLike | None = None  # the recipe's targets CSV, or the y .npy of an x .npy
    x: str | None = None  # array names in an .npz, HDF5 file or Zarr group
    y: str | None = None
    target_column: str | None = None  # tables
    target_kind: str | None = None  # classes, onehot, multilabel, regression (default: from the data)
    raw: bool = False  # uint8 images read back as they are, not / 255
    test_fraction: float | None = None  # carve the test split from a source with one split
    order: str = "auto"  # auto, shuffle, source
    seed: int = 0  # of the write-time shuffle and the carving
    delimiter: str | None = None  # per-sample CSV files: comma, whitespace, tab, semicolon (else detected)
    dtype: str | None = None  # per-sample CSV files: float32 (as np.loadtxt(dtype=float32) reads) or float64
    sample_shape: tuple[int, ...] | None = None  # tables: each row reshaped to this (e.g. 28, 28)


def as_source(source, size=None, options: SourceOptions | None = None, *, dtype=None, near=None):
    """The source at a path (None: the default MNIST), a Python object's (``ooc.sources.python``:
    ``dtype`` declares an iterable's samples, spooled beside ``near``, the output), or a source object
    as given (checked against the protocol). Python objects are carved and ordered like paths."""
    options = options or SourceOptions(size=parse_size(size))
    if source is None or isinstance(source, (str, os.PathLike)):
        return open_source(source, options)
    if not hasattr(source, "iter_chunks"):
        _check(options)
        _refuse_size(options, f"a {type(source).__name__}")
        python = python_source(source, options, dtype=dtype, near=near)
        if python is not None:
            return _carved_and_ordered(_refuse_empty(python), options)
    if options.size is not None and getattr(source, "size", None) != options.size:
        raise SourceError(
            "--size applies when the source is opened from a path; open it with ImageFolderSource.open(path, "
            f"size={options.size})"
        )
    return check_source(source)


def check_source(source) -> Any:
    """A hand-made source object must declare what it yields (``Source``); what it then yields is
    checked chunk by chunk during the conversion."""
    missing = [
        name
        for name in ("name", "splits", "schema", "num_samples", "iter_chunks", "sha256")
        if not hasattr(source, name)
    ]
    if missing:
        raise SourceError(
            f"{type(source).__name__} is not an ooc source: it lacks {', '.join(missing)} (see "
            "ooc.sources.Source); or pass (x, y) numpy arrays, an iterable of (x, y) chunks, a "
            "datasets.Dataset or a tf.data.Dataset"
        )
    if not isinstance(source.schema, Schema):
        raise SourceError(
            f"{source.name}: its schema is a {type(source.schema).__name__}, not an ooc.schema.Schema; "
            "declare shapes and dtypes with ooc.schema.schema_for(...)"
        )
    if "train" not in source.splits:
        raise SourceError(
            f"{source.name}: its splits are {', '.join(source.splits)}; a source needs a 'train' split"
        )
    if not hasattr(source, "order"):
        try:
            source.order = {"kind": "source"}
        except AttributeError:
            pass
    return _refuse_empty(source)


def _refuse_empty(source):
    """A source without train samples would make a store that cannot train: refused before anything
    is written."""
    counts = {split: source.num_samples(split) for split in source.splits}
    if not counts.get("train"):
        held = ", ".join(f"{split} {n}" for split, n in counts.items())
        raise SourceError(
            f"{source.name} holds no train samples ({held}): pass --source a file that holds samples"
        )
    return source


def open_source(path: str | Path | None = None, options: SourceOptions | None = None, *, size=None):
    """The source at ``path`` (see the module docstring), carved and ordered as ``options`` say."""
    options = options or SourceOptions(size=parse_size(size))
    _check(options)
    source = _refuse_empty(_open_path(path, options))
    _refuse_foreign_options(source, options)
    return _carved_and_ordered(source, options)


def _carved_and_ordered(source, options: SourceOptions):
    """A test split carved from a source with only one, then the write order: paths and Python
    objects alike (a table carves its own, with --test-fraction)."""
    test_fraction = options.test_fraction
    if "test" not in source.splits:
        if not isinstance(source, RandomAccess):
            raise SourceError(f"{source.name} has no test split and cannot be read in any order to carve one")
        source = Carved(source, test_fraction=test_fraction or DEFAULT_TEST_FRACTION, seed=options.seed)
    elif test_fraction is not None and not isinstance(source, TableSource):
        raise OptionError(f"--test-fraction: {source.name} has a test split of its own; drop the option")
    return _ordered(source, options.order, seed=options.seed)


def _check(options: SourceOptions) -> None:
    for option, value, allowed in (
        ("--target-kind", options.target_kind, (None, *TARGET_KINDS)),
        ("--color", options.color, COLORS),
        ("--order", options.order, ORDERS),
    ):
        if value not in allowed:
            raise OptionError(f"{option} {value!r}: choose one of {', '.join(a for a in allowed if a)}")
    if (options.x is None) != (options.y is None):
        raise OptionError("--x and --y go together: name both arrays, the samples' and the targets'")


def _ordered(source, order: str, *, seed: int):
    if order not in ORDERS:
        raise OptionError(f"--order must be one of {', '.join(ORDERS)}, got {order!r}")
    can = isinstance(source, RandomAccess) and not isinstance(source, StoreSource)
    if order == "shuffle" and not can:
        raise OptionError(
            f"--order shuffle: {source.name} is read front to back only (or is a store, whose order is kept); "
            "convert it with --order source, or from a source ooc reads in any order (.npy, files per sample)"
        )
    cheap = can and getattr(source, "cheap_random_access", True)
    if order == "shuffle" or (order == "auto" and cheap):
        return Shuffled(source, seed=seed)
    return source


def _refuse_foreign_options(source, options: SourceOptions) -> None:
    """Options that shape one kind of source would silently do nothing to another."""
    if options.sample_shape is not None and not isinstance(source, TableSource):
        raise OptionError(
            f"--sample-shape applies to tables (a CSV or Parquet file, one row per sample); {source.name} "
            "is not one: drop --sample-shape"
        )
    if options.delimiter is not None and not isinstance(source, RecipeSource):
        raise OptionError(
            f"--delimiter applies to folders of per-sample CSV files and to a csv output; {source.name} is "
            "neither: drop --delimiter"
        )


def _open_path(path, options: SourceOptions):
    if path is None:
        _refuse_size(options, "the default MNIST")
        return _mnist(options)
    if is_url(path) or (Path(path) / "ooc.json").is_file():
        return StoreSource(open_store(path))
    path = Path(path)
    if not path.exists():
        raise SourceError(
            f"{path}: no such source file; pass --source PATH to an .npz with x_train, y_train, x_test, "
            "y_test"
        )
    return next(open_ for detect, open_ in PATH_SOURCES if detect(path, options))(path, options)


def _keys(options: SourceOptions, default: tuple[str, str]) -> tuple[str, str]:
    return (options.x, options.y) if options.x and options.y else default


def _is_group(path: Path, options: SourceOptions) -> bool:
    return (path.is_dir() and (path / "zarr.json").is_file()) or path.suffix.lower() in (".h5", ".hdf5")


def _open_group(path: Path, options: SourceOptions):
    _refuse_size(options, str(path))
    kind = "hdf5" if path.suffix.lower() in (".h5", ".hdf5") else "zarr"
    keys = _keys(options, ("{split}/x", "{split}/y"))
    return open_group(path, kind, keys=keys, raw=options.raw, target_kind=options.target_kind)


def _is_recipe(path: Path, options: SourceOptions) -> bool:
    return path.is_dir() and (options.targets is not None or is_recipe_folder(path))


def _open_recipe(path: Path, options: SourceOptions) -> RecipeSource:
    _refuse_size(options, str(path))
    return RecipeSource.open(
        path,
        targets=options.targets,
        target_kind=options.target_kind,
        delimiter=options.delimiter,
        dtype=options.dtype,
    )


def _open_images(path: Path, options: SourceOptions) -> ImageFolderSource:
    return ImageFolderSource.open(
        path, size=options.size, color=options.color, need_test=options.test_fraction is None
    )


def _open_npy(path: Path, options: SourceOptions):
    _refuse_size(options, str(path))
    if options.targets is None:
        raise SourceError(f"{path} holds the samples only: pass their targets with --targets Y.npy")
    source = open_npy_pair(path, options.targets, raw=options.raw, target_kind=options.target_kind)
    source.cheap_random_access = True
    return source


def _open_idx(path: Path, options: SourceOptions) -> IdxSource:
    _refuse_size(options, str(path))
    return IdxSource.open(path)


def _open_npz(path: Path, options: SourceOptions) -> NpzSource:
    _refuse_size(options, str(path))
    keys = _keys(options, ("x_{split}", "y_{split}"))
    return NpzSource.open(path, keys=keys, raw=options.raw, target_kind=options.target_kind)


def _open_table(path: Path, options: SourceOptions) -> TableSource:
    _refuse_size(options, str(path))
    return TableSource(
        path,
        options.target_column,
        test_fraction=options.test_fraction,
        seed=options.seed,
        target_kind=options.target_kind,
        sample_shape=options.sample_shape,
        raw=options.raw,
    )


# What a local path is, asked in this order, and how it opens: the first whose test holds. The order
# matters where two could hold: a folder with train.csv is a table per split, not a recipe folder; a
# folder of per-sample CSV files is a recipe folder before an image folder; any other folder is IDX.
PATH_SOURCES = (
    (_is_group, _open_group),  # a zarr group or an HDF5 file
    (lambda path, options: split_tables(path) is not None, _open_table),
    (_is_recipe, _open_recipe),  # one CSV per sample (+ targets)
    (lambda path, options: is_image_folder(path), _open_images),
    (lambda path, options: is_table(path), _open_table),
    (lambda path, options: path.suffix.lower() == ".npy", _open_npy),
    (lambda path, options: path.is_dir(), _open_idx),
    (lambda path, options: True, _open_npz),
)


def _refuse_size(options: SourceOptions, what: str) -> None:
    if options.size is not None:
        raise SourceError(
            f"--size applies to image-folder sources only; {what} is not one "
            "(an image folder has train/ and test/ with a sub-folder of images per class); drop --size"
        )


def _mnist(options: SourceOptions):
    for candidate in (BUNDLED_MNIST, _REPO_MNIST):
        if candidate.is_file():
            return NpzSource.open(candidate, raw=options.raw)
    return NpzSource.open(_keras_mnist_path(), raw=options.raw)


def _keras_mnist_path() -> Path:
    """Let keras.datasets.mnist fetch MNIST (or find its cached copy), then stream that file."""
    import keras

    try:
        keras.datasets.mnist.load_data()
    except Exception as e:  # network errors come in many types
        raise SourceError(
            f"{BUNDLED_MNIST} is missing and keras.datasets.mnist could not download MNIST ({e}); pass "
            "--source PATH"
        ) from None
    homes = [os.environ.get("KERAS_HOME", Path.home() / ".keras"), Path("/tmp/.keras")]
    for home in homes:
        cached = Path(home) / "datasets" / "mnist.npz"
        if cached.is_file():
            return cached
    raise SourceError(
        f"{BUNDLED_MNIST} is missing and keras' cached mnist.npz was not found; pass --source PATH"
    )


@dataclass
class RepeatedSource:
    """``repeat`` copies of an image source's train split, each copy after the first shifted by a
    random offset of up to ``max_shift`` pixels per image (a standard MNIST augmentation); the test
    split is left as it is. It streams like its source, so stores far larger than memory can be made
    from MNIST, for measuring how ooc behaves at scale."""

    source: Any
    repeat: int
    seed: int = 0
    max_shift: int = 2

    def __post_init__(self):
        if not self.source.schema.is_image:
            raise OptionError(
                f"--repeat shifts images; {self.source.name} holds samples of shape "
                f"{self.source.schema.sample_shape}"
            )

    def __getattr__(self, name):  # path, name, schema, sha256, order: the source's
        if (
            name.startswith("__") or name == "source"
        ):  # unpickling (a parallel conversion's workers) asks before `source` is set
            raise AttributeError(name)
        return getattr(self.source, name)

    @property
    def splits(self) -> tuple[str, ...]:
        return self.source.splits

    def num_samples(self, split: str) -> int:
        return self.source.num_samples(split) * (self.repeat if split == "train" else 1)

    def iter_chunks(
        self, split: str, chunk_size: int, limit: int | None = None, start: int = 0
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Chunks of exactly ``chunk_size`` samples (the last may be short) across the copies,
        from sample ``start`` on. Each source chunk's shift is drawn from its copy and its number,
        so skipped copies are not read and a resumed stream holds the same samples."""
        if split != "train":
            yield from self.source.iter_chunks(split, chunk_size, limit, start=start)
            return
        per_copy = (
            self.source.num_samples(split) if limit is None else min(limit, self.source.num_samples(split))
        )
        pending_x, pending_y, pending = [], [], 0
        for copy in range(min(start // max(per_copy, 1), self.repeat), self.repeat):
            offset = max(0, start - copy * per_copy)  # samples of this copy already written
            first = offset // chunk_size
            chunks = self.source.iter_chunks(split, chunk_size, limit, start=first * chunk_size)
            for start_chunk, (x, y) in enumerate(chunks, first):
                if copy:
                    x = self._shift(x, np.random.default_rng([self.seed, copy, start_chunk]))
                if start_chunk == first and offset > first * chunk_size:
                    x, y = x[offset - first * chunk_size :], y[offset - first * chunk_size :]
                pending_x.append(x)
                pending_y.append(y)
                pending += len(x)
                while pending >= chunk_size:
                    xs, ys = np.concatenate(pending_x), np.concatenate(pending_y)
                    yield xs[:chunk_size], ys[:chunk_size]
                    pending_x, pending_y, pending = [xs[chunk_size:]], [ys[chunk_size:]], pending - chunk_size
        if pending:
            yield np.concatenate(pending_x), np.concatenate(pending_y)

    def _shift(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        shifts = rng.integers(-self.max_shift, self.max_shift + 1, size=(len(x), 2))
        out = np.zeros_like(x)
        h, w = x.shape[1:3]
        for dy, dx in {tuple(s) for s in shifts.tolist()}:
            sel = np.flatnonzero((shifts[:, 0] == dy) & (shifts[:, 1] == dx))
            out[sel, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
                sel, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
            ]
        return out
