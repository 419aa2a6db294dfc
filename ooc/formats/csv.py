"""One CSV file per sample, exactly as the classic recipe lays it out.

On disk::

    <store>/train/00001.csv …     28 lines of 28 comma-separated floats, pixel / 255
    <store>/train_target.csv      rows "00001.csv,5" (file name, label), no header
    <store>/test/…, <store>/test_target.csv

Names are 1-based and zero-padded to the width of the split's count. Values are written as the
shortest text that parses back to the same float32, so a CSV store reads bit-identically to the
binary layouts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ooc.errors import CorruptStoreError
from ooc.formats.base import U8_TO_FLOAT32, LayoutOptions, Store as _Store, Writer as _Writer

NAME = "csv"
OPTIONS = LayoutOptions(compressions=("none",), default_compression="none", dtypes=("float32",),
                        default_dtype="float32", default_chunk_size=None, chunking="one file per sample")

_PIXEL_TEXT = np.array([str(v) for v in U8_TO_FLOAT32])


def _parse_joined(text: bytes, columns: int) -> np.ndarray | None:
    """Rows of ``columns`` float32 values, or None if the text is not exactly that."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [f"c{i}" for i in range(columns)]
    try:
        table = pacsv.read_csv(pa.py_buffer(text), read_options=pacsv.ReadOptions(column_names=names),
                               convert_options=pacsv.ConvertOptions(column_types={n: pa.float32() for n in names}))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    if table.num_columns != columns or any(c.null_count for c in table.columns):
        return None
    return np.stack([c.to_numpy() for c in table.columns], axis=1)


def target_path(store: Path, split: str) -> Path:
    return store / f"{split}_target.csv"


class Writer(_Writer):
    def begin_split(self, split, count, sample_shape, label_dtype):
        self._dir = self.path / split
        self._dir.mkdir()
        self._width = len(str(count))
        self._targets = open(target_path(self.path, split), "w", encoding="ascii")

    def write(self, split, start, x, y):
        rows = []
        for offset, (sample, label) in enumerate(zip(x, y)):
            name = f"{start + offset + 1:0{self._width}d}.csv"
            text = "\n".join(",".join(line) for line in _PIXEL_TEXT[sample]) + "\n"
            (self._dir / name).write_text(text, encoding="ascii")
            rows.append(f"{name},{int(label)}\n")
        self._targets.write("".join(rows))

    def close(self):
        if getattr(self, "_targets", None) is not None:
            self._targets.close()
            self._targets = None


class Store(_Store):
    format_name = NAME

    def __init__(self, path, manifest):
        super().__init__(path, manifest)
        self._names: dict[str, np.ndarray] = {}  # split -> file name of each sample, from the targets

    def _file_names(self, split: str) -> np.ndarray:
        self.labels(split)
        return self._names[split]

    def _read_labels(self, split):
        path = target_path(self.path, split)
        try:
            table = pd.read_csv(path, header=None, names=["file", "label"], dtype={"file": str})
        except (OSError, ValueError, pd.errors.ParserError) as e:
            raise CorruptStoreError(f"{path}: cannot read the targets ({e}); re-convert with `ooc convert --format csv --overwrite`") from None
        if len(table) != self.num_samples(split) or table["label"].dtype.kind not in "iu":
            raise CorruptStoreError(f"{path}: expected {self.num_samples(split)} 'file,label' rows with integer labels, found {len(table)} rows; re-convert with `ooc convert --format csv --overwrite`")
        self._names[split] = table["file"].to_numpy()
        return table["label"].to_numpy()

    def _read_sorted(self, split, indices):
        """All files of the batch parsed in one pyarrow call (multi-threaded C parser, ~2.5x
        np.loadtxt per file, measured); any irregular file sends the batch to the per-file parser,
        which names the culprit."""
        names = self._file_names(split)
        paths = [self.path / split / names[i] for i in indices]
        try:
            texts = [p.read_bytes() for p in paths]
        except FileNotFoundError:
            texts = None
        if texts is not None and all(t.endswith(b"\n") for t in texts):
            values = _parse_joined(b"".join(texts), self.sample_shape[1])
            if values is not None and values.shape[0] == len(paths) * self.sample_shape[0]:
                return values.reshape((len(paths), *self.sample_shape))
        return np.stack([self._parse(p) for p in paths]) if paths else np.empty((0, *self.sample_shape), np.float32)

    def _parse(self, path: Path) -> np.ndarray:
        expected = int(np.prod(self.sample_shape))
        try:
            values = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
        except FileNotFoundError:
            raise CorruptStoreError(f"{path}: file is missing; re-convert with `ooc convert --format csv --overwrite`") from None
        except ValueError:
            found = sum(len([v for v in line.split(",") if v.strip()]) for line in path.read_text(errors="replace").splitlines())
            raise CorruptStoreError(f"{path}: expected {expected} numeric values ({' lines of '.join(map(str, self.sample_shape))}), found {found} values or a non-numeric one; re-convert with `ooc convert --format csv --overwrite`") from None
        if values.shape != self.sample_shape:
            raise CorruptStoreError(f"{path}: expected {expected} values ({' lines of '.join(map(str, self.sample_shape))}), found {values.size} in {values.shape[0]} lines; re-convert with `ooc convert --format csv --overwrite`")
        return values
