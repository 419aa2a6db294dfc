"""The classic recipe's folder as a source: one CSV file per sample and a targets file::

    data/train/00001.csv …      a sample: lines of numbers (or one line), in any dialect
    data/target.csv             its targets, in any form the recipe's readers use (below)
    data/test/…                 optional, with data/test_target.csv; else --test-fraction carves it

Samples are read as ``np.loadtxt(file, dtype=np.float32)`` reads them (or as float64 with
``dtype="float64"``), by ``ooc.formats.text``'s exact parser, in parallel with reading, in any order.
The dialect (comma, whitespace as ``np.savetxt`` writes by default, tab, semicolon) is detected from
the first file and then required of all, or named with ``--delimiter``.

The targets file's rows name the files (``00001.csv,5``), or give an index and the target
(pandas' ``to_csv``: ``0,5``), or the target alone (``5``); with or without a header; one value or a
vector after the name or index; whole numbers are classes, other numbers regression, text labels
(``cat``) classes named in sorted order. Rows that do not name the files are matched to them by
position, in natural name order (``2.csv`` before ``10.csv``: the order the recipe meant, its
``glob`` order is arbitrary), only when the counts agree; ``notes`` then says so.

Per-split targets files ``<split>_target.csv`` (what ooc's csv layout writes) are found by
themselves; ``--targets FILE`` names the train split's."""

from __future__ import annotations

import gc
import hashlib
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ooc.errors import OptionError, SourceError
from ooc.formats.text import DELIMITERS, detect_delimiter, grid, line_widths, parse_exactly, read_and_parse
from ooc.schema import Schema, check_target_kind, infer_target_kind
from ooc.sources.base import SPLITS, FileSource, RandomAccess

TARGET_NAMES = ("{split}_target.csv", "{split}_targets.csv")


def is_recipe_folder(path: Path) -> bool:
    """A folder whose split folders (or itself) hold .csv files rather than class folders (one listing
    each: the entries' types come with it, no file is stat'ed)."""
    path = Path(path)
    if not path.is_dir():
        return False
    folders = [path / split for split in SPLITS if (path / split).is_dir()] or [path]
    csv = subfolders = False
    for folder in folders:
        with os.scandir(folder) as entries:
            for entry in entries:
                csv = csv or entry.name.endswith(".csv")
                subfolders = subfolders or (folder != path and entry.is_dir())
    return csv and not subfolders


@dataclass
class _CsvSplit:
    folder: Path
    targets: Path
    header: bool
    names: np.ndarray  # file names relative to the folder, in sample order
    values: np.ndarray  # targets, in sample order (class numbers where the file holds text labels)
    as_listed: bool  # whether the targets file is ooc's own form: rows "name,target…" as they are
    by_position: bool = False  # rows matched to the files in natural name order
    labels: np.ndarray | None = None  # text labels as the file holds them, before they are numbered


@dataclass
class RecipeSource(FileSource, RandomAccess):
    identity_by_stat = True  # a file per sample: the source is read once, to convert it
    any_order = True  # each index its own file: read in the order asked, no sort and copy back

    path: Path
    files: dict[str, _CsvSplit] = field(default_factory=dict)
    schema: Schema | None = None
    delimiter: str = "comma"  # the samples' dialect (``ooc.formats.text.DELIMITERS``)
    notes: list[str] = field(default_factory=list)  # what was decided for the user, for the summary line
    _sha256: str | None = None

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        targets: str | Path | None = None,
        target_kind: str | None = None,
        delimiter: str | None = None,
        dtype: str | None = None,
    ) -> RecipeSource:
        if delimiter is not None and delimiter not in DELIMITERS:
            raise OptionError(f"--delimiter {delimiter!r}: choose one of {', '.join(DELIMITERS)}")
        if dtype not in (None, "float32", "float64"):
            raise OptionError(
                f"--dtype {dtype}: per-sample CSV files are read as float32 (as np.loadtxt(file, "
                "dtype=np.float32) reads them) or float64; choose one of those"
            )
        source = cls(Path(path).absolute())
        folders = {split: source.path / split for split in SPLITS if (source.path / split).is_dir()} or {
            "train": source.path
        }
        for split, folder in folders.items():
            target_file = source._targets_file(split, folder, targets)
            with _collector_paused():
                source.files[split] = _read_targets(target_file, folder, split)
        source._number_text_labels()
        first = source.files["train"]
        if not len(first.names):
            raise SourceError(f"{first.targets} names no sample files: {_HELP}")
        source.delimiter, shape = _dialect_and_shape(first.folder / first.names[0], delimiter)
        source.notes += [
            _position_note(source.path, entry) for entry in source.files.values() if entry.by_position
        ]
        source.schema = source._schema(shape, np.dtype(dtype or "float32"), target_kind)
        return source

    def _schema(self, shape, dtype, target_kind) -> Schema:
        first = self.files["train"]
        y = np.concatenate([entry.values for entry in self.files.values()])
        kind = target_kind or infer_target_kind(y.shape[1:], y.dtype, where=str(first.targets))
        check_target_kind(kind, y.shape[1:], y.dtype, where=str(first.targets))
        names = self._class_names
        return Schema(
            shape,
            dtype,
            "none",
            kind,
            y.shape[1:],
            y.dtype,
            len(names) if names else int(y.shape[1]) if kind in ("binary", "onehot", "multilabel") else None,
            names,
        )

    def _number_text_labels(self) -> None:
        """Text labels become class numbers in sorted order of their names, across the splits."""
        texts = [entry.labels for entry in self.files.values() if entry.labels is not None]
        self._class_names = None
        if not texts:
            return
        if len(texts) != len(self.files):
            plain = next(entry.targets for entry in self.files.values() if entry.labels is None)
            raise SourceError(
                f"{plain} holds numbers where the other targets files hold class names; label every split "
                "alike"
            )
        names = np.unique(np.concatenate(texts))
        self._class_names = tuple(names.tolist())
        for entry in self.files.values():
            entry.values = np.searchsorted(names, entry.labels).astype(np.int64)

    def _targets_file(self, split: str, folder: Path, given) -> Path:
        if given is not None and split == "train":
            given = Path(given)
            if not given.is_file():
                raise SourceError(f"--targets {given}: no such file; pass the CSV of the samples' targets")
            return given
        for pattern in TARGET_NAMES:
            candidate = self.path / pattern.format(split=split)
            if candidate.is_file():
                return candidate
        if split == "train" and (self.path / "target.csv").is_file():
            return self.path / "target.csv"
        raise SourceError(
            f"{folder} holds sample files but no targets file names them: pass --targets FILE for train/ "
            "(rows 'filename,label', 'index,label' or 'label') or add "
            f"{self.path / TARGET_NAMES[0].format(split=split)}"
        )

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.files)

    def num_samples(self, split: str) -> int:
        return len(self.files[split].names)

    def targets(self, split: str) -> np.ndarray:
        return self.files[split].values

    def sha256(self) -> str:
        """Of the targets files' bytes and every sample file's name, size and modification time:
        hashing every sample's bytes would read the whole source once more before converting it."""
        if self._sha256 is None:
            digest = hashlib.sha256(f"{self.delimiter}\0{self.schema.dtype.name}\0".encode())
            for entry in self.files.values():
                digest.update(entry.targets.read_bytes())
                names = entry.names.tolist()
                for name, (size, mtime) in zip(names, _sizes_and_times(entry.folder, names)):
                    digest.update(f"{name}\0{size}\0{mtime}\0".encode())
            self._sha256 = digest.hexdigest()
        return self._sha256

    def read(self, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        entry = self.files[split]
        names = entry.names[indices]
        out = np.empty((len(indices), *grid(self.schema.sample_shape)), self.schema.dtype)
        folder = os.open(entry.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            texts = read_and_parse(folder, names, out, self.delimiter, "float64")
        except FileNotFoundError as e:
            raise SourceError(
                f"{entry.folder / os.path.basename(e.filename or '?')}: no such file, but {entry.targets} "
                "names it; restore it or remove its row"
            ) from None
        finally:
            os.close(folder)
        if texts and not parse_exactly(texts, out, self.delimiter, "float64"):
            for name, text in zip(names, texts):
                if not parse_exactly([text], out[:1], self.delimiter, "float64"):
                    raise _bad_file(entry.folder / name, self.schema.sample_shape, self.delimiter)
        return out.reshape((len(indices), *self.schema.sample_shape)), entry.values[indices]


_HELP = (
    "a CSV-folder source is train/ (and test/) with one CSV file per sample "
    "and a targets file of 'filename,label' rows"
)


def _bad_file(path: Path, shape, delimiter: str) -> SourceError:
    rows, columns = grid(shape)
    return SourceError(
        f"{path}: expected {rows * columns} {delimiter}-separated numbers ({rows} line{'s' if rows > 1 else ''} "
        f"of {columns}, like the first file); fix or remove the file, or name the files' dialect with "
        "--delimiter"
    )


def _dialect_and_shape(path: Path, delimiter: str | None) -> tuple[str, tuple[int, ...]]:
    """The first file's dialect (unless named) and its grid of values, which every file must share."""
    text = path.read_bytes()
    delimiter = delimiter or detect_delimiter(text) or "comma"
    widths = line_widths(text, delimiter)
    out = np.empty((1, len(widths), max(widths, default=0)), np.float64)
    if len(set(widths)) != 1 or not parse_exactly([text], out, delimiter, "float64"):
        shown = " ".join(text[:80].decode(errors="replace").split())
        raise SourceError(
            f"{path}: cannot read as {delimiter}-separated numbers ({shown!r}…); fix or remove the file, or "
            "name the files' dialect with --delimiter"
        )
    return delimiter, ((out.shape[2],) if out.shape[1] == 1 else out.shape[1:])


def _position_note(root: Path, entry: _CsvSplit) -> str:
    first = (entry.folder / entry.names[0]).relative_to(root).as_posix()
    row = 2 if entry.header else 1
    return f"targets matched to files by position: {entry.targets.name} row {row} → {first}"


def _sizes_and_times(folder: Path, names: list[str]) -> list[tuple[int, int]]:
    """Each file's size and modification time, stat'ed on 2 threads: a stat is a system call that
    releases the GIL, and 42,000 of them were the biggest part of converting a small folder."""
    from concurrent.futures import ThreadPoolExecutor

    fd = os.open(folder, os.O_RDONLY)
    try:

        def part(chunk):
            return [(stat.st_size, stat.st_mtime_ns) for stat in (os.stat(name, dir_fd=fd) for name in chunk)]

        half = len(names) // 2
        with ThreadPoolExecutor(2) as pool:
            first, rest = pool.map(part, (names[:half], names[half:]))
    finally:
        os.close(fd)
    return first + rest


@contextmanager
def _collector_paused():
    """The cycle collector off while a targets file becomes lists of fields: a row's lists hold no
    cycles, and the collections their allocations set off took half the time of opening 42,000
    rows (measured)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


_DIGIT_RUNS = re.compile(r"(\d+)")


def natural_key(name: str) -> list:
    """Numbers in a name compared as numbers: 2.csv before 10.csv, as a person counts."""
    return [int(part) if part.isdigit() else part for part in _DIGIT_RUNS.split(name)]


def natural_sorted(names) -> list[str]:
    """``names`` in natural order; names that are a number and .csv (the recipe's) sorted by that
    number at once, 6 times faster than splitting each name."""
    names = list(names)
    if all(name.endswith(".csv") and name[:-4].isdigit() and name.isascii() for name in names):
        return sorted(names, key=lambda name: (int(name[:-4]), name))
    return sorted(names, key=lambda name: (natural_key(name), name))  # 1.csv and 01.csv: by name


def _sample_files(folder: Path, targets: Path) -> list[str]:
    """The folder's sample files in natural order (targets files beside them are not samples)."""
    skip = {targets.name, "target.csv"} | {
        pattern.format(split=s) for pattern in TARGET_NAMES for s in SPLITS
    }
    return natural_sorted(name for name in os.listdir(folder) if name.endswith(".csv") and name not in skip)


def _read_targets(path: Path, folder: Path, split: str) -> _CsvSplit:
    """The targets file's rows matched to the sample files in ``folder``: by the names in its first
    column, or by position (index or labels alone)."""
    rows, header = _rows(path)
    present = _sample_files(folder, path)
    first = [row[0] for row in rows]
    named = [name.removeprefix(f"{split}/") for name in first]
    known = set(present)
    if len(rows[0]) >= 2 and (
        any(name in known for name in named) or any(name.endswith(".csv") for name in named)
    ):
        names, values = _by_name(path, folder, header, named, present, [row[1:] for row in rows])
        numbers, labels = _target_values(path, values, header)
        return _CsvSplit(
            folder, path, header, names, numbers, named == first and labels is None, labels=labels
        )
    index = _index_column(path, first, header) if len(rows[0]) >= 2 else None
    if len(rows[0]) >= 2 and index is None:
        at = next(i for i, name in enumerate(named) if name not in known)
        raise SourceError(
            f"{path}: row {at + 1 + header} names {first[at]!r}, which matches no file in {folder}; name the "
            "files as they are, or give 'index,label' rows (matched to the files in name order)"
        )
    values = [row[1:] if index is not None else row for row in rows]
    if len(values) != len(present):
        raise SourceError(
            f"{path} has {len(values)} target rows but {folder} holds {len(present)} sample files: rows matched "
            "by position need one row per file; add the missing rows, or name each row's file in a first column"
        )
    numbers, labels = _target_values(path, values, header)
    return _CsvSplit(folder, path, header, np.array(present), numbers, False, True, labels)


def _rows(path: Path) -> tuple[list[list[str]], bool]:
    """The targets file's rows as text fields (BOM, CRLF and blank lines dropped) and whether its
    first row is a header."""
    try:
        text = path.read_bytes().removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SourceError(f"{path}: cannot read the targets ({e}); save it as UTF-8 text") from None
    rows = [[field.strip() for field in line.split(",")] for line in text.splitlines() if line.strip()]
    if not rows:
        raise SourceError(f"{path} holds no rows; expected a target per sample file ('filename,label' rows)")
    if len({len(row) for row in rows}) != 1:
        at = next(i for i, row in enumerate(rows) if len(row) != len(rows[0]))
        raise SourceError(
            f"{path}: row {at + 1} has {len(rows[at])} fields, row 1 has {len(rows[0])}; give every row the "
            "same fields"
        )
    header = _is_header(rows)
    if header and len(rows) == 1:
        raise SourceError(f"{path} holds a header and no rows; expected a target per sample file")
    return rows[header:], header


def _is_header(rows: list[list[str]]) -> bool:
    """A first row with an empty field (pandas' ``,0``), or text over the numbers or file names below."""
    top, below = rows[0], rows[1] if len(rows) > 1 else None
    if any(not value for value in top):
        return True
    if below is None:
        return not _is_number(top[-1]) and not top[0].endswith(".csv")
    return any(
        (_is_number(b) and not _is_number(a)) or (b.endswith(".csv") and not a.endswith(".csv"))
        for a, b in zip(top, below)
    )


def _by_name(path, folder, header, named, present, values):
    missing = [name for name in named if name not in set(present)]
    if missing:
        raise SourceError(
            f"{folder / missing[0]}: no such file, but {path} names it ({len(missing)} missing in all); "
            "restore the files or remove their rows"
        )
    unlisted = sorted(set(present) - set(named))
    if unlisted:
        raise SourceError(
            f"{folder / unlisted[0]} has no row in {path} ({len(unlisted)} files without one); add their rows "
            "or move the files away"
        )
    if len(set(named)) != len(named):
        seen = set()
        at = next(i for i, name in enumerate(named) if name in seen or seen.add(name))
        raise SourceError(
            f"{path}: row {at + 1 + header} names {named[at]} again; each sample file needs exactly one row"
        )
    return np.array(named), values


def _index_column(path: Path, first: list[str], header: bool) -> np.ndarray | None:
    """pandas' index column (0, 1, …, or 1, 2, …, in order), or None if the first column is not one."""
    if not all(value.removeprefix("-").isdigit() and value.isascii() for value in first):
        return None
    index = np.array([int(value) for value in first])
    start = index[0]
    expected = np.arange(start, start + len(index))
    if start not in (0, 1) or not np.array_equal(index, expected):
        at = int(np.flatnonzero(index != expected)[0]) if start in (0, 1) else 0
        raise SourceError(
            f"{path}: row {at + 1 + header} has index {first[at]}, expected {expected[at]}: an index column "
            "must count the files 0, 1, 2, … (or 1, 2, …) in name order; fix the index or name each row's file"
        )
    return index


def _target_values(path: Path, values: list[list[str]], header: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows' targets: integers (classes), floats (regression), or text labels (class names);
    one value a row, or a vector."""
    width = len(values[0])
    flat = [value for row in values for value in row]
    for kind in (np.int64, np.float32):
        try:
            numbers = np.array([kind(value) if kind is np.float32 else int(value) for value in flat], kind)
            break
        except ValueError:
            continue
    else:
        if width == 1 and all(value for value in flat) and not any(_is_number(value) for value in flat):
            return np.zeros(len(flat), np.int64), np.array(flat)
        at = next(i for i, value in enumerate(flat) if not _is_number(value))
        raise SourceError(
            f"{path}: row {at // width + 1 + header} holds {flat[at]!r} among numbers; targets are numbers, or one "
            "class name a row"
        )
    numbers = numbers.reshape(len(values), width)
    return (numbers[:, 0] if width == 1 else numbers), None


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
