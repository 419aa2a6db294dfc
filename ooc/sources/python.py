"""Sources made of Python objects the user already holds: ``(x, y)`` numpy arrays (memmaps too),
``{"train": ..., "test": ...}`` dicts of them, iterables of ``(x, y)`` chunks, a ``tf.data.Dataset``
and a Hugging Face ``datasets.Dataset`` / ``DatasetDict``.

They live apart from the path sources because nothing identifies them but their data: ``sha256``
hashes the arrays' bytes, streamed block by block (a Hugging Face dataset's fingerprint already is
such a hash). An iterable can be read only once and its length is unknown until its end, while a
conversion needs each split's count and checksum before it writes: so iterables and tf.data
datasets are spooled, chunk by chunk, to raw files beside the output (``.ooc-spool-*``, removed
with the source) and are then memory-mapped arrays like any others. Every form can therefore be
read at any index: shuffled at write time and carved into train and test like an ``.npy`` pair.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ooc.errors import OptionError, SourceError
from ooc.remote import is_url
from ooc.sources.arrays import ArraySource, _array_schema
from ooc.sources.base import SPLITS, RandomAccess

BLOCK_BYTES = 16 << 20  # hashed, spooled and batched (tf.data) this much at a time: memory stays flat
LABEL_COLUMNS = ("label", "labels", "target", "y", "class")
FORMS = "(x, y) numpy arrays, an iterable of (x, y) chunks, a datasets.Dataset or a tf.data.Dataset"


class Declared(NamedTuple):
    """What ``sample_shape=`` and ``dtype=`` declare about an iterable's samples (None: chunk 0 says)."""

    shape: tuple[int, ...] | None = None
    dtype: np.dtype | None = None


def python_source(obj, options, *, dtype=None, near=None):
    """The source for ``obj`` if it is one of this module's forms, else None (then it must be a
    ``Source``). ``near``: the output, beside which iterables are spooled."""
    declared = Declared(options.sample_shape, _dtype(dtype))
    if _from_module(obj, "datasets"):
        return HuggingFaceSource.open(obj, options)
    if isinstance(obj, np.ndarray):
        raise SourceError(
            f"source is a single numpy array of shape {obj.shape}; pass source=(x, y) with its targets"
        )
    if isinstance(obj, dict):
        forms = _dict_splits(obj)
        hf = [_from_module(form, "datasets") for form in forms.values()]
        if all(hf):
            return HuggingFaceSource.open(forms, options)
        if any(hf):
            raise SourceError(
                "source mixes a datasets.Dataset with other forms; pass Datasets for every split"
            )
    elif _is_pair(obj) or _is_stream(obj) or _from_module(obj, "tensorflow"):
        forms = {"train": obj}
    else:
        return None
    return ArrayPairs.build(forms, options, declared, bare=not isinstance(obj, dict), near=near)


def _dtype(dtype) -> np.dtype | None:
    try:
        return None if dtype is None else np.dtype(dtype)
    except TypeError:
        raise OptionError(f"--dtype {dtype!r} is not a numpy dtype; pass e.g. float32") from None


def _from_module(obj, package: str) -> bool:
    """Whether ``obj``'s class comes from ``package``: asked without importing it (TensorFlow takes seconds)."""
    return type(obj).__module__.split(".")[0] == package


def _is_pair(form) -> bool:
    """``(x, y)``: a tuple whose first member is not itself a chunk (a tuple of chunks is an iterable)."""
    return isinstance(form, tuple) and not (form and isinstance(form[0], (tuple, list)))


def _is_stream(form) -> bool:
    return isinstance(form, Iterable) and not isinstance(form, (str, bytes, os.PathLike, dict, np.ndarray))


def _dict_splits(obj: dict) -> dict[str, Any]:
    unknown = [key for key in obj if key not in SPLITS]
    if unknown or "train" not in obj:
        what = (
            f"the key {unknown[0]!r}"
            if unknown
            else f"no 'train' key (its keys: {', '.join(map(repr, obj))})"
        )
        raise SourceError(
            f"source has {what}; a dict source has 'train' and optionally 'test', each {FORMS.replace(' or ', ', ')}"
        )
    return {split: obj[split] for split in SPLITS if split in obj}


# -- arrays, and iterables spooled to arrays -----------------------------------------------------------


class ArrayPairs(ArraySource):
    """(x, y) arrays per split, in memory or memory-mapped (the user's, or the spool of an iterable):
    read at any index like an ``.npy`` pair, and identified by their bytes."""

    def __init__(self, name: str, arrays: dict, schema, spool: tempfile.TemporaryDirectory | None = None):
        super().__init__(name, arrays, schema, files=[])
        self._spool = spool  # the spooled iterables' files: removed when this source is

    @classmethod
    def build(
        cls, forms: dict[str, Any], options, declared: Declared, *, bare: bool, near=None
    ) -> ArrayPairs:
        """Each split's arrays: as given, or spooled from its iterable (removed again if refused)."""
        name, arrays, names, spool = _name(forms, bare), {}, {}, None
        try:
            for split, form in forms.items():
                where = "source" if bare else f"source[{split!r}]"
                if _is_pair(form):
                    arrays[split] = _pair(form, where)
                    names[split] = ["x", "y"] if bare else [f"{where} x", f"{where} y"]
                    _check_declared(declared, arrays[split][0].shape[1:], f"{where}'s x")
                    continue
                if _from_module(form, "tensorflow"):
                    chunks, what = (
                        _tf_chunks(form, options, f"the {split} tf.data.Dataset"),
                        f"the {split} tf.data.Dataset",
                    )
                elif _is_stream(form):
                    chunks, what = form, f"the {split} iterable"
                else:
                    raise SourceError(
                        f"{where} is a {type(form).__name__}; each split of a dict source is {FORMS}"
                    )
                names[split] = [f"{what}'s x", f"{what}'s y"]

                def schema_of(x, y, split=split):  # chunk 0 refused at once for what no chunk can fix
                    _array_schema(
                        name, {split: (x, y)}, names=names, raw=options.raw, target_kind=options.target_kind
                    )

                spool = spool or tempfile.TemporaryDirectory(prefix=".ooc-spool-", dir=_spool_dir(near))
                arrays[split] = _spooled(chunks, Path(spool.name) / split, declared, what, schema_of)
            schema = _array_schema(
                name, arrays, names=names, raw=options.raw, target_kind=options.target_kind
            )
        except BaseException:
            if spool is not None:
                arrays.clear()  # the maps first: then the files can go
                spool.cleanup()
            raise
        return cls(name, arrays, schema, spool)

    def __getstate__(self):  # memory maps travel as their files: a --jobs worker maps them again
        arrays = {split: tuple(_Mapped.of(a) or a for a in pair) for split, pair in self._arrays.items()}
        return {**self.__dict__, "_arrays": arrays, "_spool": None}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._arrays = {
            split: tuple(a.open() if isinstance(a, _Mapped) else a for a in pair)
            for split, pair in self._arrays.items()
        }

    def sha256(self) -> str:
        """Of every split's arrays: dtype, shape and bytes, block by block (a memmap is never read whole)."""
        if self._sha256 is None:
            digest = hashlib.sha256()
            for split, pair in self._arrays.items():
                for array in pair:
                    digest.update(f"{split}\0{array.dtype.str}\0{array.shape}\0".encode())
                    rows = max(1, BLOCK_BYTES // max(1, array[:1].nbytes))
                    for first in range(0, len(array), rows):
                        digest.update(np.ascontiguousarray(array[first : first + rows]))
            self._sha256 = digest.hexdigest()
        return self._sha256


class _Mapped(NamedTuple):
    """A memory-mapped array by its file, to map it again in another process."""

    filename: str
    offset: int
    shape: tuple[int, ...]
    dtype: str
    order: str = "C"

    @classmethod
    def of(cls, array) -> _Mapped | None:
        """The file of a whole memmap (``np.load(mmap_mode="r")``, a spool); None for anything else (a
        memmap's slice does not say where it starts: it is pickled as its values)."""
        if isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap) and array.filename:
            order = "C" if array.flags.c_contiguous else "F"
            return cls(array.filename, array.offset, array.shape, array.dtype.str, order)
        return None

    def open(self) -> np.ndarray:
        if not np.prod(self.shape):  # an empty file cannot be mapped
            return np.empty(self.shape, self.dtype)
        return np.memmap(self.filename, self.dtype, "r", self.offset, self.shape, self.order)


def _name(forms: dict[str, Any], bare: bool) -> str:
    """What the source is called in messages and the manifest: its form, as the user wrote it."""

    def short(form):
        if _is_pair(form):
            return "(x, y)"
        return "tf.data.Dataset" if _from_module(form, "tensorflow") else "iterable"

    if bare:
        (form,) = forms.values()
        long = {"(x, y)": "(x, y) arrays", "iterable": "an iterable of (x, y) chunks"}
        return long.get(short(form), "a tf.data.Dataset")
    return "{" + ", ".join(f"{split!r}: {short(form)}" for split, form in forms.items()) + "}"


def _pair(form: tuple, where: str) -> tuple[np.ndarray, np.ndarray]:
    if len(form) != 2:
        raise SourceError(f"{where} is a tuple of {len(form)}; pass (x, y): the samples and their targets")
    for name, array in zip("xy", form):
        if not isinstance(array, np.ndarray):
            raise SourceError(
                f"{where}: {name} is a {type(array).__name__}, not a numpy array; pass np.asarray({name})"
            )
    x, y = form
    if x.ndim and y.ndim and len(x) != len(y):
        raise SourceError(
            f"{where}: x holds {len(x)} samples but y {len(y)} targets; pass one target per sample"
        )
    return x, y


def _check_declared(declared: Declared, shape: tuple[int, ...], what: str) -> None:
    if declared.shape is not None and tuple(declared.shape) != tuple(shape):
        raise SourceError(
            f"sample_shape={tuple(declared.shape)}: {what} holds samples of shape {tuple(shape)}; drop "
            "sample_shape (it declares an iterable's samples), or reshape the samples first"
        )


def _spool_dir(near) -> str:
    """Beside the output (the disk that takes the store takes its spool), or TMPDIR for a URL."""

    if near is None or is_url(near):
        return tempfile.gettempdir()
    parent = Path(near).absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    return str(parent)


class _Kind(NamedTuple):
    """The sample or target part of a chunk: per-sample shape and dtype."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __str__(self):
        return f"{self.shape} {self.dtype.name}"


def _spooled(
    chunks: Iterable, stem: Path, declared: Declared, what: str, schema_of
) -> tuple[np.ndarray, np.ndarray]:
    """The chunks written to ``stem.x`` and ``stem.y`` as they come (one chunk in memory at a time),
    each checked against chunk 0 (and chunk 0 against what is declared and ``schema_of``); then
    memory-mapped."""
    first, count = None, 0
    with open(f"{stem}.x", "wb") as xf, open(f"{stem}.y", "wb") as yf:
        for index, chunk in enumerate(chunks):
            x, y = _chunk(chunk, index, what)
            if first is None:
                first = _first_kinds(x, y, declared, what)
                schema_of(x, y)
            _check_kind("samples", x, first[0], index, what)
            if _Kind(y.shape[1:], y.dtype) != first[1]:
                _check_kind("targets", y, first[1], index, what, cast=True)
                y = y.astype(first[1].dtype)
            xf.write(np.ascontiguousarray(x))
            yf.write(np.ascontiguousarray(y))
            count += len(x)
    if first is None:
        raise SourceError(f"{what} yielded no chunks; yield (x, y) numpy chunks of samples and their targets")
    return tuple(
        _Mapped(f"{stem}.{part}", 0, (count, *kind.shape), kind.dtype.str).open()
        for part, kind in zip("xy", first)
    )


def _chunk(chunk, index: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(chunk, (tuple, list)) or len(chunk) != 2:
        kind = f"a {type(chunk).__name__}" + (
            f" of shape {chunk.shape}" if isinstance(chunk, np.ndarray) else ""
        )
        raise SourceError(
            f"chunk {index} of {what} is {kind}, not an (x, y) pair of numpy arrays; yield (x, y) tuples "
            "(arrays whole go as a tuple: source=(x, y))"
        )
    for name, array in zip("xy", chunk):
        if not isinstance(array, np.ndarray):
            raise SourceError(
                f"chunk {index} of {what}: its {name} is a {type(array).__name__}, not a numpy array; yield "
                f"np.asarray({name})"
            )
    x, y = chunk
    if not x.ndim or not y.ndim or len(x) != len(y):
        raise SourceError(
            f"chunk {index} of {what} holds x of shape {x.shape} and y of shape {y.shape}; yield n samples "
            "and their n targets: x of shape (n, ...), y of shape (n, ...)"
        )
    return x, y


def _first_kinds(x: np.ndarray, y: np.ndarray, declared: Declared, what: str) -> tuple[_Kind, _Kind]:
    """Chunk 0's kinds, which every other chunk must share; chunk 0 itself must be what is declared."""
    want = _Kind(
        x.shape[1:] if declared.shape is None else tuple(declared.shape),
        x.dtype if declared.dtype is None else declared.dtype,
    )
    if _Kind(x.shape[1:], x.dtype) != want:
        raise SourceError(
            f"chunk 0 of {what} holds samples of shape {_Kind(x.shape[1:], x.dtype)}, not {want} as declared; "
            f"yield what sample_shape= and dtype= declare{_one_sample(x, want)}, or drop them"
        )
    return want, _Kind(y.shape[1:], y.dtype)


def _check_kind(
    part: str, array: np.ndarray, want: _Kind, index: int, what: str, *, cast: bool = False
) -> None:
    """Refuse a chunk of another shape or dtype than chunk 0's; targets may widen losslessly (``cast``)."""
    got = _Kind(array.shape[1:], array.dtype)
    if got == want or (cast and got.shape == want.shape and np.can_cast(got.dtype, want.dtype, "safe")):
        return
    raise SourceError(
        f"chunk {index} of {what} holds {part} of shape {got}, not {want} like chunk 0; yield chunks of one "
        f"shape and dtype{_one_sample(array, want) if part == 'samples' else ''}"
    )


def _one_sample(x: np.ndarray, want: _Kind) -> str:
    """The hint for a chunk that is one sample without its first axis."""
    return f" (a chunk is n samples: x of shape (n, *{want.shape}))" if x.shape == want.shape else ""


# -- tf.data ----------------------------------------------------------------------------------------


def _tf_chunks(dataset, options, what: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """A ``tf.data.Dataset`` as numpy chunks, front to back. Its ``element_spec`` says what an element
    is: ``(x, y)`` or a dict (columns picked like a Hugging Face dataset's); samples one by one, or
    batches already (a first dimension of None, as ``.batch()`` leaves it), which are read as they are."""
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        raise SourceError(f"{what} is a {type(dataset).__name__}; each split is {FORMS}")
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise SourceError(
            f"{what} is infinite (.repeat() without a count); pass dataset.take(n) samples of it"
        )
    spec, pick = dataset.element_spec, None
    if isinstance(spec, dict):
        x_name, y_name = _pick(list(spec), [], options, what)
        spec, pick = (spec[x_name], spec[y_name]), (x_name, y_name)
    if not isinstance(spec, tuple) or len(spec) != 2 or not all(isinstance(s, tf.TensorSpec) for s in spec):
        raise SourceError(
            f"{what}'s elements are {spec}; ooc takes (x, y) elements (tensorflow_datasets: as_supervised=True)"
        )
    shape = spec[0].shape
    batched = all(s.shape.rank and s.shape[0] is None for s in spec) and shape[1:].is_fully_defined()
    if not batched:
        if not shape.is_fully_defined():
            raise SourceError(
                f"{what}'s samples have shape {tuple(shape)}; ooc stores samples of one shape: resize or pad "
                "them in the pipeline (.map(...)) first"
            )
        dataset = dataset.batch(max(1, BLOCK_BYTES // max(1, shape.num_elements() * spec[0].dtype.size)))
    for element in dataset.as_numpy_iterator():
        yield (element[pick[0]], element[pick[1]]) if pick else element


# -- Hugging Face datasets ----------------------------------------------------------------------------


def _pick(columns: list[str], labelled: list[str], options, where: str) -> tuple[str, str]:
    """(samples, targets) columns: those named in ``options``; else the ClassLabel column (or the one
    named label, labels, target, y or class) and the one other column."""
    if options.x is not None:
        for name in (options.x, options.y):
            if name not in columns:
                raise SourceError(
                    f"{where} has no column {name!r} (its columns: {', '.join(columns)}); name one of those "
                    "with SourceOptions(x=..., y=...)"
                )
        return options.x, options.y
    targets = labelled or [c for c in columns if c.lower() in LABEL_COLUMNS]
    others = [c for c in columns if c not in targets[:1]]
    if len(targets) == 1 and len(others) == 1:
        return others[0], targets[0]
    x, y = (others or columns)[0], (targets or columns)[-1]
    raise SourceError(
        f"{where} has columns {', '.join(columns)}: name the samples' column and the targets' with "
        f'source_options=SourceOptions(x="{x}", y="{y}")'
    )


class _Spec(NamedTuple):
    """What ``_array_schema`` asks of an array: its shape (n, ...) and dtype."""

    shape: tuple[int, ...]
    dtype: np.dtype


class HuggingFaceSource(RandomAccess):
    """A ``datasets.Dataset`` per split, read at any rows through ``with_format("numpy")`` with each
    column's own dtype (the numpy format would widen integers to int64 and narrow floats to float32).
    A ``DatasetDict``'s ``test`` split is the test split (``validation`` where there is no ``test``;
    other splits are left out); a bare ``Dataset`` has its test split carved."""

    def __init__(self, name: str, datasets: dict, x: str, y: str, schema, x_shape: tuple[int, ...]):
        self.name, self.schema, self.x, self.y = name, schema, x, y
        self._datasets = datasets
        self._x_shape = x_shape  # per sample, as the column holds it (a gray image has no channel axis)
        self._views = {
            split: (
                ds.with_format("numpy", columns=[x], **_numpy_dtype(schema.dtype, ds.features[x])),
                ds.with_format("numpy", columns=[y], dtype=schema.target_dtype),
            )
            for split, ds in datasets.items()
        }

    @classmethod
    def open(cls, obj, options) -> HuggingFaceSource:
        datasets, name = _hf_splits(obj)
        features = datasets["train"].features
        labelled = [c for c, f in features.items() if type(f).__name__ == "ClassLabel"]
        x, y = _pick(list(features), labelled, options, name)
        for split, ds in datasets.items():
            for column in (x, y):
                if ds.features.get(column) != features[column]:
                    raise SourceError(
                        f"{name}: the {split} split's column {column!r} is {ds.features.get(column)!r}, not "
                        f"{features[column]!r} like train's; cast it to one type (ds.cast_column)"
                    )
        x_kind = _feature(features[x], x, name) or _first_image(datasets, x, name)
        y_kind = _feature(features[y], y, name)
        if y_kind is None:
            raise SourceError(
                f"{name}: the targets' column {y!r} holds images; name another with SourceOptions(y=...)"
            )
        _check_declared(Declared(options.sample_shape), x_kind[0], f"{name}'s column {x!r}")
        specs = {
            split: (_Spec((len(ds), *x_kind[0]), x_kind[1]), _Spec((len(ds), *y_kind[0]), y_kind[1]))
            for split, ds in datasets.items()
        }
        schema = _array_schema(
            name,
            specs,
            names={split: [f"column {x!r}", f"column {y!r}"] for split in specs},
            raw=options.raw,
            target_kind=options.target_kind,
            class_names=getattr(features[y], "names", None),
        )
        return cls(name, datasets, x, y, schema, x_kind[0])

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self._datasets)

    @property
    def order(self) -> dict[str, Any]:
        return {"kind": "source"}

    def num_samples(self, split: str) -> int:
        return len(self._datasets[split])

    def sha256(self) -> str:
        """Of each split's fingerprint (Hugging Face's hash of the data and of every transform since)
        and the columns read: hashing the rows again would decode every image once more."""
        picked = [[split, ds._fingerprint, self.x, self.y] for split, ds in self._datasets.items()]
        return hashlib.sha256(json.dumps(picked).encode()).hexdigest()

    def targets(self, split: str) -> np.ndarray:
        y = self._views[split][1][:][self.y]
        return y.reshape((len(y), *self.schema.target_shape))

    def read(self, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        run = len(indices) and indices[-1] - indices[0] == len(indices) - 1
        rows = slice(int(indices[0]), int(indices[-1]) + 1) if run else np.asarray(indices)
        x_view, y_view = self._views[split]
        x, y = x_view[rows][self.x], y_view[rows][self.y]
        if x.dtype == object or x.shape[1:] != self._x_shape:
            raise self._ragged(split, x, indices)
        return (
            x.reshape((len(indices), *self.schema.sample_shape)),
            y.reshape((len(indices), *self.schema.target_shape)),
        )

    def _ragged(self, split: str, x: np.ndarray, indices: np.ndarray) -> SourceError:
        """Images of another size or mode than the first: named by their row, with the fix."""
        want = f"{self._x_shape} {self.schema.dtype.name}"
        got = [f"{np.shape(image)} {np.asarray(image).dtype.name}" for image in x]
        odd = next((k for k, kind in enumerate(got) if kind != want), 0)
        row, got = indices[odd], got[odd]
        return SourceError(
            f"{self.name}: {split} row {row} of column {self.x!r} is an image of {got}, not {want} like the first; "
            f"give the images one size and mode first (ds.cast_column({self.x!r}, Image(mode='RGB')), a resize "
            "in ds.map)"
        )


def _hf_splits(obj) -> tuple[dict[str, Any], str]:
    """The train (and test) Datasets of a Dataset, a DatasetDict or a dict of Datasets, and a name."""
    import datasets

    if isinstance(obj, (datasets.IterableDataset, datasets.IterableDatasetDict)):
        raise SourceError(
            f"source is a datasets.{type(obj).__name__}, which has no length to convert; load it without "
            "streaming=True, or pass an iterable of (x, y) chunks made from it"
        )
    if isinstance(obj, datasets.Dataset):
        return {"train": obj}, f"the datasets.Dataset{_title(obj)}"
    if not isinstance(obj, datasets.DatasetDict):  # a dict of Datasets, its keys checked
        for split, ds in obj.items():
            if not isinstance(ds, datasets.Dataset):
                raise SourceError(
                    f"source[{split!r}] is a datasets.{type(ds).__name__}; pass a datasets.Dataset"
                )
        return obj, "the dict of datasets.Dataset"
    if "train" not in obj:
        raise SourceError(
            f"the datasets.DatasetDict has the splits {', '.join(obj)}; ooc needs a 'train' split: pass "
            "DatasetDict({'train': ..., 'test': ...})"
        )
    test = "test" if "test" in obj else "validation" if "validation" in obj else None
    name = f"the datasets.DatasetDict{_title(obj['train'])}" + (
        " (validation as test)" if test == "validation" else ""
    )
    return {"train": obj["train"], **({"test": obj[test]} if test else {})}, name


def _title(ds) -> str:
    return f" {ds.info.dataset_name!r}" if getattr(ds.info, "dataset_name", None) else ""


def _feature(feature, column: str, where: str) -> tuple[tuple[int, ...], np.dtype] | None:
    """A column's per-row shape and dtype from its ``Features`` entry; None for images (their size is
    in the data)."""
    import datasets

    kind = type(feature).__name__
    if isinstance(feature, datasets.Image):
        return None
    if isinstance(feature, datasets.ClassLabel):
        return (), np.dtype(np.int64)
    if isinstance(feature, datasets.Value):
        return (), _value_dtype(feature.dtype, column, where)
    if kind in ("Array2D", "Array3D", "Array4D", "Array5D") and None not in feature.shape:
        return tuple(feature.shape), _value_dtype(feature.dtype, column, where)
    if isinstance(feature, datasets.List) and feature.length >= 0:
        inner = _feature(feature.feature, column, where)
        if inner is not None:
            return (feature.length, *inner[0]), inner[1]
    raise SourceError(
        f"{where}: column {column!r} holds {feature!r}; ooc converts numbers, ClassLabel, Image, ArrayND and "
        "fixed-length List columns: name others with SourceOptions(x=..., y=...), or cast this one (ds.cast_column)"
    )


def _value_dtype(name: str, column: str, where: str) -> np.dtype:
    try:
        dtype = np.dtype(name)
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "biuf":
        raise SourceError(
            f"{where}: column {column!r} holds {name} values; ooc converts numbers: name other columns with "
            "SourceOptions(x=..., y=...)"
        )
    return dtype


def _first_image(datasets: dict, column: str, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """An Image column's shape and dtype: its first image's, decoded (every later read is checked)."""
    for ds in datasets.values():
        if len(ds):
            image = ds.with_format("numpy", columns=[column])[0][column]
            return image.shape, image.dtype
    raise SourceError(f"{where} holds no rows")


def _numpy_dtype(dtype: np.dtype, feature) -> dict[str, Any]:
    """``with_format("numpy")``'s dtype for a column: its own; none for images, which decode to theirs."""
    return {} if type(feature).__name__ == "Image" else {"dtype": dtype}
