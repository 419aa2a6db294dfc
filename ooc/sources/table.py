"""A table as a source: one row per sample, feature columns and a target column. Parquet (a file, or
a folder of files read as one table, through ``pyarrow.dataset``) keeps its column types; a CSV
table's features are parsed as float32. Both are streamed in record batches, never whole.

- The target is ``--target-column``, or else the one column named label, target, y or class (any
  case); none or several such columns are refused, naming them.
- Splits: a folder holding ``train.csv`` and ``test.csv`` (or ``train.parquet`` and
  ``test.parquet``), Kaggle's layout, is a table per split, and a test table must hold the target
  column. Otherwise the test split is carved by ``--test-fraction`` from the target column alone
  (read first, one number per row).
- Pixels: features that are all integers in 0–255 (in a CSV every value; in Parquet, integer
  columns) are stored as uint8, exact and 4× smaller than float32. That is decided by one streamed
  pass before writing, the same pyarrow safe cast per column that the writing pass makes (it fails on
  1.5, 256, -1 or an empty cell), so no value is ever changed. They are read as pixels (float32
  / 255) when ``--sample-shape`` gives an image's shape ((h, w), or (h, w, c) with c in 1, 3, 4) or
  every feature column is named pixel<N> (Kaggle's MNIST); else as they are, since a table of small
  counts is not an image. ``--raw`` keeps pixels as they are. ``notes`` says what was decided, for
  the summary line.
- ``--sample-shape`` reshapes each row's features; their count must be its product.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from ooc.errors import OptionError, SourceError
from ooc.schema import SAMPLE_DTYPES, Schema, schema_for
from ooc.sources.base import DEFAULT_TEST_FRACTION, FileSource, carve_test

BATCH_ROWS = 1 << 14  # Parquet rows per record batch
CSV_BLOCK_BYTES = 1 << 20  # CSV text per record batch (pyarrow's default)
TARGET_NAMES = ("label", "target", "y", "class")  # a target column found by its name, any case
PIXEL_NAME = re.compile(r"pixels?[_ ]?\d+", re.IGNORECASE)  # pixel0 … pixel783, Kaggle's MNIST


def is_table(path: Path) -> bool:
    """A CSV or Parquet file, a folder of Parquet files, or a folder of a table per split."""
    suffix = path.suffix.lower()
    return (
        suffix in (".csv", ".parquet")
        or (path.is_dir() and any(path.glob("*.parquet")))
        or split_tables(path) is not None
    )


def split_tables(path: Path) -> dict[str, Path] | None:
    """A folder's table per split, Kaggle's layout: train.csv and test.csv (or .parquet); None where the
    folder holds no train table."""
    if not path.is_dir() or any((path / split).is_dir() for split in ("train", "test")):
        return None  # train/ and test/ folders: images, or the recipe's files, beside their targets
    for suffix in (".csv", ".parquet"):
        if (path / f"train{suffix}").is_file():
            test = path / f"test{suffix}"
            return {"train": path / f"train{suffix}", **({"test": test} if test.is_file() else {})}
    return None


class _Table:
    """One table file (or Parquet folder), read by column names in streamed record batches."""

    def __init__(self, path: Path):
        self.shown = path  # as the user gave it, for messages
        self.path = path.absolute()  # what is read (a worker process may run elsewhere)
        self.is_csv = path.is_file() and path.suffix.lower() == ".csv"

    def columns(self) -> dict[str, np.dtype | None]:
        """Column names and their numpy types (None in a CSV: text, parsed as asked)."""
        try:
            if self.is_csv:
                import pyarrow.csv as pacsv

                with pacsv.open_csv(self.path) as reader:
                    return dict.fromkeys(reader.schema.names)
            schema = self._dataset().schema
            return {n: _numpy_type(schema.field(n).type) for n in schema.names}
        except (OSError, ValueError) as e:
            raise SourceError(
                f"{self.shown} is not a readable {'CSV' if self.is_csv else 'Parquet'} table "
                f"({' '.join(str(e).split())[:200]})"
            ) from None

    def _dataset(self):
        import pyarrow.dataset as ds

        return ds.dataset(self.path, format="parquet")

    def column(self, name: str) -> np.ndarray:
        """One column whole (the targets: one number per row)."""
        if self.is_csv:
            import pyarrow.csv as pacsv

            column = pacsv.read_csv(
                self.path, convert_options=pacsv.ConvertOptions(include_columns=[name])
            ).column(0)
        else:
            column = self._dataset().to_table(columns=[name]).column(0)
        values = column.to_numpy(zero_copy_only=False)
        if values.dtype.kind == "f" and values.dtype != np.float32 and self.is_csv:
            values = values.astype(np.float32)  # CSV text: parsed as float32, like the features
        return values

    def batches(self, columns: list[str], csv_types: dict) -> Iterator:
        """Record batches of ``columns``; a CSV's text parsed as ``csv_types`` (name → Arrow type)."""
        if self.is_csv:
            import pyarrow.csv as pacsv

            options = pacsv.ConvertOptions(column_types=csv_types, include_columns=columns)
            blocks = pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES)
            with pacsv.open_csv(self.path, read_options=blocks, convert_options=options) as reader:
                yield from reader
        else:
            yield from self._dataset().to_batches(columns=columns, batch_size=BATCH_ROWS)

    def files(self) -> list[Path]:
        return [self.path] if self.path.is_file() else sorted(self.path.rglob("*.parquet"))


class TableSource(FileSource):
    def __init__(
        self,
        path: Path,
        target_column: str | None = None,
        *,
        test_fraction: float | None = None,
        seed: int = 0,
        target_kind: str | None = None,
        sample_shape: tuple[int, ...] | None = None,
        raw: bool = False,
    ):
        self.path = path.absolute()
        self.notes: list[str] = []  # what was decided for the user, for the summary line
        tables = split_tables(path) or {"train": path}
        self._tables = {split: _Table(p) for split, p in tables.items()}
        train = self._tables["train"]
        columns = train.columns()
        self.target_column = target_column or self._found_target(train.shown, list(columns))
        self.features = self._feature_columns(train.shown, columns)
        targets = {split: self._test_targets(table, columns) for split, table in self._tables.items()}
        self._rows = {split: len(y) for split, y in targets.items()}  # a table per split: its rows
        self._pixels = all(self._all_uint8(table, columns) for table in self._tables.values())
        self._carve(targets, tables, test_fraction, seed)
        y = np.concatenate(list(targets.values()))
        x_dtype = np.uint8 if self._pixels else self._x_dtype(train, columns)
        shape = self._sample_shape(sample_shape)
        self.schema: Schema = self._schema(shape, x_dtype, y, target_kind=target_kind, raw=raw)
        if self._pixels:
            self.notes.append(self._pixel_note(raw, hint=sample_shape is None))

    # -- what the table holds ---------------------------------------------------------------------
    def _found_target(self, path: Path, columns: list[str]) -> str:
        """The one column named like a target (label, target, y, class); refused when none or several."""
        found = [c for c in columns if c.lower() in TARGET_NAMES]
        if not found:
            raise SourceError(
                f"{path} is a table: name its target column with --target-column NAME (none is named "
                f"{', '.join(TARGET_NAMES[:-1])} or {TARGET_NAMES[-1]})"
            )
        if len(found) > 1:
            raise SourceError(
                f"{path} is a table with several target columns by name ({', '.join(found)}): name one "
                "with --target-column NAME"
            )
        self.notes.append(f"target column {found[0]!r} found by its name")
        return found[0]

    def _feature_columns(self, where: Path, columns: dict) -> list[str]:
        names = list(columns)
        if self.target_column not in columns:
            raise SourceError(
                f"{where} has no column {self.target_column!r} (it has {', '.join(names[:12])}"
                f"{', …' if len(names) > 12 else ''}); name the target with --target-column"
            )
        features = [c for c in names if c != self.target_column]
        if not features:
            raise SourceError(f"{where}: no feature columns besides {self.target_column!r}")
        for name in features:
            if columns[name] is not None and columns[name].name not in SAMPLE_DTYPES:
                raise SourceError(
                    f"{where}: column {name!r} is {columns[name]}, not numbers; drop it from the table or "
                    "convert it"
                )
        return features

    def _test_targets(self, table: _Table, train_columns: dict) -> np.ndarray:
        """A table's targets; a test table must hold the train table's columns (and types), the
        target's too."""
        if table is self._tables["train"]:
            return table.column(self.target_column)
        train, columns = self._tables["train"].shown, table.columns()
        if self.target_column not in columns:
            raise SourceError(
                f"{table.shown} has no column {self.target_column!r}: a test split needs its targets "
                f"(Kaggle's test.csv has none); pass --source {train} to carve the test split from it "
                f"(--test-fraction, {DEFAULT_TEST_FRACTION} by default)"
            )
        missing = [c for c in self.features if c not in columns]
        extra = [c for c in columns if c not in self.features and c != self.target_column]
        retyped = [c for c in self.features if c in columns and columns[c] != train_columns[c]]
        if retyped:
            name = retyped[0]
            raise SourceError(
                f"{table.shown}: column {name!r} is {columns[name]}, but {train.name}'s is "
                f"{train_columns[name]}; both tables need the same columns"
            )
        if missing or extra:
            raise SourceError(
                f"{table.shown}: its columns differ from {train.name}'s (missing: "
                f"{', '.join(missing[:5]) or 'none'}; extra: {', '.join(extra[:5]) or 'none'}); both "
                "tables need the same columns"
            )
        return table.column(self.target_column)

    def _all_uint8(self, table: _Table, columns: dict) -> bool:
        """Whether every feature value is an integer in 0–255: one streamed pass, which stops at the
        first that is not. Parquet's float columns stay floats: their type says what they are."""
        types = [columns[n] for n in self.features]
        if not table.is_csv and not all(t is not None and t.kind in "iu" for t in types):
            return False
        if all(t == np.uint8 for t in types):
            return True
        for batch in table.batches(self.features, self._csv_types(pixels=True)):
            if any(_as_uint8(batch.column(name)) is None for name in self.features):
                return False
        return True

    def _x_dtype(self, train: _Table, columns: dict) -> np.dtype:
        return np.dtype(np.float32) if train.is_csv else np.result_type(*[columns[n] for n in self.features])

    def _carve(self, targets: dict, tables: dict, test_fraction: float | None, seed: int) -> None:
        """The test split: a table of its own, or rows of the one table (``_test``: one bool per row)."""
        if "test" in tables:
            train, test = tables["train"], tables["test"]
            if test_fraction is not None:
                raise OptionError(
                    f"--test-fraction: {train.parent} has {test.name}, a test split of its own; drop the "
                    f"option, or pass --source {train} to carve one from it"
                )
            self._test, self.carved = None, None
            self.notes.append(f"train and test splits from {train.name} and {test.name}")
            return
        fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
        y = targets["train"]
        self._test = _carve(y, fraction, seed, classes=y.dtype.kind in "iu")
        self.carved = {"test_fraction": fraction, "seed": seed}

    def _sample_shape(self, sample_shape: tuple[int, ...] | None) -> tuple[int, ...]:
        n = len(self.features)
        if sample_shape is None:
            return (n,)
        if math.prod(sample_shape) != n:
            shown = ",".join(map(str, sample_shape))
            raise OptionError(
                f"--sample-shape {shown}: {self._tables['train'].shown} has {n} feature columns besides "
                f"{self.target_column!r}, not {math.prod(sample_shape)}; pass sizes that multiply to {n}"
            )
        return tuple(sample_shape)

    def _schema(self, shape, x_dtype, y: np.ndarray, *, target_kind, raw: bool) -> Schema:
        """Pixels (float32 / 255) for uint8 features of an image's shape or named pixel<N>."""
        where = f"{self._tables['train'].shown}: column {self.target_column!r}"
        schema = schema_for(
            (len(y), *shape), x_dtype, y.shape, y.dtype, where=where, raw=raw, target_kind=target_kind
        )
        named = all(PIXEL_NAME.fullmatch(name) for name in self.features)
        if self._pixels and named and not raw and schema.decode == "none":
            schema = replace(schema, decode="pixels")
        return schema

    def _pixel_note(self, raw: bool, *, hint: bool) -> str:
        """What was decided for uint8 features; ``hint``: no --sample-shape was given, so name one."""
        stored = "features stored as uint8 (every value an integer in 0–255)"
        if raw:
            return f"{stored}, read as they are (--raw)"
        side = math.isqrt(len(self.features))
        shape = f"{side},{side}" if side * side == len(self.features) else "H,W"
        if self.schema.is_image:
            return f"{stored}, read as images of float32 / 255"
        pixels = self.schema.decode == "pixels"
        read = "read as float32 / 255" if pixels else "read as they are"
        if hint:
            read += f"; pass --sample-shape {shape} to read them as images" + (
                "" if pixels else " of float32 / 255"
            )
        return f"{stored}, {read}"

    # -- the Source protocol --------------------------------------------------------------------------
    def _hashed_files(self) -> list[Path]:
        return [f for table in self._tables.values() for f in table.files()]

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", "test")

    def num_samples(self, split: str) -> int:
        if self._test is None:
            return self._rows[split]
        return int(self._test.sum()) if split == "test" else int((~self._test).sum())

    def _csv_types(self, *, pixels: bool) -> dict:
        """How a CSV's text is parsed: pixels as float64 (then cast to uint8 exactly), other features
        as float32."""
        import pyarrow as pa

        return {n: pa.float64() if pixels else pa.float32() for n in self.features}

    def _split_batches(self, split: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(x, y) of every row of ``split``'s table in order; with a carved test split, the rows of
        the other split are left out."""
        import pyarrow as pa

        table = self._tables.get(split, self._tables["train"])
        types = self._csv_types(pixels=self._pixels) | {
            self.target_column: pa.from_numpy_dtype(self.schema.target_dtype)
        }
        row = 0
        for batch in table.batches([*self.features, self.target_column], types):
            x = np.stack([self._feature(batch, name, table) for name in self.features], axis=1)
            y = batch.column(self.target_column).to_numpy(zero_copy_only=False)
            if self._test is not None:
                mine = self._test[row : row + batch.num_rows] == (split == "test")
                x, y = x[mine], y[mine]
            row += batch.num_rows
            yield (
                x.astype(self.schema.dtype, copy=False).reshape((len(x), *self.schema.sample_shape)),
                y.astype(self.schema.target_dtype, copy=False),
            )

    def _feature(self, batch, name: str, table: _Table) -> np.ndarray:
        column = batch.column(name)
        if not self._pixels:
            if column.null_count and not _is_float(column.type):  # to_numpy would make them floats
                raise SourceError(
                    f"{table.shown}: column {name!r} has empty cells, which {column.type} cannot hold; fill "
                    "them or drop those rows"
                )
            return column.to_numpy(zero_copy_only=False)
        exact = _as_uint8(column)
        if exact is None:
            raise SourceError(
                f"{table.shown} changed while it was converted: column {name!r} no longer holds integers "
                "0–255 only; convert it again"
            )
        return exact.to_numpy(zero_copy_only=False)

    def iter_chunks(
        self, split: str, chunk_size: int, limit: int | None = None, start: int = 0
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Rows ``[start, min(limit, n))`` of ``split`` in table order, ``chunk_size`` at a time."""
        total = self.num_samples(split) if limit is None else min(limit, self.num_samples(split))
        seen = 0
        pending_x, pending_y = [], []
        for x, y in self._split_batches(split):
            keep = slice(max(0, start - seen), max(0, total - seen))
            seen += len(x)
            x, y = x[keep], y[keep]
            if len(x):
                pending_x.append(x)
                pending_y.append(y)
            while sum(map(len, pending_x)) >= chunk_size:
                xs, ys = np.concatenate(pending_x), np.concatenate(pending_y)
                yield xs[:chunk_size], ys[:chunk_size]
                pending_x, pending_y = [xs[chunk_size:]], [ys[chunk_size:]]
            if seen >= total:
                break
        if sum(map(len, pending_x)):
            yield np.concatenate(pending_x), np.concatenate(pending_y)


def _as_uint8(column):
    """The Arrow column as uint8 if that is exact (integers in 0–255, no empty cell), else None: a
    safe cast refuses 1.5, 256, -1 and NaN."""
    import pyarrow as pa

    if column.null_count:
        return None
    try:
        return column.cast(pa.uint8())
    except pa.ArrowInvalid:
        return None


def _is_float(arrow_type) -> bool:
    import pyarrow as pa

    return pa.types.is_floating(arrow_type)


def _numpy_type(arrow_type):
    try:
        return np.dtype(arrow_type.to_pandas_dtype())
    except (NotImplementedError, TypeError):
        return np.dtype(object)


def _carve(targets: np.ndarray, test_fraction: float, seed: int, *, classes: bool) -> np.ndarray:
    """A boolean per row: whether it goes to the test split (stratified for classes, seeded)."""
    _, test = carve_test(targets, test_fraction=test_fraction, seed=seed, classes=classes, what="rows")
    mask = np.zeros(len(targets), bool)
    mask[test] = True
    return mask
