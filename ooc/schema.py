"""What a dataset's samples and targets are: declared once by its source, kept in the manifest.

A store keeps the values its source holds, bit for bit, in the source's dtype. What reading does to
them is declared here, and only that is applied (xarray's ``decode_cf`` is the model):

- ``decode="pixels"``: uint8 images, returned as float32 ``v / 255`` (the recipe's convention);
- ``decode="none"``: returned as stored.

A ``--dtype float32`` conversion of pixels stores the decoded values and declares ``"none"``: every
layout then returns the same bits either way.

Targets have a *kind*: ``classes`` (integer class numbers, shape ``()``), ``onehot`` and
``multilabel`` (vectors of 0/1, shape ``(k,)``: one 1 per row, or any number), ``regression``
(floats, scalar or any shape). A source may leave 0/1 vectors as ``binary``: the conversion then
decides one-hot or multi-label from the values it writes (``TargetTally``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ooc.errors import SourceError

DECODES = ("pixels", "none")
TARGET_KINDS = ("classes", "onehot", "multilabel", "regression")
SAMPLE_DTYPES = (
    "uint8",
    "uint16",
    "uint32",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "float32",
    "float64",
    "bool",
)
MAX_RANK = 4


@dataclass(frozen=True)
class Schema:
    """Shapes and dtypes of one sample and its target, and how they are read back."""

    sample_shape: tuple[int, ...]
    dtype: np.dtype  # of x, as stored
    decode: str = "pixels"
    target_kind: str = "classes"  # or "binary" until the data decides
    target_shape: tuple[int, ...] = ()
    target_dtype: np.dtype = field(default_factory=lambda: np.dtype(np.uint8))
    num_classes: int | None = None  # classes: filled in from the labels written unless the source names them
    class_names: tuple[str, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "sample_shape", tuple(int(d) for d in self.sample_shape))
        object.__setattr__(self, "target_shape", tuple(int(d) for d in self.target_shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "target_dtype", np.dtype(self.target_dtype))

    # -- reading ----------------------------------------------------------------------------------
    def decoded(self, x: np.ndarray) -> np.ndarray:
        """What a read returns for stored values: only the declared decoding, nothing else."""
        if self.decode == "pixels":
            return np.divide(x, np.float32(255), dtype=np.float32)
        return x

    @property
    def read_dtype(self) -> np.dtype:
        return np.dtype(np.float32) if self.decode == "pixels" else self.dtype

    def read_targets(self, y: np.ndarray) -> np.ndarray:
        """Class numbers widen to int64 (what Keras' sparse losses take); other targets stay as stored."""
        return y.astype(np.int64, copy=False) if self.target_kind == "classes" else y

    @property
    def is_image(self) -> bool:
        """Whether the LeNets fit: (h, w, channels) samples."""
        return len(self.sample_shape) == 3

    # -- the manifest -------------------------------------------------------------------------------
    def to_manifest(self) -> dict[str, Any]:
        target = {"kind": self.target_kind, "shape": list(self.target_shape), "dtype": self.target_dtype.name}
        if self.num_classes is not None:
            target["num_classes"] = self.num_classes
        if self.class_names:
            target["class_names"] = list(self.class_names)
        return {
            "sample_shape": list(self.sample_shape),
            "x": {"dtype": self.dtype.name, "decode": self.decode},
            "target": target,
        }

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> Schema:
        x, target = manifest["x"], manifest["target"]
        return cls(
            tuple(manifest["sample_shape"]),
            np.dtype(x["dtype"]),
            x["decode"],
            target["kind"],
            tuple(target["shape"]),
            np.dtype(target["dtype"]),
            target.get("num_classes"),
            tuple(target["class_names"]) if target.get("class_names") else None,
        )

    def describe(self) -> tuple[str, str]:
        """(samples, targets) in a few words, for ``ooc info`` and logs."""
        shape = (
            "(" + ", ".join(map(str, self.sample_shape)) + ("," if len(self.sample_shape) == 1 else "") + ")"
        )
        x = f"{shape} {self.dtype.name}" + (", read as float32 / 255" if self.decode == "pixels" else "")
        yshape = (
            "(" + ", ".join(map(str, self.target_shape)) + ("," if len(self.target_shape) == 1 else "") + ")"
        )
        if self.target_kind == "classes":
            y = f"{self.num_classes} classes ({self.target_dtype.name})"
            if self.class_names:
                shown = ", ".join(self.class_names[:10]) + (", …" if len(self.class_names) > 10 else "")
                y += f": {shown}"
        elif self.target_kind in ("onehot", "multilabel"):
            kind = "one-hot" if self.target_kind == "onehot" else "multi-label"
            y = f"{yshape} {self.target_dtype.name} {kind}, {self.num_classes} classes"
        else:
            y = f"{yshape} {self.target_dtype.name} regression"
        return x, y

    def with_stored_dtype(self, dtype: str) -> Schema:
        """The schema of a store that keeps these samples as ``dtype``: pixels may be stored decoded."""
        if np.dtype(dtype) == self.dtype:
            return self
        return replace(self, dtype=np.dtype(dtype), decode="none")


def schema_for(
    x_shape: tuple[int, ...],
    x_dtype,
    y_shape: tuple[int, ...],
    y_dtype,
    *,
    where: str,
    raw: bool = False,
    target_kind: str | None = None,
    class_names=None,
) -> Schema:
    """The schema of arrays ``x`` (n, ...) and ``y`` (n, ...): uint8 images of (h, w) or (h, w, c) are
    pixels (decoded / 255 unless ``raw``); grayscale (h, w) gains its channel axis. Refuses, naming
    ``where``, what ooc cannot store."""
    x_dtype, y_dtype = np.dtype(x_dtype), np.dtype(y_dtype)
    sample_shape = tuple(x_shape[1:])
    if x_dtype.name not in SAMPLE_DTYPES:
        raise SourceError(
            f"{where}: samples are {x_dtype}; ooc stores {', '.join(SAMPLE_DTYPES)}: convert the array first"
        )
    if not 1 <= len(sample_shape) <= MAX_RANK or min(sample_shape, default=1) < 1:
        raise SourceError(
            f"{where}: samples have shape {sample_shape}; ooc stores samples of 1 to {MAX_RANK} dimensions, "
            "each at least 1 (the first axis of x counts the samples)"
        )
    image = x_dtype == np.uint8 and (
        len(sample_shape) == 2 or (len(sample_shape) == 3 and sample_shape[2] in (1, 3, 4))
    )
    if image and len(sample_shape) == 2:
        sample_shape = (*sample_shape, 1)
    kind = target_kind or infer_target_kind(y_shape[1:], y_dtype, where=where)
    check_target_kind(kind, tuple(y_shape[1:]), y_dtype, where=where)
    num_classes = (
        len(class_names)
        if class_names
        else (int(y_shape[1]) if kind in ("onehot", "multilabel", "binary") else None)
    )
    return Schema(
        sample_shape,
        x_dtype,
        "pixels" if image and not raw else "none",
        kind,
        tuple(y_shape[1:]),
        y_dtype,
        num_classes,
        tuple(class_names) if class_names else None,
    )


def infer_target_kind(shape: tuple[int, ...], dtype, *, where: str) -> str:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return "regression"
    if dtype.kind in "iub" and shape == ():
        if dtype.kind == "b":
            raise SourceError(
                f"{where}: targets are booleans of shape (n,); store them as integer classes 0 and 1"
            )
        return "classes"
    if dtype.kind in "iub" and len(shape) == 1:
        return "binary"
    raise SourceError(
        f"{where}: targets are {dtype} of shape (n, {', '.join(map(str, shape))}); ooc takes integer classes "
        "(n,), "
        "0/1 vectors (n, k) for one-hot or multi-label, or floats for regression"
    )


def check_target_kind(kind: str, shape: tuple[int, ...], dtype, *, where: str) -> None:
    dtype = np.dtype(dtype)
    if kind not in (*TARGET_KINDS, "binary"):
        raise SourceError(f"{where}: unknown target kind {kind!r}; choose one of {', '.join(TARGET_KINDS)}")
    ok = {
        "classes": shape == () and dtype.kind in "iu",
        "regression": dtype.kind in "fiu",
        "binary": len(shape) == 1 and dtype.kind in "iubf",
        "onehot": len(shape) == 1 and dtype.kind in "iubf",
        "multilabel": len(shape) == 1 and dtype.kind in "iubf",
    }[kind]
    if not ok:
        raise SourceError(
            f"{where}: targets of dtype {dtype} and shape (n{''.join(', ' + str(d) for d in shape)}) cannot "
            "be "
            f"{kind}: classes are integers (n,), one-hot and multi-label are vectors (n, k)"
        )


def check_chunk(schema: Schema, x, y, *, where: str, split: str, start: int) -> None:
    """A source chunk must be what its schema declares: nothing is ever converted silently."""
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise SourceError(
            f"{where}: split {split} at sample {start} yields {type(x).__name__} and {type(y).__name__}, not "
            "numpy arrays"
        )
    if x.dtype != schema.dtype or x.shape[1:] != schema.sample_shape:
        raise SourceError(
            f"{where}: split {split} at sample {start} yields x of {x.dtype} {x.shape[1:]}, but the source "
            "declares "
            f"{schema.dtype} {schema.sample_shape}; nothing was converted: fix the source"
        )
    if y.dtype != schema.target_dtype or y.shape[1:] != schema.target_shape or len(y) != len(x):
        raise SourceError(
            f"{where}: split {split} at sample {start} yields {len(y)} targets of {y.dtype} {y.shape[1:]} for "
            ""
            f"{len(x)} "
            f"samples, but the source declares {schema.target_dtype} {schema.target_shape}; fix the source"
        )


MAX_CLASSES = 2**24  # more is a mistake (ids, not classes): a softmax over them would not fit in memory


@dataclass
class TargetTally:
    """What the targets written so far say: the largest class number, whether every 0/1 vector had
    exactly one 1. Kept in the conversion's journal, so a resumed conversion decides the same."""

    label_max: int = -1
    one_hot: bool = True
    train_changes: int = 0  # class changes between neighbouring train samples: how grouped the order is
    train_last: int | None = None
    train_counts: list[int] = field(default_factory=list)

    def add(self, schema: Schema, y: np.ndarray, *, where: str, split: str) -> None:
        if not y.size:
            return
        if schema.target_kind == "classes":
            if y.min() < 0:
                raise SourceError(
                    f"{where}: the {split} targets hold negative class numbers; classes must be 0, 1, …"
                )
            top = int(y.max())
            if top >= MAX_CLASSES:
                raise SourceError(
                    f"{where}: the {split} targets hold class {top}; ooc takes at most {MAX_CLASSES:,} classes "
                    "(2**24), numbered 0, 1, …: renumber them, or pass --target-kind regression if they are "
                    "numbers to predict"
                )
            self.label_max = max(self.label_max, top)
            if split == "train":
                self._count_train(y.astype(np.int64))
        elif schema.target_kind in ("binary", "onehot", "multilabel"):
            if not np.isin(y, (0, 1)).all():
                raise SourceError(
                    f"{where}: the {split} targets are vectors of {y.dtype} with values other than 0 and 1; "
                    "one-hot and multi-label targets are 0/1 (pass float targets for regression)"
                )
            sums = y.reshape(len(y), -1).sum(axis=1, dtype=np.int64)
            self.one_hot = self.one_hot and bool((sums == 1).all())
            if schema.target_kind == "onehot" and not self.one_hot:
                raise SourceError(
                    f"{where}: a {split} target is declared one-hot but does not hold exactly one 1"
                )

    def _count_train(self, y: np.ndarray) -> None:
        self.train_changes += int(np.count_nonzero(np.diff(y))) + (
            self.train_last is not None and int(y[0]) != self.train_last
        )
        self.train_last = int(y[-1])
        counts = np.bincount(y, minlength=len(self.train_counts))
        counts[: len(self.train_counts)] += np.array(self.train_counts, dtype=np.int64)
        self.train_counts = counts.tolist()

    def grouped_by_class(self) -> bool:
        """Whether the train split came class by class: fewer than a quarter of the class changes
        between neighbours that a random order has (the chunk shuffle then feeds one-class batches)."""
        n = sum(self.train_counts)
        if n < 100:
            return False
        shares = np.array(self.train_counts) / n
        expected = (1 - float((shares**2).sum())) * (n - 1)
        return expected > 0 and self.train_changes < expected / 4

    def finish(self, schema: Schema) -> Schema:
        """The schema as written: the number of classes and, for 0/1 vectors, their kind."""
        if schema.target_kind == "classes":
            count = max(self.label_max + 1, len(schema.class_names or ()), 1)
            if schema.num_classes is not None and self.label_max >= schema.num_classes:
                raise SourceError(
                    f"class {self.label_max} is out of range for the {schema.num_classes} classes the source "
                    "names"
                )
            return replace(schema, num_classes=schema.num_classes or count)
        if schema.target_kind == "binary":
            return replace(schema, target_kind="onehot" if self.one_hot else "multilabel")
        return schema

    def to_json(self) -> dict[str, Any]:
        return {
            "label_max": self.label_max,
            "one_hot": self.one_hot,
            "train_changes": self.train_changes,
            "train_last": self.train_last,
            "train_counts": self.train_counts,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TargetTally:
        return cls(
            int(data.get("label_max", -1)),
            bool(data.get("one_hot", True)),
            int(data.get("train_changes", 0)),
            data.get("train_last"),
            list(data.get("train_counts", [])),
        )
