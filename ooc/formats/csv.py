"""One CSV file per sample, exactly as the classic recipe lays it out and reads it back.

On disk::

    <store>/train/00001.csv …     28 lines of 28 floats separated by spaces, pixel / 255
    <store>/target.csv            rows "00001.csv,5" (file name, target) in file order, no header
    <store>/test/…, <store>/test_target.csv

so that the recipe's own loader reads it: ``np.loadtxt(file)`` (whitespace-separated, its default)
for each of ``sorted(glob("train/*.csv"))`` and ``pd.read_csv("target.csv", header=None).iloc[:, 1]``
for their labels. ``delimiter`` ("whitespace" by default; "comma", "tab", "semicolon") is the
samples' dialect; stores written before it had comma-separated samples and ``train_target.csv``,
and read as they are (no ``delimiter`` in their options).

A sample of shape (a, b, …) is ``a`` lines of ``b × …`` values; a 1-d sample is one line. Vector
targets are several values after the name. Names are 1-based and zero-padded to the width of the
split's count. Values are written as the shortest text that parses back to the same value of the
stored dtype (pixels are stored decoded, as float32, like the recipe), so a CSV store reads
bit-identically to the binary layouts. An interrupted conversion resumes after its last committed
sample file.

``ooc adopt`` makes a store of CSV files that are already there (the recipe's own folder, in any
dialect ``ooc.formats.text`` reads): the manifest's ``csv`` entry then says, per split, which folder
holds the files and which targets file names them (``{"train": {"folder": "train", "targets":
"target.csv", "header": true}}``, or ``"by_position": true`` where its rows are matched to the files
in sorted name order), and its options the dialect and ``rounding`` "float64" (values as
``np.loadtxt`` reads them).

Batches are read and parsed by ``ooc.formats.text`` (one `read` call per file, a compiled exact
parser): at one file per sample, parsing is the whole cost of the layout.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from ooc.errors import CorruptStoreError
from ooc.formats.base import LayoutOptions, ParallelParts, Resumable
from ooc.formats.base import Store as _Store
from ooc.formats.base import Writer as _Writer
from ooc.formats.text import (
    DELIMITERS,
    _parse_files,  # noqa: F401  (tests reach the compiled parser here)
    _parse_joined,
    _read_files,
    as_text,
    canonical,
    grid,
    line_widths,
    read_and_parse,
    sample_text,
)
from ooc.manifest import data_checksum
from ooc.schema import SAMPLE_DTYPES

NAME = "csv"
# float16 is left out: no parser at hand rounds decimal text to float16 directly, and parsing through
# float32 could round twice
OPTIONS = LayoutOptions(
    compressions=("none",),
    default_compression="none",
    default_chunk_size=None,
    pixel_dtype="float32",
    dtypes=tuple(d for d in SAMPLE_DTYPES if d != "float16"),
    chunking="one file per sample",
    delimiters=tuple(DELIMITERS),
    default_delimiter="whitespace",
    bench_jobs=True,  # text: CPU-bound
)
# dtypes whose every value is a float32 too: the compiled float32 parser reads them exactly
_VIA_FLOAT32 = ("float32", "uint8", "int8", "uint16", "int16", "bool")


def _grid_of(path: Path, delimiter: str) -> tuple[int, int]:
    """(lines, values on the first line) of a sample file, as it is."""
    widths = line_widths(path.read_bytes(), delimiter)
    return len(widths), (widths[0] if widths else 0)


def target_path(store: Path, split: str, recipe_names: bool = True) -> Path:
    """The split's targets file: ``target.csv`` for train, where the recipe reads it, except in
    stores written before the delimiter option (``train_target.csv``)."""
    if split == "train" and recipe_names:
        return store / "target.csv"
    return store / f"{split}_target.csv"


class Writer(_Writer, Resumable, ParallelParts):
    """A sample's file is final once written. The targets file grows a row per sample; the journal
    keeps its committed size and CRC, so a resumed conversion cuts it back to that and goes on."""

    def __init__(self, path, **options):
        super().__init__(path, **options)
        self._delimiter = self.delimiter or "comma"
        self._targets = None  # the open targets file of the split being written
        self._crc = 0  # of the targets written so far
        self._counts: dict[str, int] = {}
        self._dir = self.path
        self._width = 1  # digits of the split's file names

    def begin_split(self, split, count, schema):
        self._open(split, count, size=0, crc=0)

    def _open(self, split, count, *, size, crc):
        self.close()
        self._dir = self.path / split
        self._dir.mkdir(exist_ok=True)
        self._counts[split] = count
        self._width = len(str(count))
        self._targets = open(self._target_file(split), "r+b" if size else "wb")
        self._targets.truncate(size)
        self._targets.seek(size)
        self._crc = crc

    def resume_split(self, split, count, schema, done, state):
        self._counts[split] = count
        if done == count:
            return done  # the split's files are final and were checked against the journal
        size, crc = state.get("targets", (0, 0))
        path = self._target_file(split)
        try:
            with open(path, "rb") as f:
                kept = f.read(size)
        except OSError:
            kept = b""
        if not done or len(kept) != size or zlib.crc32(kept) != crc:
            self.begin_split(split, count, schema)
            return 0
        self._open(split, count, size=size, crc=crc)
        return done

    def _target_file(self, split: str) -> Path:
        return target_path(self.path, split, recipe_names=self.delimiter is not None)

    def write(self, split, start, x, y):
        _write_samples(self._dir, self._width, start, x, self._delimiter)
        self.absorb_part(split, start, y, None)

    # parallel: workers write the sample files; the targets file is written here
    def part_spec(self, split):
        return {"width": self._width, "delimiter": self._delimiter}

    def write_part(self, split, start, x, y, spec):
        _write_samples(self.path / split, spec["width"], start, x, spec["delimiter"])

    def absorb_part(self, split, start, y, result):
        values = [",".join(row) for row in as_text(y.reshape(len(y), -1))]
        data = "".join(
            f"{start + offset + 1:0{self._width}d}.csv,{row}\n" for offset, row in enumerate(values)
        ).encode("ascii")
        self._targets.write(data)
        self._crc = zlib.crc32(data, self._crc)

    def commit(self, split, done):
        if self._targets is None:
            return {}
        self._targets.flush()
        state = {"targets": [self._targets.tell(), self._crc]}
        if done == self._counts[split]:
            self.close()
        return state

    def final_files(self, split, done):
        count = self._counts[split]
        width = len(str(count))
        files = [self.path / split / f"{i:0{width}d}.csv" for i in range(1, done + 1)]
        return files + [self._target_file(split)] if done == count else files

    def path_of(self, split, index):
        count = self._counts.get(split)
        return self.path / split / f"{index + 1:0{len(str(count))}d}.csv" if count else self.path / split

    def close(self):
        if self._targets is not None:
            self._targets.close()
            self._targets = None


def _write_samples(folder: Path, width: int, start: int, x: np.ndarray, delimiter: str) -> None:
    for offset, sample in enumerate(x.reshape((len(x), *grid(x.shape[1:])))):
        text = sample_text(sample, delimiter)
        (folder / f"{start + offset + 1:0{width}d}.csv").write_text(text, encoding="ascii")


class Store(_Store):
    format_name = NAME

    def __init__(self, path, manifest):
        self._names: dict[str, np.ndarray] = {}  # split -> file name of each sample, read with the targets
        super().__init__(path, manifest)

    def _reset_handles(self):
        super()._reset_handles()
        self._folders: dict[str, int] = {}  # split -> open descriptor of its folder

    @property
    def dialect(self) -> str:
        """The samples' delimiter (stores written before the option: comma)."""
        return self.options.get("delimiter", "comma")

    @property
    def rounding(self) -> str:
        """How decimal text becomes float32 (``ooc.formats.text``): adopted folders as np.loadtxt."""
        return self.options.get("rounding", "float32")

    def _split_files(self, split: str) -> tuple[str, Path, bool]:
        """(folder of the samples, targets file, whether it has a header): the writer's names unless
        the manifest says where an adopted folder keeps them."""
        entry = self.manifest.get("csv", {}).get(split)
        if entry is None:
            return split, target_path(self.path, split, "delimiter" in self.options), False
        return entry["folder"], self.path / entry["targets"], bool(entry.get("header"))

    def _targets_file(self, split):
        return self._split_files(split)[1]

    def _check_manifest(self):
        """The count against the files' names (1-based, zero-padded to the count's width: the last
        exists, the one after it does not) and the sample shape against the first file's lines."""
        fix = "re-convert with `ooc convert --format csv --overwrite`"
        for split in self.splits:
            n, folder = self.num_samples(split), self.path / self._split_files(split)[0]
            if split in self.manifest.get("csv", {}) or not n:
                continue  # adopted: the targets file names the files (checked when it is read)
            width = len(str(n))
            last, after = folder / f"{n:0{width}d}.csv", folder / f"{n + 1:0{width}d}.csv"
            if not last.is_file() or after.exists():
                raise CorruptStoreError(
                    f"{folder}: does not hold {n} sample files {1:0{width}d}.csv–{last.name} as the manifest "
                    f"says; {fix}"
                )
            # the first and the last file laid out alike, and not as the manifest says: the manifest is
            # wrong (one damaged file is named by the read that meets it)
            first, seen = _grid_of(folder / f"{1:0{width}d}.csv", self.dialect), _grid_of(last, self.dialect)
            if first == seen != grid(self.sample_shape):
                raise CorruptStoreError(
                    f"{folder}: its sample files hold {first[0]} lines of {first[1]} values, the manifest's "
                    f"sample shape {list(self.sample_shape)} needs {grid(self.sample_shape)[0]} of "
                    f"{grid(self.sample_shape)[1]}; {fix}"
                )

    def _file_names(self, split: str) -> np.ndarray:
        self.labels(split)
        return self._names[split]

    def _file_of(self, split, index):
        return self.path / self._split_files(split)[0] / self._file_names(split)[index]

    def _read_labels(self, split):
        import pyarrow as pa
        import pyarrow.csv as pacsv

        _, path, header = self._split_files(split)
        schema, count = self.schema, self.num_samples(split)
        width = int(np.prod(schema.target_shape))
        names = ["file", *(f"y{i}" for i in range(width))]
        what = (
            "'file,label' rows with integer labels"
            if schema.target_kind == "classes"
            else f"rows of a file name and {width} {schema.target_dtype} value{'s' if width > 1 else ''}"
        )
        fix = "re-convert with `ooc convert --format csv --overwrite`"
        types = {"file": pa.string(), **{n: pa.from_numpy_dtype(schema.target_dtype) for n in names[1:]}}
        try:
            data = path.read_bytes()
            table = pacsv.read_csv(
                pa.py_buffer(data),
                read_options=pacsv.ReadOptions(column_names=names, skip_rows=int(header)),
                convert_options=pacsv.ConvertOptions(column_types=types, quoted_strings_can_be_null=False),
            )
        except (OSError, pa.ArrowInvalid) as e:
            reason = " ".join(str(e).split())[:200]
            if isinstance(e, FileNotFoundError):
                reason = "file is missing"
            raise CorruptStoreError(
                f"{path}: cannot read the targets ({reason}); expected {count} {what}; {fix}"
            ) from None
        if table.num_rows != count or any(c.null_count for c in table.columns):
            raise CorruptStoreError(f"{path}: expected {count} {what}, found {table.num_rows} rows; {fix}")
        self._check_targets_file(path, data, fix)  # well-formed, but the same bytes as written?
        self._names[split] = table.column("file").to_numpy(zero_copy_only=False)
        values = np.stack([table.column(n).to_numpy(zero_copy_only=False) for n in names[1:]], axis=1)
        return values.astype(schema.target_dtype, copy=False).reshape((count, *schema.target_shape))

    def _check_targets_file(self, path: Path, data: bytes, fix: str) -> None:
        """The targets file (names and targets: which file is which sample) against its checksum in the
        manifest, on every read of it: a flipped byte would give other samples or labels silently."""
        recorded = (
            self.manifest.get("checksums", {}).get("files", {}).get(path.relative_to(self.path).as_posix())
        )
        actual = data_checksum(data)
        if recorded is not None and actual != recorded:
            raise CorruptStoreError(
                f"{path}: differs from its checksum (crc32 and size {actual}, the manifest says {recorded}); "
                f"check the store with `ooc verify {self.path}`, {fix}"
            )

    def _read_sorted(self, split, indices, state):
        """All files of the batch parsed by the compiled parser; what it declines goes to pyarrow,
        and a file neither parses is read alone, which names the culprit."""
        dtype, (rows, columns) = self.schema.dtype, grid(self.sample_shape)
        texts = None
        if dtype.name in _VIA_FLOAT32 or dtype == np.float64:
            out = np.empty((len(indices), rows, columns), np.float64 if dtype == np.float64 else np.float32)
            try:
                texts = self._read_and_parse(split, indices, out)
            except FileNotFoundError:
                texts = None
            if texts == []:
                values = out.astype(dtype, copy=False)
                if dtype.kind == "f" or np.array_equal(values, out):
                    return values
                texts = self._read_texts(
                    split, indices
                )  # values that are not of the dtype: pyarrow says which
        else:
            try:
                texts = self._read_texts(split, indices)
            except FileNotFoundError:
                texts = None
        values = None if texts is None else self._parse_texts(texts, dtype)
        if values is not None:
            return values
        return np.stack([self._parse(self._file_of(split, i)) for i in indices])

    def _parse_texts(self, texts: list[bytes], dtype) -> np.ndarray | None:
        return _parse_joined(texts, *grid(self.sample_shape), dtype, self.dialect, self.rounding)

    def _read_texts(self, split, indices) -> list[bytes]:
        return _read_files(self._folder(split), self._file_names(split)[indices])

    def _read_and_parse(self, split, indices, out) -> list[bytes]:
        names = self._file_names(split)[indices]
        return read_and_parse(self._folder(split), names, out, self.dialect, self.rounding)

    def _folder(self, split: str) -> int:
        """An open descriptor of the split's folder, kept while the store is open."""
        if split not in self._folders:
            path = self.path / self._split_files(split)[0]
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                raise CorruptStoreError(
                    f"{path}: folder is missing; re-convert with `ooc convert --format csv --overwrite`"
                ) from None
            if self._folders.setdefault(split, fd) != fd:  # another thread opened it first
                os.close(fd)
        return self._folders[split]

    def close(self):
        for fd in self._folders.values():
            os.close(fd)
        super().close()

    def __del__(self):  # a store dropped without close() must not keep its descriptors
        try:
            self.close()
        except Exception:
            pass

    def _parse(self, path: Path) -> np.ndarray:
        rows, columns = grid(self.sample_shape)
        shown = f"{rows} line{'s' if rows > 1 else ''} of {columns}"
        fix = "re-convert with `ooc convert --format csv --overwrite`"
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            raise CorruptStoreError(f"{path}: file is missing; {fix}") from None
        values = self._parse_texts([text], self.schema.dtype)
        if values is not None:
            return values[0]
        lines = (canonical(text, self.dialect) or b"").splitlines()
        found = sum(len([v for v in line.split(b",") if v.strip()]) for line in lines)
        widths = set(line_widths(text, self.dialect))
        dialect, rounding = self.dialect, self.rounding
        if (
            len(widths) == 1
            and _parse_joined([text], len(lines), widths.pop(), np.float64, dialect, rounding) is not None
        ):
            raise CorruptStoreError(
                f"{path}: expected {rows * columns} values ({shown}), found {found} in {len(lines)} lines; {fix}"
            )
        raise CorruptStoreError(
            f"{path}: expected {rows * columns} numeric values ({shown}), found {found} values or a "
            f"non-numeric one; {fix}"
        )
