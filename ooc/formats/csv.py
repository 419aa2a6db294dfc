"""One CSV file per sample, exactly as the classic recipe lays it out.

On disk::

    <store>/train/00001.csv …     28 lines of 28 comma-separated floats, pixel / 255
    <store>/train_target.csv      rows "00001.csv,5" (file name, target), no header
    <store>/test/…, <store>/test_target.csv

A sample of shape (a, b, …) is ``a`` lines of ``b × …`` values; a 1-d sample is one line. Vector
targets are several values after the name. Names are 1-based and zero-padded to the width of the
split's count. Values are written as the shortest text that parses back to the same value of the
stored dtype (pixels are stored decoded, as float32, like the recipe), so a CSV store reads
bit-identically to the binary layouts. An interrupted conversion resumes after its last committed
sample file.

``ooc adopt`` makes a store of CSV files that are already there (the recipe's own folder): the
manifest's ``csv`` entry then says, per split, which folder holds the files and which targets file
names them (``{"train": {"folder": "train", "targets": "target.csv", "header": true}}``).

A batch is read with one `read` call per file and parsed by a small parser compiled with numba,
exact for the numbers it accepts and declining anything else to pyarrow's parser: at one file per
sample, parsing is the whole cost of the layout (9.2x the classic recipe's np.loadtxt, measured).
"""

from __future__ import annotations

import os
import threading
import zlib
from pathlib import Path

import numpy as np

from ooc.errors import CorruptStoreError
from ooc.formats.base import LayoutOptions, ParallelParts, Resumable
from ooc.formats.base import Store as _Store
from ooc.formats.base import Writer as _Writer
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
)
# dtypes whose every value is a float32 too: the compiled float32 parser reads them exactly
_VIA_FLOAT32 = ("float32", "uint8", "int8", "uint16", "int16", "bool")


def grid(shape: tuple[int, ...]) -> tuple[int, int]:
    """(lines, values per line) of a sample's file."""
    return (1, shape[0]) if len(shape) == 1 else (shape[0], int(np.prod(shape[1:])))


def as_text(values: np.ndarray) -> np.ndarray:
    """Each value as the shortest text that reads back to it in its dtype (numpy's ``str``), each
    distinct value formatted once (a pixel chunk has at most 256). Floats are told apart by their
    bits, so that -0.0 stays -0.0 (NaN is written "nan": text keeps no NaN payload)."""
    values = np.ascontiguousarray(values)
    if values.dtype == np.bool_:
        return np.where(values, "1", "0")
    bits = values.view(f"u{values.dtype.itemsize}") if values.dtype.kind == "f" else values
    unique, inverse = np.unique(bits, return_inverse=True)
    texts = np.array([str(v) for v in unique.view(values.dtype)])
    return texts[inverse.reshape(values.shape)]


# Powers of ten exact in float64 (up to 1e22), and the float32 range the fast path answers itself.
_POW10 = np.array([10.0**k for k in range(23)])
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def _parse_files_py(text, ends, rows, columns, out):  # compiled by numba, see _parse_files
    """Write the values of ``text`` (files joined, each ending at its offset in ``ends``) into
    ``out`` and return how many; -1 when any file is not ``rows`` lines of ``columns`` plain
    decimal numbers that this parser converts exactly (the caller then tries pyarrow's parser).

    A number ``m × 10^e`` with m < 2^53 and |e| ≤ 22 is one correctly rounded float64 operation
    (both operands are exact). Rounding that float64 to float32 again is wrong only when it
    landed exactly on a midpoint between two float32 values (rounding is monotonic and every
    midpoint is a float64), so such values, subnormals and anything longer go to the slow path:
    what is returned is the correctly rounded float32 of every number, as pyarrow's parser gives.
    """
    n = len(text)
    at = 0
    count = 0
    column = 0
    row = 0
    file = 0
    while at < n:
        negative = False
        c = text[at]
        if c == 45 or c == 43:  # - +
            negative = c == 45
            at += 1
        mantissa = 0
        digits = 0
        point = -1  # digits before the decimal point, once one is seen
        while at < n:
            c = text[at]
            if 48 <= c <= 57:
                mantissa = mantissa * 10 + (c - 48)
                digits += 1
            elif c == 46 and point < 0:  # .
                point = digits
            else:
                break
            at += 1
        exponent = point - digits if point >= 0 else 0
        if digits == 0 or digits > 18:  # more digits could overflow the mantissa
            return -1
        if at < n and (text[at] == 101 or text[at] == 69):  # e E
            at += 1
            exponent_negative = False
            if at < n and (text[at] == 45 or text[at] == 43):
                exponent_negative = text[at] == 45
                at += 1
            power = 0
            power_digits = 0
            while at < n and 48 <= text[at] <= 57 and power_digits < 4:
                power = power * 10 + (text[at] - 48)
                power_digits += 1
                at += 1
            if power_digits == 0 or power_digits == 4:
                return -1
            exponent += -power if exponent_negative else power
        if at >= n or count >= len(out):
            return -1
        separator = text[at]
        at += 1
        if separator == 44 and column < columns - 1:  # ,
            column += 1
        elif separator == 10 and column == columns - 1:  # newline: a row is complete
            column = 0
            row += 1
            if row == rows:
                if file >= len(ends) or at != ends[file]:
                    return -1
                file += 1
                row = 0
        else:
            return -1
        value = 0.0
        if mantissa:
            if mantissa >= 9007199254740992 or exponent < -22 or exponent > 22:
                return -1
            value = mantissa / _POW10[-exponent] if exponent < 0 else mantissa * _POW10[exponent]
            if value >= 9007199254740992.0 and exponent > 0:
                return -1  # the product may have been rounded
            if value > _FLOAT32_MAX or value < _FLOAT32_TINY:
                return -1
            if (np.float64(value).view(np.uint64) & np.uint64(0x1FFFFFFF)) == np.uint64(0x10000000):
                return -1  # exactly on a float32 midpoint: the second rounding could be wrong
        out[count] = np.float32(-value if negative else value)
        count += 1
    return count if file == len(ends) and row == 0 and column == 0 else -1


_compiled = []
_compiled_lock = threading.Lock()


def _parse_files(texts: list[bytes], out: np.ndarray) -> bool:
    """Parse the files into ``out`` (files, rows, columns); False if the fast path declines (see
    ``_parse_files_py``). Compiled with numba on first use and cached on disk: 9.8 against 18.3 µs
    a file for pyarrow's multi-threaded CSV parser on all files of a batch at once and 100 µs for
    np.loadtxt (measured on MNIST's files; pyarrow, polars, pandas, DuckDB and numpy were all
    slower), and it runs without the GIL."""
    if not _compiled:
        with _compiled_lock:
            if not _compiled:
                import numba

                try:
                    _compiled.append(numba.njit(nogil=True, cache=True)(_parse_files_py))
                except RuntimeError:  # no writable cache folder (a read-only install): compile per process
                    _compiled.append(numba.njit(nogil=True)(_parse_files_py))
    ends = np.cumsum(np.fromiter(map(len, texts), np.int64, len(texts)))
    return (
        _compiled[0](
            np.frombuffer(b"".join(texts), np.uint8), ends, out.shape[1], out.shape[2], out.reshape(-1)
        )
        == out.size
    )


def _parse_joined(texts: list[bytes], rows: int, columns: int, dtype=np.float32) -> np.ndarray | None:
    """The slower exact path for what the compiled parser declines (numbers it cannot convert
    exactly, "nan", exponents of 4 digits, dtypes other than float32…): pyarrow's correctly rounded
    parser over all files at once (np.loadtxt would round through float64 and could miss by one
    unit). None if a file is not ``rows`` lines of ``columns`` numbers."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if not all(t.endswith(b"\n") and t.count(b"\n") == rows for t in texts):
        return None
    names = [f"c{i}" for i in range(columns)]
    try:
        table = pacsv.read_csv(
            pa.py_buffer(b"".join(texts)),
            read_options=pacsv.ReadOptions(column_names=names),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.from_numpy_dtype(np.dtype(dtype)) for n in names}
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    if table.num_rows != len(texts) * rows or any(c.null_count for c in table.columns):
        return None
    values = np.stack([c.to_numpy(zero_copy_only=False) for c in table.columns], axis=1)
    return values.reshape((len(texts), rows, columns))


def _read_files(folder: int, names) -> list[bytes]:
    """Whole small files through bare system calls, opened relative to the open ``folder``: 3.3
    against 12 µs a file for ``Path.read_bytes``, and a relative open skips the walk down the
    store's path (4.0 against 5.0 µs a file, measured), which matters at one file per sample. A
    read of a regular file returns less than asked for only at its end, so a short first read is
    the whole file."""
    texts = []
    for name in names:
        fd = os.open(name, os.O_RDONLY, dir_fd=folder)
        try:
            text = os.read(fd, 1 << 16)
            while len(text) % (1 << 16) == 0 and text:
                more = os.read(fd, 1 << 16)
                if not more:
                    break
                text += more
        finally:
            os.close(fd)
        texts.append(text)
    return texts


def read_and_parse(folder: int, names, out: np.ndarray) -> list[bytes]:
    """Fill ``out`` (files, lines, values) from the files ``names`` in the open ``folder`` through the
    compiled parser and return [], or return the files' texts if it declined. The first half of a
    batch is parsed on a second thread while this one reads the rest (the parser releases the GIL,
    reading files holds it): 13.8 against 20.7 µs a sample on 2 cores (measured)."""
    half = len(names) // 2 if len(names) >= 64 else 0
    first = _read_files(folder, names[:half])
    parsed = [not half, False]
    if half:

        def parse_first():
            parsed[0] = _parse_files(first, out[:half])

        helper = threading.Thread(target=parse_first, name="ooc-csv-parse")
        helper.start()
    try:
        rest = _read_files(folder, names[half:])
        parsed[1] = _parse_files(rest, out[half:])
    finally:
        if half:
            helper.join()
    return [] if all(parsed) else first + rest


def parse_exactly(texts: list[bytes], out: np.ndarray) -> bool:
    """Fill ``out`` (files, lines, values; float32) from the texts, exactly: the compiled parser,
    else pyarrow's. False if a text is not ``lines`` lines of ``values`` numbers."""
    if _parse_files(texts, out):
        return True
    values = _parse_joined(texts, out.shape[1], out.shape[2], out.dtype)
    if values is None:
        return False
    out[...] = values
    return True


def _grid_of(path: Path) -> tuple[int, int]:
    """(lines, values on the first line) of a sample file, as it is."""
    lines = path.read_bytes().splitlines()
    return len(lines), (lines[0].count(b",") + 1 if lines else 0)


def target_path(store: Path, split: str) -> Path:
    return store / f"{split}_target.csv"


class Writer(_Writer, Resumable, ParallelParts):
    """A sample's file is final once written. The targets file grows a row per sample; the journal
    keeps its committed size and CRC, so a resumed conversion cuts it back to that and goes on."""

    def __init__(self, path, **options):
        super().__init__(path, **options)
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
        self._targets = open(target_path(self.path, split), "r+b" if size else "wb")
        self._targets.truncate(size)
        self._targets.seek(size)
        self._crc = crc

    def resume_split(self, split, count, schema, done, state):
        self._counts[split] = count
        if done == count:
            return done  # the split's files are final and were checked against the journal
        size, crc = state.get("targets", (0, 0))
        path = target_path(self.path, split)
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

    def write(self, split, start, x, y):
        _write_samples(self._dir, self._width, start, x)
        self.absorb_part(split, start, y, None)

    # parallel: workers write the sample files; the targets file is written here
    def part_spec(self, split):
        return {"width": self._width}

    def write_part(self, split, start, x, y, spec):
        _write_samples(self.path / split, spec["width"], start, x)

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
        return files + [target_path(self.path, split)] if done == count else files

    def path_of(self, split, index):
        count = self._counts.get(split)
        return self.path / split / f"{index + 1:0{len(str(count))}d}.csv" if count else self.path / split

    def close(self):
        if self._targets is not None:
            self._targets.close()
            self._targets = None


def _write_samples(folder: Path, width: int, start: int, x: np.ndarray) -> None:
    texts = as_text(x.reshape((len(x), *grid(x.shape[1:]))))
    for offset, sample in enumerate(texts):
        text = "\n".join(",".join(line) for line in sample) + "\n"
        (folder / f"{start + offset + 1:0{width}d}.csv").write_text(text, encoding="ascii")


class Store(_Store):
    format_name = NAME

    def __init__(self, path, manifest):
        self._names: dict[str, np.ndarray] = {}  # split -> file name of each sample, read with the targets
        super().__init__(path, manifest)

    def _reset_handles(self):
        super()._reset_handles()
        self._folders: dict[str, int] = {}  # split -> open descriptor of its folder

    def _split_files(self, split: str) -> tuple[str, Path, bool]:
        """(folder of the samples, targets file, whether it has a header): the writer's names unless
        the manifest says where an adopted folder keeps them."""
        entry = self.manifest.get("csv", {}).get(split)
        if entry is None:
            return split, target_path(self.path, split), False
        return entry["folder"], self.path / entry["targets"], bool(entry.get("header"))

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
            first, seen = _grid_of(folder / f"{1:0{width}d}.csv"), _grid_of(last)
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

    def _read_sorted(self, split, indices):
        """All files of the batch parsed by the compiled parser; what it declines goes to pyarrow,
        and a file neither parses to np.loadtxt file by file, which names the culprit."""
        dtype, (rows, columns) = self.schema.dtype, grid(self.sample_shape)
        texts = None
        if dtype.name in _VIA_FLOAT32:
            out = np.empty((len(indices), rows, columns), np.float32)
            try:
                texts = self._read_and_parse(split, indices, out)
            except FileNotFoundError:
                texts = None
            if texts == []:
                values = out.astype(dtype, copy=False)
                if dtype == np.float32 or np.array_equal(values, out):
                    return values
                texts = self._read_texts(
                    split, indices
                )  # values that are not of the dtype: pyarrow says which
        else:
            try:
                texts = self._read_texts(split, indices)
            except FileNotFoundError:
                texts = None
        values = None if texts is None else _parse_joined(texts, rows, columns, dtype)
        if values is not None:
            return values
        return np.stack([self._parse(self._file_of(split, i)) for i in indices])

    def _read_texts(self, split, indices) -> list[bytes]:
        return _read_files(self._folder(split), self._file_names(split)[indices])

    def _read_and_parse(self, split, indices, out) -> list[bytes]:
        return read_and_parse(self._folder(split), self._file_names(split)[indices], out)

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
            values = np.loadtxt(path, delimiter=",", dtype=self.schema.dtype, ndmin=2)
        except FileNotFoundError:
            raise CorruptStoreError(f"{path}: file is missing; {fix}") from None
        except ValueError:
            found = sum(
                len([v for v in line.split(",") if v.strip()])
                for line in path.read_text(errors="replace").splitlines()
            )
            raise CorruptStoreError(
                f"{path}: expected {rows * columns} numeric values ({shown}), found {found} values or a "
                f"non-numeric one; {fix}"
            ) from None
        if values.shape != (rows, columns):
            raise CorruptStoreError(
                f"{path}: expected {rows * columns} values ({shown}), found {values.size} in "
                f"{values.shape[0]} "
                f"lines; {fix}"
            )
        return values
