"""A table as a source: one row per sample, feature columns and a target column. Parquet (a file or
a folder of files, through ``pyarrow.dataset``) keeps its column types; a CSV table is parsed as
float32 features. Both are streamed in record batches, never whole; the test split is carved by
``--test-fraction`` from the target column alone (read first, one number per row)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ooc.errors import SourceError
from ooc.schema import SAMPLE_DTYPES, Schema, schema_for
from ooc.sources.base import FileSource, carve_test

BATCH_ROWS = 1 << 14


class TableSource(FileSource):
    def __init__(
        self,
        path: Path,
        target_column: str,
        *,
        test_fraction: float,
        seed: int,
        target_kind: str | None = None,
    ):
        self.path = path.absolute()
        self.target_column = target_column
        self._is_csv = path.is_file() and path.suffix.lower() == ".csv"
        columns, types = self._columns()
        if target_column not in columns:
            raise SourceError(
                f"{path} has no column {target_column!r} (it has {', '.join(columns[:12])}"
                f"{', …' if len(columns) > 12 else ''}); name the target with --target-column"
            )
        self.features = [c for c in columns if c != target_column]
        if not self.features:
            raise SourceError(f"{path}: no feature columns besides {target_column!r}")
        for name in self.features:
            if types[name] is not None and types[name].name not in SAMPLE_DTYPES:
                raise SourceError(
                    f"{path}: column {name!r} is {types[name]}, not numbers; drop it from the table or "
                    "convert it"
                )
        x_dtype = np.float32 if self._is_csv else np.result_type(*[types[n] for n in self.features])
        targets = self._targets()
        self._test = _carve(targets, test_fraction, seed, classes=targets.dtype.kind in "iu")
        self.carved = {"test_fraction": test_fraction, "seed": seed}
        self.schema: Schema = schema_for(
            (len(targets), len(self.features)),
            x_dtype,
            targets.shape,
            targets.dtype,
            where=f"{path}: column {target_column!r}",
            target_kind=target_kind,
        )

    def _columns(self) -> tuple[list[str], dict]:
        try:
            if self._is_csv:
                import pyarrow.csv as pacsv

                with pacsv.open_csv(self.path) as reader:
                    return reader.schema.names, {n: None for n in reader.schema.names}
            names = self._dataset().schema.names
            return names, {n: _numpy_type(self._dataset().schema.field(n).type) for n in names}
        except (OSError, ValueError) as e:
            raise SourceError(
                f"{self.path} is not a readable {'CSV' if self._is_csv else 'Parquet'} table "
                f"({' '.join(str(e).split())[:200]})"
            ) from None

    def _dataset(self):
        import pyarrow.dataset as ds

        return ds.dataset(self.path, format="parquet")

    def _targets(self) -> np.ndarray:
        if self._is_csv:
            import pyarrow.csv as pacsv

            column = pacsv.read_csv(
                self.path, convert_options=pacsv.ConvertOptions(include_columns=[self.target_column])
            ).column(0)
        else:
            column = self._dataset().to_table(columns=[self.target_column]).column(0)
        values = column.to_numpy(zero_copy_only=False)
        if values.dtype.kind == "f" and values.dtype != np.float32 and self._is_csv:
            values = values.astype(np.float32)  # CSV text: parsed as float32, like the features
        return values

    def _hashed_files(self) -> list[Path]:
        return [self.path] if self.path.is_file() else sorted(p for p in self.path.rglob("*.parquet"))

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", "test")

    def num_samples(self, split: str) -> int:
        return int(self._test.sum()) if split == "test" else int((~self._test).sum())

    def _batches(self) -> Iterator:
        if self._is_csv:
            import pyarrow as pa
            import pyarrow.csv as pacsv

            types = {n: pa.float32() for n in self.features} | {
                self.target_column: pa.from_numpy_dtype(self.schema.target_dtype)
            }
            with pacsv.open_csv(
                self.path, convert_options=pacsv.ConvertOptions(column_types=types)
            ) as reader:
                yield from reader
        else:
            yield from self._dataset().to_batches(
                columns=[*self.features, self.target_column], batch_size=BATCH_ROWS
            )

    def iter_chunks(
        self, split: str, chunk_size: int, limit: int | None = None, start: int = 0
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Rows ``[start, min(limit, n))`` of ``split`` in table order, ``chunk_size`` at a time."""
        total = self.num_samples(split) if limit is None else min(limit, self.num_samples(split))
        want_test, row, seen = split == "test", 0, 0
        pending_x, pending_y = [], []
        for batch in self._batches():
            mine = self._test[row : row + batch.num_rows] == want_test
            row += batch.num_rows
            x = np.stack([batch.column(n).to_numpy(zero_copy_only=False) for n in self.features], axis=1)[
                mine
            ]
            y = batch.column(self.target_column).to_numpy(zero_copy_only=False)[mine]
            keep = slice(max(0, start - seen), max(0, total - seen))
            seen += len(x)
            x, y = (
                x[keep].astype(self.schema.dtype, copy=False),
                y[keep].astype(self.schema.target_dtype, copy=False),
            )
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
