"""The classic recipe's folder as a source: one CSV file per sample and a targets file naming them::

    data/train/00001.csv …      a sample: lines of comma-separated numbers (or one line)
    data/target.csv             rows "00001.csv,5" (file name, target), with or without a header
    data/test/…                 optional, with data/test_target.csv; else --test-fraction carves it

Per-split targets files ``<split>_target.csv`` (what ooc's csv layout writes) are found by
themselves; ``--targets FILE`` names the train split's. A row may hold several values after the
name (a vector target); whole numbers are classes, others float32 regression. Samples are parsed
as float32 by the csv layout's exact parser, in parallel with reading, in any order."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ooc.errors import SourceError
from ooc.formats.csv import grid, parse_exactly, read_and_parse
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
    values: np.ndarray  # targets, in sample order
    as_listed: bool  # whether the targets file names them so (no "train/" before the name)


@dataclass
class RecipeSource(FileSource, RandomAccess):
    identity_by_stat = True  # a file per sample: the source is read once, to convert it

    path: Path
    files: dict[str, _CsvSplit] = field(default_factory=dict)
    schema: Schema | None = None
    _sha256: str | None = None

    @classmethod
    def open(
        cls, path: str | Path, *, targets: str | Path | None = None, target_kind: str | None = None
    ) -> RecipeSource:
        source = cls(Path(path).absolute())
        folders = {split: source.path / split for split in SPLITS if (source.path / split).is_dir()} or {
            "train": source.path
        }
        for split, folder in folders.items():
            target_file = source._targets_file(split, folder, targets)
            source.files[split] = _read_targets(target_file, folder, split)
        first = source.files["train"]
        shape = _sample_shape(first.folder / first.names[0]) if len(first.names) else None
        if shape is None:
            raise SourceError(f"{first.targets} names no sample files: {_HELP}")
        kinds = {split: entry.values for split, entry in source.files.items()}
        y = np.concatenate(list(kinds.values()))
        kind = target_kind or infer_target_kind(y.shape[1:], y.dtype, where=str(first.targets))
        check_target_kind(kind, y.shape[1:], y.dtype, where=str(first.targets))
        source.schema = Schema(
            shape,
            np.float32,
            "none",
            kind,
            y.shape[1:],
            y.dtype,
            int(y.shape[1]) if kind in ("binary", "onehot", "multilabel") else None,
        )
        return source

    def _targets_file(self, split: str, folder: Path, given) -> Path:
        if given is not None and split == "train":
            given = Path(given)
            if not given.is_file():
                raise SourceError(f"--targets {given}: no such file; pass the CSV of 'filename,label' rows")
            return given
        for pattern in TARGET_NAMES:
            candidate = self.path / pattern.format(split=split)
            if candidate.is_file():
                return candidate
        if split == "train" and (self.path / "target.csv").is_file():
            return self.path / "target.csv"
        raise SourceError(
            f"{folder} holds sample files but no targets file names them: pass --targets FILE for train/ "
            f"(rows 'filename,label') or add {self.path / TARGET_NAMES[0].format(split=split)}"
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
            digest = hashlib.sha256()
            for entry in self.files.values():
                digest.update(entry.targets.read_bytes())
                with os.scandir(entry.folder) as listing:
                    stats = {item.name: item for item in listing}
                for name in entry.names.tolist():
                    stat = stats[name].stat()
                    digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
            self._sha256 = digest.hexdigest()
        return self._sha256

    def read(self, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        entry = self.files[split]
        names = entry.names[indices]
        out = np.empty((len(indices), *grid(self.schema.sample_shape)), np.float32)
        folder = os.open(entry.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            texts = read_and_parse(folder, names, out)
        except FileNotFoundError as e:
            raise SourceError(
                f"{entry.folder / os.path.basename(e.filename or '?')}: no such file, but {entry.targets} "
                "names it; "
                "restore it or remove its row"
            ) from None
        finally:
            os.close(folder)
        if texts and not parse_exactly(texts, out):
            for name, text in zip(names, texts):
                if not parse_exactly([text], out[:1]):
                    raise _bad_file(entry.folder / name, self.schema.sample_shape)
        return out.reshape((len(indices), *self.schema.sample_shape)), entry.values[indices]


_HELP = (
    "a CSV-folder source is train/ (and test/) with one CSV file per sample "
    "and a targets file of 'filename,label' rows"
)


def _bad_file(path: Path, shape) -> SourceError:
    rows, columns = grid(shape)
    return SourceError(
        f"{path}: expected {rows * columns} numbers ({rows} line{'s' if rows > 1 else ''} of {columns}, like "
        "the "
        "first file); fix or remove the file"
    )


def _sample_shape(path: Path) -> tuple[int, ...]:
    try:
        values = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as e:
        raise SourceError(
            f"{path}: cannot read as comma-separated numbers ({' '.join(str(e).split())[:200]}); fix or "
            "remove the file"
        ) from None
    return (values.shape[1],) if values.shape[0] == 1 else tuple(values.shape)


def _read_targets(path: Path, folder: Path, split: str) -> _CsvSplit:
    """The targets file's rows: names relative to ``folder`` and their values, checked against the
    files there."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline().strip().split(",")
    if len(first) < 2:
        raise SourceError(
            f"{path}: expected rows of 'filename,label' (a file name and its target), found {first!r:.80}"
        )
    header = not _is_number(first[1])
    names = ["file", *(f"y{i}" for i in range(len(first) - 1))]
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=int(header)),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}),
        )
    except (OSError, pa.ArrowInvalid) as e:
        raise SourceError(
            f"{path}: cannot read the targets ({' '.join(str(e).split())[:200]}); "
            "expected rows of 'filename,label'"
        ) from None
    columns = []
    for n in names[1:]:
        column = table.column(n)
        for kind in (pa.int64(), pa.float32()):
            try:
                columns.append(pc.cast(column, kind).to_numpy(zero_copy_only=False))
                break
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
        else:
            raise SourceError(
                f"{path}: column {names.index(n) + 1} holds values that are not numbers; expected rows of "
                "'filename,label'"
            )
    dtype = np.result_type(*[c.dtype for c in columns])
    values = np.stack([c.astype(dtype) for c in columns], axis=1)
    listed = table.column("file").to_pylist()
    files = [name.removeprefix(f"{split}/") for name in listed]
    present = (
        {name for name in os.listdir(folder) if name.endswith(".csv")}
        - {path.name, "target.csv"}
        - {pattern.format(split=s) for pattern in TARGET_NAMES for s in SPLITS}
    )
    missing = [name for name in files if name not in present]
    if missing:
        raise SourceError(
            f"{folder / missing[0]}: no such file, but {path} names it ({len(missing)} missing in all); "
            "restore the files or remove their rows"
        )
    unlisted = sorted(present - set(files))
    if unlisted:
        raise SourceError(
            f"{folder / unlisted[0]} has no row in {path} ({len(unlisted)} files without one); add their rows "
            ""
            ""
            "or move the files away"
        )
    if len(set(files)) != len(files):
        raise SourceError(f"{path} names a file more than once; each sample file needs exactly one row")
    return _CsvSplit(
        folder,
        path,
        header,
        np.array(files),
        values[:, 0] if values.shape[1] == 1 else values,
        files == listed,
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
