"""The one contract every on-disk layout implements: a ``Store`` to read and a ``Writer`` to fill.

A layout is one module with ``NAME``, ``OPTIONS`` (``LayoutOptions``: what it can store and do, the
facts the CLI, remote paths and the benchmark read), ``Store`` and ``Writer``, one line in
``ooc.formats.FORMATS`` and one test class inheriting ``ooc.testing.LayoutTests``.

Store: required ``_read_sorted`` (stored rows at sorted unique indices), ``_read_labels`` (a split's
    targets as stored), ``_file_of`` (the file a read error names). ``read``/``read_stored`` are done
    here once for every layout: indices validated, sorted and de-duplicated, the caller's order
    restored, the manifest's decoding applied, and every read checked (``ooc.formats.integrity``:
    targets, CRC units, the generation). Optional hooks are marked so below. A layout whose samples
    lie in chunks inherits the chunk cache and read-ahead from ``ooc.formats.chunked.ChunkedStore``
    and declares ``_read_rows`` instead of ``_read_sorted``. What a reader keeps between reads is a
    ``ReadState`` the loader makes per iterator, never the store's.

Writer: required ``begin_split``, ``write`` (consecutive ``(x, y)`` chunks in the stored dtype, cut
    at multiples of ``chunk_size``), ``close``, ``path_of`` (the file a write error names). It never
    needs a whole split in memory and writes data files only: ``ooc.convert`` writes the manifest
    last. Two capabilities ``ooc.convert`` detects: ``Resumable`` (an interrupted conversion goes
    on) and ``ParallelParts`` (``--jobs``/``--dask`` write parts in other processes; without it a
    writer says why in ``one_process_because``).
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ooc.errors import CorruptStoreError, OocError, OptionError
from ooc.formats import FORMATS, get_format, integrity
from ooc.manifest import manifest_signature
from ooc.remote import location
from ooc.schema import SAMPLE_DTYPES, Schema

# float32(v) / float32(255) for every byte: the one definition of "normalised pixel", shared by the
# binary readers and the CSV writer, so that every layout yields bit-identical batches.
U8_TO_FLOAT32 = np.arange(256, dtype=np.float32) / np.float32(255)


def decode(x_uint8: np.ndarray) -> np.ndarray:
    """Normalised float32 pixels: the same bits as ``U8_TO_FLOAT32[x]`` (both divide in float32),
    8x faster than the table lookup (vectorised division, measured 0.07 against 0.5 ms a batch)."""
    return np.divide(x_uint8, np.float32(255), dtype=np.float32)


@dataclass(frozen=True)
class LayoutOptions:
    """What a layout accepts. ``chunk_size`` None means the layout has no chunks to size."""

    compressions: tuple[str, ...]
    default_compression: str
    default_chunk_size: int | None
    dtypes: tuple[str, ...] = SAMPLE_DTYPES  # sample dtypes it stores exactly
    pixel_dtype: str = (
        "uint8"  # how it stores pixels by default: uint8, or decoded float32 (the recipe's CSV)
    )
    chunking: str = ""  # what stands in for chunks in a layout without them, for `ooc info`
    default_shard_size: int | None = None  # samples per file, for layouts written as shards
    delimiters: tuple[str, ...] = ()  # layouts of text: the dialects their samples may be written in
    default_delimiter: str | None = None
    remote: bool = False  # written to and read from object storage (s3://…) as well as local paths
    needs_tensorflow: bool = False  # writes through TensorFlow, under any Keras backend
    # what ooc bench measures of it: options worth comparing beside its defaults, and whether
    # --memory-limit reads it out of core (a layout read at the disk's speed)
    bench_variants: tuple[dict[str, Any], ...] = ()
    out_of_core: bool = False
    bench_jobs: bool = False  # its conversion timed against --jobs (many files, CPU-bound writing)

    def resolve(
        self,
        name: str,
        *,
        chunk_size: int | None,
        compression: str | None,
        shard_size: int | None = None,
        delimiter: str | None = None,
    ) -> dict[str, Any]:
        """Fill defaults and refuse what this layout cannot do, naming the option (the stored dtype
        depends on the source too: ``stored_dtype``)."""
        if self.default_chunk_size is None:
            if chunk_size is not None:
                hint = "; use --shard-size" if self.default_shard_size else ""
                raise OptionError(
                    f"--chunk-size does not apply to {name} (it has no chunks); drop the option{hint}"
                )
        elif chunk_size is not None and chunk_size < 1:
            raise OptionError(f"--chunk-size must be a positive number of samples, got {chunk_size}")
        if self.default_shard_size is None:
            if shard_size is not None:
                raise OptionError(
                    f"--shard-size does not apply to {name} (it is not written in shards); drop the option"
                )
        elif shard_size is not None and shard_size < 1:
            raise OptionError(f"--shard-size must be a positive number of samples, got {shard_size}")
        compression = compression or self.default_compression
        if compression not in self.compressions:
            raise OptionError(
                f"--compression {compression!r} is not available for {name}: choose one of "
                f"{', '.join(self.compressions)}"
            )
        resolved = {"chunk_size": chunk_size or self.default_chunk_size, "compression": compression}
        if self.delimiters:  # elsewhere --delimiter is the source's
            if delimiter is not None and delimiter not in self.delimiters:
                raise OptionError(f"--delimiter {delimiter!r}: choose one of {', '.join(self.delimiters)}")
            resolved["delimiter"] = delimiter or self.default_delimiter
        if self.default_shard_size:
            resolved["shard_size"] = shard_size or self.default_shard_size
        return resolved

    def stored_dtype(self, name: str, schema: Schema, dtype: str | None) -> str:
        """The dtype ``name`` stores ``schema``'s samples as: the source's own, except that pixels may
        be stored decoded (``--dtype float32``). Nothing else is ever converted."""
        if schema.decode == "pixels":
            dtype = dtype or self.pixel_dtype
            if dtype not in ("uint8", "float32"):
                raise OptionError(
                    f"--dtype {dtype!r}: pixels are stored as uint8 or float32 (value / 255); choose one of "
                    "those"
                )
        elif dtype is not None and np.dtype(dtype) != schema.dtype:
            raise OptionError(
                f"--dtype {dtype}: the source holds {schema.dtype.name} samples, which ooc stores as they "
                "are; drop --dtype"
            )
        dtype = np.dtype(dtype or schema.dtype).name
        if dtype not in self.dtypes:
            can = [other for other in FORMATS if dtype in get_format(other).OPTIONS.dtypes]
            raise OptionError(
                f"{name} cannot store {dtype} samples exactly; choose a layout that can: {', '.join(can)}"
            )
        return dtype


class ReadState:
    """What one reader of a store keeps between its reads: the units checked in its pass over each
    split. The loader makes one per iterator (``Store.new_read_state``); plain ``read`` calls share
    the store's own. A layout that caches (``ooc.formats.chunked``) keeps more."""

    def __init__(self):
        self.checked_units: dict[str, set[int]] = {}  # split -> units checked in this pass
        self.read_in_pass: dict[str, int] = {}  # split -> samples read since its checks were re-armed

    def close(self) -> None:
        """Stop whatever the reader runs in the background (nothing here)."""


class Store(ABC):
    """The reading side of a layout (see the module docstring for the contract)."""

    format_name: ClassVar[str]
    # What the layout's storage library raises on damaged bytes, which becomes a one-line
    # CorruptStoreError naming the file; anything else is a bug in ooc and keeps its traceback.
    damage_errors: ClassVar[tuple[type[Exception], ...]] = (OSError, EOFError)
    # a local cache of a remote store's units (``ooc.cache.ChunkCache``, set by ``open_store`` with
    # --cache-dir); a layout that supports one reads through it in its remote fetch path
    cache = None

    def __init__(self, path: str | os.PathLike, manifest: dict[str, Any]):
        self.path = location(path)  # a URL (ooc.remote) stays a string
        self.manifest = manifest
        self.schema = Schema.from_manifest(manifest)
        self._targets: dict[str, np.ndarray] = {}  # split -> targets as stored
        self._labels: dict[str, np.ndarray] = {}  # split -> targets as reads return them
        self._labels_lock = threading.Lock()  # reader threads may all ask for the targets at once
        # the manifest file as opened (``open_store`` sets the one its bytes were read from): a read
        # that finds another one re-reads its generation (None: not on disk, nothing to compare)
        self._seen = manifest_signature(self.path)
        self._reset_handles()

    # -- what each layout implements --------------------------------------------------------------
    @abstractmethod
    def _read_sorted(self, split: str, indices: np.ndarray, state: ReadState) -> np.ndarray:
        """Stored rows at sorted, unique ``indices``, in the stored dtype (any shape of n rows);
        ``state``: the reader's (what a layout that caches keeps its caches in)."""

    @abstractmethod
    def _read_labels(self, split: str) -> np.ndarray:
        """Every target of ``split``, in sample order, as stored: (n, *target_shape)."""

    @abstractmethod
    def _file_of(self, split: str, index: int) -> Path:
        """The file that holds sample ``index``: what a read error names (and ``ooc verify`` would flag)."""

    def _targets_file(self, split: str):
        """Optional: the file that holds ``split``'s targets, what an error about them names (default:
        the file of its first sample, for layouts that keep targets beside the samples)."""
        return self._file_of(split, 0) if self.num_samples(split) else self.path

    def _samples_with(self, split: str, index: int) -> range:
        """Optional: the samples stored together with ``index`` (its chunk), lost together when it is
        damaged (default: itself)."""
        return range(index, index + 1)

    def _reset_handles(self) -> None:
        """Declare the layout's open files and caches, all closed/empty: called by ``__init__``, after
        unpickling and by ``close``. Subclasses extend it (``super()._reset_handles()``)."""
        self._state = self.new_read_state()  # plain read calls' reader

    def _check_manifest(self) -> None:
        """Optional: refuse (``CorruptStoreError``, one line) a manifest whose reading-relevant fields
        do not match the data files; see the module docstring."""

    @property
    def check_unit(self) -> int | None:
        """Optional: samples per unit whose CRC-32 the read path checks (None: the layout's bytes are
        guarded by its own format, or not checked)."""
        return None

    def _unit_rows(self, split: str, start: int, stop: int) -> np.ndarray:
        """Optional: stored rows ``[start, stop)`` for a CRC check (a view instead of a copy, say)."""
        return self._read_sorted(split, np.arange(start, stop), self._state)

    def _unit_crc(self, split: str, unit: int, start: int, stop: int, state: ReadState) -> str:
        """The CRC-32 of unit ``unit`` (rows ``[start, stop)``) as read now."""
        return integrity.crc(self._unit_rows(split, start, stop))

    def largest_unit(self) -> int | None:
        """Optional: the stored bytes of the largest unit the layout keeps in a ``ChunkCache`` (what
        ``open_store`` sizes the cache against); None: the layout has no cached reads."""
        return None

    @property
    def chunk_size(self) -> int | None:
        """Samples per chunk for layouts that read whole chunks."""
        return None

    @property
    def shuffle_unit(self) -> int | None:
        """Samples the chunk shuffle keeps together (``epoch_batches(chunk_size=)``): the layout's
        chunks, or, for a layout without chunks, a run of rows that is one contiguous read (npy).
        None: the chunk shuffle is the global one."""
        return self.chunk_size

    def new_read_state(self) -> ReadState:
        """A reader's own state (the loader makes one per iterator); ``close`` it when done."""
        return ReadState()

    def will_need(self, split: str, indices: np.ndarray, state: ReadState | None = None) -> None:
        """A hint that ``state``'s reader will read samples ``indices`` of ``split`` soon: a layout
        starts reading them (``ooc.formats.readahead``). It never changes what a read returns.
        Optional: by default nothing."""

    def gather_window(self) -> int:
        """Optional: samples of the global shuffle's hints this store gathers at once; 0: none (the
        loader then hints as for the chunk shuffle)."""
        return 0

    # -- the common surface -------------------------------------------------------------------
    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.manifest["splits"])

    def num_samples(self, split: str) -> int:
        return int(self._split_info(split)["count"])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.schema.sample_shape

    @property
    def num_classes(self) -> int | None:
        return self.schema.num_classes

    @property
    def options(self) -> dict[str, Any]:
        return self.manifest["options"]

    def labels(self, split: str) -> np.ndarray:
        """Every target of a split as reads return them (class numbers as int64); read once, then kept."""
        if split not in self._labels:
            targets = self.stored_targets(split)
            with self._labels_lock:
                self._labels.setdefault(split, self.schema.read_targets(targets))
        return self._labels[split]

    def stored_targets(self, split: str) -> np.ndarray:
        """Every target of a split exactly as stored, checked (``ooc.formats.integrity``); read once."""
        if split not in self._targets:
            with self._labels_lock:
                if split not in self._targets:
                    try:
                        self._targets[split] = integrity.checked_targets(self, split)
                    finally:
                        integrity.check_unchanged(self)
        return self._targets[split]

    def read_checksums(self) -> dict[str, Any] | None:
        """What the read path checks, as the conversion records it (``integrity.read_checksums``)."""
        return integrity.read_checksums(self)

    def read(self, split: str, indices, *, state: ReadState | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Samples at ``indices`` (any order, repeats allowed), decoded as the manifest declares, and
        their targets (class numbers as int64); ``state``: the reader's (default: the store's own)."""
        x, y = self.read_stored(split, indices, state=state)
        return self.schema.decoded(x), self.schema.read_targets(y)

    def read_stored(
        self, split: str, indices, *, state: ReadState | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Samples at ``indices`` exactly as stored (no decoding), and their targets."""
        state = state or self._state
        indices = self._checked_indices(split, indices)
        if not indices.size:
            return np.empty((0, *self.sample_shape), self.schema.dtype), np.empty(
                (0, *self.schema.target_shape), self.schema.target_dtype
            )
        unique, inverse = np.unique(indices, return_inverse=True)
        try:
            x = self._read_sorted(split, unique, state)
        except OocError as error:
            integrity.check_unchanged(
                self
            )  # a store rewritten under the read: say that, not which file failed
            error.split, error.indices = split, unique
            raise
        except self.damage_errors as error:
            integrity.check_unchanged(self)
            raise integrity.read_error(self, split, unique, error, state) from error
        try:
            integrity.check_units(self, state, split, unique)  # its error names the unit's samples
        except OocError:
            integrity.check_unchanged(self)
            raise
        targets = self.stored_targets(split)
        integrity.check_unchanged(self)  # after the read: what it returns is all of the store as opened
        if len(unique) != len(indices) or np.any(unique != indices):
            x = x[inverse]  # the caller's order, in the stored dtype: the fewest bytes to move
        return x.reshape((len(indices), *self.sample_shape)), targets[indices]

    def _checked_indices(self, split: str, indices) -> np.ndarray:
        n = self.num_samples(split)
        indices = np.asarray(indices)
        if indices.ndim != 1 or (indices.size and indices.dtype.kind not in "iu"):
            raise OptionError(
                f"indices must be a 1-d array of integers, got {indices.dtype} of shape {indices.shape}"
            )
        indices = indices.astype(np.int64, copy=False)
        if indices.size and (indices.min() < 0 or indices.max() >= n):
            bad = indices[(indices < 0) | (indices >= n)][0]
            raise OptionError(f"index {bad} is out of range for split '{split}' of {self.path} ({n} samples)")
        return indices

    def _check_array(self, where, split: str, name: str, shape, dtype, chunk: int | None = None) -> None:
        """Refuse a stored array (``name`` "x" or "y" of ``split``) whose shape, dtype or chunk length
        along the samples is not what the manifest says (``_check_manifest``'s helper)."""
        n = self.num_samples(split)
        want_shape = (n, *(self.sample_shape if name == "x" else self.schema.target_shape))
        want_dtype = self.schema.dtype if name == "x" else self.schema.target_dtype
        want_chunk = max(1, min(self.chunk_size, n)) if chunk is not None else None
        if tuple(shape) != want_shape or np.dtype(dtype) != want_dtype or chunk != want_chunk:
            chunks = "" if chunk is None else f" in chunks of {chunk}"
            wanted = "" if chunk is None else f" in chunks of {want_chunk}"
            raise CorruptStoreError(
                f"{where}: {split}/{name} is {np.dtype(dtype)} {tuple(shape)}{chunks}, the manifest says "
                f"{want_dtype} {want_shape}{wanted}; re-convert the store"
            )

    def _split_info(self, split: str) -> dict[str, Any]:
        try:
            return self.manifest["splits"][split]
        except KeyError:
            raise OptionError(
                f"split {split!r} is not in {self.path}: it has {', '.join(self.splits)}"
            ) from None

    def close(self) -> None:
        """Release open files and the store's own reader; the store reopens them on the next read."""
        if getattr(self, "_state", None) is not None:
            self._state.close()
        self._reset_handles()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):
        """Picklable for worker processes: open handles and caches are left behind."""
        blank = object.__new__(type(self))
        blank._reset_handles()
        return {k: v for k, v in self.__dict__.items() if k not in blank.__dict__ and k != "_labels_lock"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._labels_lock = threading.Lock()
        self._reset_handles()


class Writer(ABC):
    """The writing side of a layout: ``begin_split``, ``write`` chunks in sample order, ``close``.

    ``schema`` (``ooc.schema.Schema``) gives the sample shape, the stored dtype (``schema.dtype``,
    which ``write``'s ``x`` already has) and the targets' shape and dtype. Optional capabilities are
    the mixins below, which ``ooc.convert`` detects: ``Resumable``, ``ParallelParts``."""

    def __init__(
        self,
        path: Path,
        *,
        chunk_size: int | None,
        compression: str,
        dtype: str,
        shard_size: int | None = None,
        delimiter: str | None = None,
    ):
        self.path = path
        self.delimiter = delimiter  # the samples' dialect, for layouts of text (``delimiters``)
        self.chunk_size = chunk_size
        self.shard_size = shard_size
        self.compression = compression
        self.dtype = dtype

    @abstractmethod
    def begin_split(self, split: str, count: int, schema: Schema) -> None: ...

    @abstractmethod
    def write(self, split: str, start: int, x: np.ndarray, y: np.ndarray) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def abort(self) -> None:
        """Close whatever is open after a failure, without flushing more than needed."""
        try:
            self.close()
        except Exception:
            pass

    @abstractmethod
    def path_of(self, split: str, index: int) -> Path:
        """The file sample ``index`` of ``split`` goes to: what a write error names."""


class Resumable(ABC):
    """A writer whose interrupted conversion can go on where it stopped (see ``ooc.convert``). A writer
    without it starts the whole store over when a conversion is re-run."""

    # what a resumed conversion keeps: every committed unit ("commit"), or whole splits only ("split":
    # a file per split that cannot be trusted once killed mid-write)
    resume_unit: ClassVar[str] = "commit"

    @abstractmethod
    def commit(self, split: str, done: int) -> dict[str, Any]:
        """Samples ``[0, done)`` of ``split`` are written: hand them to the OS (a killed process
        then loses none of them) and, once ``done`` is the split's count, finish the split's files.
        Returns what ``resume_split`` needs besides the final files (JSON, kept in the journal)."""

    @abstractmethod
    def final_files(self, split: str, done: int) -> list[Path]:
        """The files of ``split`` that no later write changes once ``commit(split, done)`` returned:
        their checksums go in the journal, and a resumed conversion keeps them."""

    @abstractmethod
    def resume_split(self, split: str, count: int, schema: Schema, done: int, state: dict[str, Any]) -> int:
        """Reopen a split that an interrupted conversion committed ``done`` samples of (``state``:
        what ``commit`` returned then) and return the sample to continue from (0: started over)."""


class ParallelParts(ABC):
    """A layout whose pieces are independent files: other processes write the samples of a range
    (``write_part``, on a fresh Writer in the worker, given ``part_spec``) while this writer, in the
    converting process, takes the rest in sample order (``absorb_part``: targets, indexes, running
    CRCs), then commits as usual. The files come out byte for byte as one process writes them."""

    def part_unit(self, step: int) -> int:
        """Samples per parallel task, given the commit unit ``step`` (a multiple of the chunk size)."""
        return step

    def part_spec(self, split: str) -> dict[str, Any]:
        """What a worker needs to write parts of ``split`` (picklable; the split is begun here)."""
        return {}

    @abstractmethod
    def write_part(self, split: str, start: int, x: np.ndarray, y: np.ndarray, spec: dict[str, Any]) -> Any:
        """In a worker: write the pieces of samples ``[start, start + len(x))``; the result (picklable)
        goes to ``absorb_part``."""

    @abstractmethod
    def absorb_part(self, split: str, start: int, y: np.ndarray, result: Any) -> None:
        """In the converting process, parts in sample order: what else samples ``[start, start +
        len(y))`` need (their targets, ``write_part``'s result), before ``commit``."""
