"""The one contract every on-disk layout implements: a ``Store`` to read and a ``Writer`` to fill.

A layout module provides ``NAME``, ``OPTIONS`` (``LayoutOptions``: compressions, chunk or shard
sizes, the sample dtypes it stores exactly), ``Store`` and ``Writer``, and one line in
``ooc.formats.FORMATS``; its tests are one class inheriting ``tests/conformance.py``'s suite.

Store (required: ``_read_sorted``, ``_read_labels``, ``_file_of``)
    Opened from a directory whose manifest names the format and the data's ``ooc.schema.Schema``.
    ``read(split, indices)`` is done once, here: it validates the indices, sorts and de-duplicates
    them, asks the layout for those rows (``_read_sorted``: sorted, unique indices, rows in the
    stored dtype), restores the caller's order, reshapes to ``(n, *sample_shape)`` and applies the
    decoding the manifest declares (``read_stored`` applies none). ``_read_labels`` returns every
    target of a split as stored; ``_file_of`` the file that holds a sample (what a read error names).
    Optional: ``_samples_with`` (the samples a damaged file loses together: a single-file layout's
    whole split), ``damage_errors`` (what the storage library raises on damaged bytes),
    ``chunk_size`` (what the chunk shuffle groups by; ``ChunkedStore`` does the chunk cache for a
    layout that implements ``_read_rows``), ``_reset_handles`` (declares open files and caches:
    stores open lazily, pickle without them and work in worker processes), ``close``,
    ``_check_manifest`` (``open_store`` calls it: every manifest field reading relies on — counts,
    sample shape, dtypes, chunk or shard size — checked against the data files, cheaply: array
    shapes, chunk sizes, file counts, headers; never a read of the data), ``check_unit`` (samples
    per unit whose CRC-32 the read path checks, for a layout whose bytes carry no checksum of
    their own; None: not checked), ``largest_unit`` (a remote layout that reads through ``cache``,
    the ``ooc.cache.ChunkCache`` ``open_store`` gives it with ``cache_dir``: its largest unit's bytes).

    Integrity on the read path, done here for every layout: the targets are checked once per open
    against the CRC-32 the conversion recorded (``read_checksums`` in the manifest) and class
    labels against the manifest's ``num_classes``; with a ``check_unit``, each unit of samples is
    checked against its CRC-32 the first time it is read in a pass over the split (a pass: until
    every unit was checked). Every read also stats the manifest: a store converted again since it
    was opened (another ``generation``) raises ``StoreRewrittenError`` instead of mixing two stores.

Writer (required: ``begin_split``, ``write``, ``close``, ``path_of``)
    Receives each split as ``begin_split(split, count, schema)`` followed by ``write`` calls with
    consecutive ``(x, y)`` chunks already in the stored dtype, cut at multiples of ``chunk_size``
    (chunked layouts write whole chunks), then ``close()``. It never needs a whole split in memory
    and writes data files only: ``ooc.convert`` writes the manifest last; ``path_of`` names the file a
    sample goes to (what a write error names). Optional: two capabilities ``ooc.convert`` detects: ``Resumable`` (an
    interrupted conversion goes on: ``commit``, ``final_files``, ``resume_split``; without it a
    conversion run again starts over) and ``ParallelParts`` (``--jobs``/``--dask`` write parts in
    other processes: ``write_part``, ``absorb_part``; without it a writer says why in
    ``one_process_because``).
"""

from __future__ import annotations

import os
import threading
import zlib
from abc import ABC, abstractmethod
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ooc.core.threads import lower_priority
from ooc.errors import CorruptStoreError, OocError, OptionError, StoreRewrittenError
from ooc.fs import is_remote
from ooc.manifest import checksum_size, manifest_signature, read_manifest
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
            from ooc.formats import FORMATS, get_format

            can = [other for other in FORMATS if dtype in get_format(other).OPTIONS.dtypes]
            raise OptionError(
                f"{name} cannot store {dtype} samples exactly; choose a layout that can: {', '.join(can)}"
            )
        return dtype


class Store(ABC):
    """The reading side of a layout (see the module docstring for the contract)."""

    format_name: ClassVar[str]
    # What the layout's storage library raises on damaged bytes, which becomes a one-line
    # CorruptStoreError naming the file; anything else is a bug in ooc and keeps its traceback.
    damage_errors: ClassVar[tuple[type[Exception], ...]] = (OSError, EOFError)

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

    def _reset_handles(self) -> None:
        """Declare the layout's open files and caches, all closed/empty: called by ``__init__``, after
        unpickling and by ``close``. Subclasses extend it (``super()._reset_handles()``)."""
        self._checked_units: dict[str, set[int]] = {}  # split -> units checked in this pass
        self._read_in_pass: dict[str, int] = {}  # split -> samples read since its checks were re-armed

    def will_need(self, split: str, indices: np.ndarray) -> None:
        """A hint that samples ``indices`` of ``split`` will be read soon (``ooc.batching`` gives the
        batches a stretch ahead, or two gathered windows ahead for the global shuffle): a layout starts
        reading them (reader threads, or ``advise_will_need`` to the kernel), so that the disk works
        while the caller decodes what it has. It never changes what a read returns. Optional: by
        default nothing."""

    def gather_window(self) -> int:
        """Optional: samples of the global shuffle's hints this store gathers at once (``ChunkedStore``);
        0: none (``hint_ahead`` then hints as for the chunk shuffle)."""
        return 0

    def _check_manifest(self) -> None:
        """Optional: refuse (``CorruptStoreError``, one line) a manifest whose reading-relevant fields
        do not match the data files; see the module docstring."""

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

    # a local cache of a remote store's units (``ooc.cache.ChunkCache``, set by ``open_store`` with
    # --cache-dir); a layout that supports one reads through it in its remote fetch path
    cache = None

    def largest_unit(self) -> int | None:
        """Optional: the stored bytes of the largest unit the layout keeps in a ``ChunkCache`` (what
        ``open_store`` sizes the cache against); None: the layout has no cached reads."""
        return None

    @property
    def check_unit(self) -> int | None:
        """Samples per unit whose CRC-32 the read path checks (None: the layout's bytes are guarded
        by its own format, or not checked)."""
        return None

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

    def labels(self, split: str) -> np.ndarray:
        """Every target of a split as reads return them (class numbers as int64); read once, then kept."""
        if split not in self._labels:
            targets = self.stored_targets(split)
            with self._labels_lock:
                self._labels.setdefault(split, self.schema.read_targets(targets))
        return self._labels[split]

    def stored_targets(self, split: str) -> np.ndarray:
        """Every target of a split exactly as stored; read once, then kept."""
        if split not in self._targets:
            with self._labels_lock:
                if split not in self._targets:
                    try:
                        self._targets[split] = self._checked_targets(split)
                    finally:
                        self._check_unchanged()
        return self._targets[split]

    def _checked_targets(self, split: str) -> np.ndarray:
        self._split_info(split)
        try:
            targets = np.asarray(self._read_labels(split))
        except OocError:
            raise  # the layout's own message names the file already
        except self.damage_errors as error:
            raise CorruptStoreError(
                f"{self.path}: cannot read the targets of split '{split}' ({_first_line(error)}); "
                f"check the store with `ooc verify {self.path}`, re-convert it to repair"
            ) from error
        want = (self.num_samples(split), *self.schema.target_shape)
        if targets.shape != want or targets.dtype != self.schema.target_dtype:
            raise CorruptStoreError(
                f"{self.path}: the targets of split '{split}' are {targets.dtype} {targets.shape}, the "
                "manifest "
                f"says {self.schema.target_dtype} {want}; re-convert the store"
            )
        recorded = self._recorded(split).get("y")
        if recorded is not None and _crc(targets) != recorded:
            raise CorruptStoreError(
                f"{self._file_of(split, 0) if self.num_samples(split) else self.path}: the targets of split "
                f"'{split}' differ from their checksum (crc32 {_crc(targets)}, recorded {recorded}); check the "
                f"store with `ooc verify {self.path}`, re-convert it to repair"
            )
        classes = self.schema.num_classes
        if self.schema.target_kind == "classes" and classes and targets.size:
            low, high = int(targets.min()), int(targets.max())
            if low < 0 or high >= classes:
                raise CorruptStoreError(
                    f"{self.path}: split '{split}' has class labels {low}–{high}, the manifest says "
                    f"{classes} classes (0–{classes - 1}); re-convert the store"
                )
        return targets

    def _recorded(self, split: str) -> dict[str, Any]:
        """The CRC-32s the conversion recorded for ``split``'s reads ({} for a store without them)."""
        return self.manifest.get("read_checksums", {}).get("splits", {}).get(split, {})

    def read_checksums(self) -> dict[str, Any] | None:
        """What the read path checks, computed by reading the written store back once (the conversion
        records it in the manifest): per split the targets' CRC-32 and, with a ``check_unit``, each
        unit's. None for a store in object storage (reading it back would fetch it all)."""
        if is_remote(self.path):
            return None
        unit, splits = self.check_unit, {}
        for split in self.splits:
            n = self.num_samples(split)
            entry = {"y": _crc(np.asarray(self._read_labels(split)))}
            if unit:
                entry["x"] = [_crc(self._unit_rows(split, a, min(a + unit, n))) for a in range(0, n, unit)]
            splits[split] = entry
        return {"algorithm": "crc32", "unit": unit, "splits": splits}

    def _unit_rows(self, split: str, start: int, stop: int) -> np.ndarray:
        """Stored rows ``[start, stop)`` for a CRC check (a layout may give a view instead of a copy)."""
        return self._read_sorted(split, np.arange(start, stop))

    def _unit_crc(self, split: str, unit: int, start: int, stop: int) -> str:
        """The CRC-32 of unit ``unit`` (rows ``[start, stop)``) as read now."""
        return _crc(self._unit_rows(split, start, stop))

    def _check_units(self, split: str, indices: np.ndarray) -> None:
        """Each unit of ``indices`` not yet checked in this pass over the split, against its CRC-32."""
        recorded = self._recorded(split).get("x")
        unit = self.manifest.get("read_checksums", {}).get("unit")
        if not recorded or not unit or unit != self.check_unit:
            return
        checked = self._checked_units.setdefault(split, set())
        n = self.num_samples(split)
        if self._read_in_pass.get(split, 0) >= n:  # a pass's worth of samples read: check them again
            checked.clear()
            self._read_in_pass[split] = 0
        self._read_in_pass[split] = self._read_in_pass.get(split, 0) + len(indices)
        for u in np.unique(indices // unit).tolist():
            if u in checked:
                continue
            rows = np.arange(u * unit, min((u + 1) * unit, n))
            actual = self._unit_crc(split, u, int(rows[0]), int(rows[-1]) + 1)
            if u >= len(recorded) or actual != recorded[u]:
                raise self._checksum_error(
                    split, rows, f"crc32 {actual}, recorded {recorded[u] if u < len(recorded) else 'none'}"
                )
            checked.add(u)

    def _checksum_error(self, split: str, samples, detail: str) -> CorruptStoreError:
        """The one-line error for ``samples`` (a range or sorted array) whose bytes differ from their
        recorded checksum (``detail``: the two values), naming them for ``--on-error skip``."""
        first, last = int(samples[0]), int(samples[-1])
        error = CorruptStoreError(
            f"{self._file_of(split, first)}: samples {first}–{last} of split '{split}' differ from their "
            f"checksum ({detail}); check the store with `ooc verify {self.path}`, re-convert it to repair"
        )
        error.split, error.indices = split, samples
        return error

    def _check_unchanged(self) -> None:
        """Raise ``StoreRewrittenError`` if the store was converted again since it was opened: one
        stat of the manifest; its generation is read again only when the file changed."""
        if self._seen is None:
            return
        now = manifest_signature(self.path)
        if now == self._seen:
            return
        try:
            manifest = read_manifest(self.path) if now is not None else None
        except OocError:
            manifest = None
        if manifest is not None and (
            manifest.get("generation") == self.manifest.get("generation")
            and (manifest.get("generation") is not None or manifest == self.manifest)
        ):
            self._seen = now  # the same store (its manifest written again, or only touched)
            return
        raise StoreRewrittenError(
            f"store {self.path} was rewritten while being read (by ooc convert --overwrite?); start again"
        )

    def read(self, split: str, indices) -> tuple[np.ndarray, np.ndarray]:
        """Samples at ``indices`` (any order, repeats allowed), decoded as the manifest declares, and
        their targets (class numbers as int64)."""
        x, y = self.read_stored(split, indices)
        return self.schema.decoded(x), self.schema.read_targets(y)

    def read_stored(self, split: str, indices) -> tuple[np.ndarray, np.ndarray]:
        """Samples at ``indices`` exactly as stored (no decoding), and their targets."""
        indices = self._checked_indices(split, indices)
        if not indices.size:
            return np.empty((0, *self.sample_shape), self.schema.dtype), np.empty(
                (0, *self.schema.target_shape), self.schema.target_dtype
            )
        unique, inverse = np.unique(indices, return_inverse=True)
        try:
            x = self._read_sorted(split, unique)
        except OocError as error:
            self._check_unchanged()  # a store rewritten under the read: say that, not which file failed
            error.split, error.indices = split, unique
            raise
        except self.damage_errors as error:
            self._check_unchanged()
            raise self._read_error(split, unique, error) from error
        try:
            self._check_units(split, unique)  # its error names the unit's samples
        except OocError:
            self._check_unchanged()
            raise
        targets = self.stored_targets(split)
        self._check_unchanged()  # after the read: what it returns is all of the store as opened
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

    def close(self) -> None:
        """Release open files; the store reopens them on the next read."""
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

    # -- what each layout implements --------------------------------------------------------------
    @abstractmethod
    def _read_sorted(self, split: str, indices: np.ndarray) -> np.ndarray:
        """Stored rows at sorted, unique ``indices``, in the stored dtype (any shape of n rows)."""

    @abstractmethod
    def _read_labels(self, split: str) -> np.ndarray:
        """Every target of ``split``, in sample order, as stored: (n, *target_shape)."""

    @abstractmethod
    def _file_of(self, split: str, index: int) -> Path:
        """The file that holds sample ``index``: what a read error names (and ``ooc verify`` would flag)."""

    def _samples_with(self, split: str, index: int) -> range:
        """Optional: the samples stored together with ``index`` (its chunk), lost together when it is
        damaged (default: itself)."""
        return range(index, index + 1)

    # -- helpers ------------------------------------------------------------------------------------
    def _read_error(self, split: str, indices: np.ndarray, error: Exception) -> CorruptStoreError:
        """A one-line error naming the damaged file and its samples: the batch is re-read sample by
        sample (only on this failure path) to find the first that fails."""
        bad = int(indices[0])
        for index in indices.tolist():
            try:
                self._read_sorted(split, np.array([index]))
            except (OocError, *self.damage_errors):
                bad = index
                break
        samples = self._samples_with(split, bad)
        which = f"sample {bad}" if len(samples) == 1 else f"samples {samples.start}–{samples.stop - 1}"
        result = CorruptStoreError(
            f"{self._file_of(split, bad)}: cannot read {which} of split '{split}' ({_first_line(error)}); "
            f"check the store with `ooc verify {self.path}`, re-convert it to repair"
        )
        result.split, result.indices = split, np.asarray(samples, dtype=np.int64)
        return result

    def _split_info(self, split: str) -> dict[str, Any]:
        try:
            return self.manifest["splits"][split]
        except KeyError:
            raise OptionError(
                f"split {split!r} is not in {self.path}: it has {', '.join(self.splits)}"
            ) from None


def _crc(values: np.ndarray) -> str:
    """CRC-32 of an array's bytes (C order), 8 hex digits: what ``read_checksums`` records."""
    return f"{zlib.crc32(np.ascontiguousarray(values)):08x}"


def _first_line(error: Exception) -> str:
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:200]}"


# The chunk shuffle draws each stretch of batches from this many chunks (``epoch_batches``'s
# ``stretch_chunks``); a chunked store caches twice as many decoded chunks (``ChunkedStore.cache_chunks``),
# since a batch may straddle two stretches. Bounded whatever the data's size. ``ooc bench`` measures
# other values (its stretch × cache table).
SHUFFLE_BUFFER_CHUNKS = 8
# the reader threads of a store that reads ahead: mostly waiting on the disk, several reads in flight
READER_THREADS = 4
CACHE_CHUNKS = 2 * SHUFFLE_BUFFER_CHUNKS
# The exact global shuffle draws each batch from hundreds of chunks: hinted a window ahead, its samples
# are gathered in the reader threads, each chunk decoded once for all the window's samples in it, not
# once a sample. Bytes of rows a window holds (up to 3 windows are held: one read, two gathering).
GATHER_BYTES = 32 << 20
READ_CRCS_KEPT = 1 << 16  # chunk CRCs taken at read time, kept until checked (a gathered window: all chunks)


def advise_will_need(path, ranges) -> None:
    """``posix_fadvise(WILLNEED)`` of the byte ranges ``(offset, length)`` of a local file, in file
    order, adjacent ones merged: the kernel queues their reads and returns. Where the call is missing
    or refused it does nothing (a hint)."""
    if not ranges or not hasattr(os, "posix_fadvise"):
        return
    merged: list[list[int]] = []
    for offset, length in sorted(ranges):
        if merged and offset <= merged[-1][0] + merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], offset + length - merged[-1][0])
        else:
            merged.append([offset, length])
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # the read that follows says what is wrong with the file
    try:
        for offset, length in merged:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


class ChunkedStore(Store):
    """A layout that stores samples in chunks of ``shuffle_unit`` samples along the sample axis and
    decodes a chunk whole (compressed HDF5 and Zarr do; uncompressed HDF5 and npy, whose "chunks" are
    runs of rows, may read single rows instead).

    ``_read_sorted`` is done here: the wanted rows are grouped by chunk, each chunk is read once
    (runs of adjacent missing chunks in one call, so zarr can fetch them concurrently) and kept in
    a small LRU of decoded chunks. With the chunk shuffle, consecutive batches come from the same
    few chunks, so each chunk is decoded once per epoch instead of once per batch.
    """

    # decoded chunks kept (least recently used dropped): what a chunk-shuffled read needs, bounded
    cache_chunks: int = CACHE_CHUNKS
    # whether will_need reads the chunks it is told of in a background thread (else: advises the
    # kernel). Only for a layout whose ``_read_rows`` is thread-safe and spends its time outside the
    # GIL (a pread, a decoder that releases it), so that it overlaps the caller's decoding.
    reads_ahead: ClassVar[bool] = False
    # read past the page cache (``ooc.direct_io``), in layouts that read their files themselves:
    # None decides at the first read (yes when the store's files are larger than the memory this
    # process may use), True or False forces it
    direct_io: bool | None = None

    @property
    def chunk_size(self) -> int:
        return int(self.options["chunk_size"])

    def will_need(self, split, indices):
        """The chunks of ``indices`` neither cached nor hinted lately (at most ``cache_chunks``; none
        that would be read as single rows) are advised to the kernel (unless read past the page cache)
        and read in the reader threads (``reads_ahead``); a hint spread over more chunks than that (the
        global shuffle) is collected for a gathered window."""
        if is_remote(self.path) or not len(indices) or self.shuffle_unit is None:
            return
        chunk_of = np.asarray(indices) // self.shuffle_unit
        chunks, hits = np.unique(chunk_of, return_counts=True)
        if len(chunks) > self.cache_chunks and self.gather_window():
            self._gather_later(split, np.asarray(indices, dtype=np.int64))
            return
        with self._chunk_lock:
            wanted = [
                c
                for c, h in zip(chunks.tolist(), hits.tolist())
                if (split, c) not in self._chunk_cache
                and (split, c) not in self._hinted
                and not self._points_are_cheaper(h)
            ][: self.cache_chunks]
            for c in wanted:
                self._hinted[(split, c)] = None
            while len(self._hinted) > 4 * self.cache_chunks:
                self._hinted.popitem(last=False)
        if not wanted:
            return
        if not self._reads_direct():
            self._advise_chunks(split, wanted)  # the kernel reads them all at once
        if self.reads_ahead and self._reads_ahead_here():
            self._read_in_background(split, wanted)

    def _reads_direct(self) -> bool:
        """Whether this store's own file reads bypass the page cache (``direct_io``)."""
        if self.direct_io is not None:
            return self.direct_io
        if self._direct is None and is_remote(self.path):
            self._direct = False
        if self._direct is None:
            from ooc.direct_io import larger_than_memory

            files = self.manifest.get("checksums", {}).get("files")  # "<crc> <size>" each: no walk
            size = sum(map(checksum_size, files.values())) if files else disk_usage(self.path)[0]
            self._direct = larger_than_memory(size)
        return self._direct

    def _reads_ahead_here(self) -> bool:
        """Optional: whether this store (its options, its files) can read ahead in the background."""
        return True

    def _read_in_background(self, split: str, chunk_ids: list[int]) -> None:
        """Start reading runs of adjacent ``chunk_ids`` in the store's reader thread; a read takes the
        chunk from ``_ahead`` (at most ``cache_chunks`` pending: older ones are dropped unread)."""
        size, count = self.shuffle_unit, self.num_samples(split)
        with self._chunk_lock:
            for run in _runs(sorted(chunk_ids), self.cache_chunks):
                block = self._reader_pool().submit(self._read_run, split, run, size, count)
                for at, c in enumerate(run):
                    self._ahead[(split, c)] = (block, at)
            while len(self._ahead) > self.cache_chunks:
                self._ahead.popitem(last=False)

    def _reader_pool(self) -> ThreadPoolExecutor:
        """The reader threads, made at the first read ahead, niced like ``ooc.batching``'s prefetch
        thread: they run on the cycles the model leaves idle."""
        if self._reader is None:
            self._reader = ThreadPoolExecutor(
                READER_THREADS, thread_name_prefix="ooc-read-ahead", initializer=lower_priority
            )
        return self._reader

    def gather_window(self) -> int:
        """Samples of a gathered window (``GATHER_BYTES`` of rows); 0 where this store cannot read
        in the background."""
        if not (self.reads_ahead and not is_remote(self.path) and self._reads_ahead_here()):
            return 0
        row = int(np.prod(self.sample_shape)) * self.schema.dtype.itemsize
        return max(1, GATHER_BYTES // max(row, 1))

    def _gather_later(self, split: str, indices: np.ndarray) -> None:
        """Collect hinted samples; a window's worth is gathered by all the reader threads, each taking
        a share of its chunks. (A smaller first window would not come sooner: a window of more samples
        than the store has chunks reads nearly every chunk, whatever its size.)"""
        with self._chunk_lock:
            pending = self._scattered.setdefault(split, [])
            pending.append(indices)
            if sum(map(len, pending)) < self.gather_window():
                return
            wanted = np.unique(np.concatenate(pending))
            pending.clear()
            chunk_of = wanted // self.shuffle_unit
            cuts = np.searchsorted(
                chunk_of, np.quantile(chunk_of, np.linspace(0, 1, READER_THREADS + 1)[1:-1])
            )
            parts = [self._reader_pool().submit(self._gather, split, part) for part in np.split(wanted, cuts)]
            self._gathered.append([split, wanted, parts, len(wanted)])  # the last: samples not yet read
            while len(self._gathered) > 3:
                self._gathered.pop(0)

    def _gather(self, split: str, wanted: np.ndarray) -> np.ndarray:
        """Rows ``wanted`` (sorted), each chunk read once (``_read_run``: its CRC taken) and dropped."""
        size, count = self.shuffle_unit, self.num_samples(split)
        out = np.empty((len(wanted), *self.sample_shape), self.schema.dtype)
        if not len(wanted):
            return out
        chunk_of = wanted // size
        bounds = np.flatnonzero(np.r_[True, chunk_of[1:] != chunk_of[:-1], True])
        for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            c = int(chunk_of[s])
            out[s:e] = self._read_run(split, [c], size, count)[wanted[s:e] - c * size]
        return out

    def _from_gathered(self, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Which of ``indices`` a gathered window holds, and their rows (waiting for the window)."""
        found = np.zeros(len(indices), bool)
        rows = None
        for entry in list(self._gathered):
            where, wanted, block, _ = entry
            if where != split:
                continue
            at = np.minimum(np.searchsorted(wanted, indices), len(wanted) - 1)
            hit = (wanted[at] == indices) & ~found
            if hit.any():
                if rows is None:
                    rows = np.empty((len(indices), *self.sample_shape), self.schema.dtype)
                if isinstance(block, list):  # the threads' parts, in order: joined once
                    block = entry[2] = np.concatenate([part.result() for part in block])
                rows[hit] = block[at[hit]]
                found |= hit
                entry[3] -= int(hit.sum())
                if entry[3] <= 0:
                    self._gathered.remove(entry)
        return found, rows

    def _advise_chunks(self, split: str, chunk_ids: list[int]) -> None:
        """Optional: ``advise_will_need`` of the bytes of these chunks (``will_need``'s layout part)."""

    def _samples_with(self, split, index):
        first = index - index % self.shuffle_unit
        return range(first, min(first + self.shuffle_unit, self.num_samples(split)))

    @abstractmethod
    def _read_rows(self, split: str, start: int, stop: int) -> np.ndarray:
        """Stored rows ``[start, stop)``, a whole number of chunks (the last may be short)."""

    def _points_are_cheaper(self, hits: int) -> bool:
        """Whether reading ``hits`` single rows beats decoding their whole chunk."""
        return False

    def _read_points(self, split: str, indices: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _reset_handles(self):
        super()._reset_handles()
        self._chunk_cache: OrderedDict[tuple[str, int], np.ndarray] = (
            OrderedDict()
        )  # decoded chunks, least recent first
        self._hinted: OrderedDict[tuple[str, int], None] = OrderedDict()  # chunks will_need asked for lately
        # CRC-32s of chunks taken as they were read (when chunks are the check units), until checked
        self._read_crcs: OrderedDict[tuple[str, int], str] = OrderedDict()
        # chunks being read in the background: (the read of their run, their place in it)
        self._ahead: OrderedDict[tuple[str, int], tuple[Future, int]] = OrderedDict()
        self._reader: ThreadPoolExecutor | None = None  # the thread that reads them, made when needed
        self._chunk_lock = threading.Lock()
        self._crc_lock = threading.Lock()
        self._direct: bool | None = None  # direct_io's decision, once made
        self._scattered: dict[str, list[np.ndarray]] = {}  # split -> hinted samples not yet gathered
        # gathered windows: [split, sorted samples, the read of their rows, samples not yet read]
        self._gathered: list[list] = []

    def close(self):
        if getattr(self, "_reader", None) is not None:
            self._reader.shutdown(wait=True, cancel_futures=True)
        super().close()

    def _read_sorted(self, split, indices):
        if self._gathered:
            with self._chunk_lock:
                found, rows = self._from_gathered(split, indices)
            if found.any():
                if not found.all():
                    rows[~found] = self._read_cached(split, indices[~found])
                return rows
        return self._read_cached(split, indices)

    def _read_cached(self, split, indices):
        size, count = self.shuffle_unit, self.num_samples(split)
        cache = self._chunk_cache
        chunk_of = indices // size
        starts = np.flatnonzero(np.r_[True, chunk_of[1:] != chunk_of[:-1]])
        ends = np.r_[starts[1:], len(indices)]
        span = dict(zip(chunk_of[starts].tolist(), zip(starts.tolist(), ends.tolist())))
        out = None

        def put(start: int, end: int, part: np.ndarray) -> None:
            nonlocal out
            if out is None:
                out = np.empty((len(indices), *part.shape[1:]), part.dtype)
            out[start:end] = part

        with self._chunk_lock:
            missing = []
            for c, (s, e) in span.items():  # cached chunks first: the fetches below may evict them
                if (split, c) in cache:
                    cache.move_to_end((split, c))
                    put(s, e, cache[(split, c)][indices[s:e] - c * size])
                elif self._points_are_cheaper(e - s):
                    put(s, e, self._read_points(split, indices[s:e]))
                else:
                    missing.append(c)
            # at most cache_chunks decoded at a time: a batch drawing from more chunks (the global
            # shuffle) holds no more decoded chunks than the cache, whatever the store's size
            for at in range(0, len(missing), self.cache_chunks):
                group = missing[at : at + self.cache_chunks]
                fetched = self._fetch_chunks(split, group, size, count)
                for c in group:
                    s, e = span[c]
                    put(s, e, fetched[c][indices[s:e] - c * size])
                    cache[(split, c)] = fetched[c]
                    cache.move_to_end((split, c))
                while len(cache) > self.cache_chunks:
                    cache.popitem(last=False)
        return out

    def _fetch_chunks(self, split: str, chunk_ids: list[int], size: int, count: int) -> dict[int, np.ndarray]:
        """Decode the given chunks (ascending: file order): those read ahead from their background
        read (its error, if any, raised here), the others in runs of adjacent ones (at most
        ``cache_chunks``) per call."""
        fetched = {}
        for c in chunk_ids:
            if (split, c) in self._ahead:
                block, at = self._ahead.pop((split, c))
                fetched[c] = block.result()[at * size : (at + 1) * size]
        for run in _runs([c for c in chunk_ids if c not in fetched], self.cache_chunks):
            block = self._read_run(split, run, size, count)
            for i, r in enumerate(run):
                fetched[r] = block[i * size : (i + 1) * size].copy() if len(run) > 1 else block
        return fetched

    def _read_run(self, split: str, run: list[int], size: int, count: int) -> np.ndarray:
        """The rows of a run of adjacent chunks; where chunks are the check units, each one's CRC-32
        is taken here, from the bytes just read (in the reader thread, for a run read ahead), for
        ``_unit_crc`` to find instead of reading the unit again."""
        block = self._read_rows(split, run[0] * size, min((run[-1] + 1) * size, count))
        if self.check_unit == size and self._recorded(split).get("x"):
            crcs = {c: _crc(block[i * size : (i + 1) * size]) for i, c in enumerate(run)}
            with self._crc_lock:
                for c, crc in crcs.items():
                    self._read_crcs[(split, c)] = crc
                while len(self._read_crcs) > READ_CRCS_KEPT:
                    self._read_crcs.popitem(last=False)
        return block

    def _unit_crc(self, split, unit, start, stop):
        with self._crc_lock:
            crc = self._read_crcs.pop((split, unit), None)
        return crc if crc is not None else super()._unit_crc(split, unit, start, stop)


def _runs(ascending: list[int], longest: int) -> list[list[int]]:
    """``ascending`` cut into runs of consecutive numbers, each at most ``longest`` long."""
    runs: list[list[int]] = []
    for c in ascending:
        if runs and c == runs[-1][-1] + 1 and len(runs[-1]) < longest:
            runs[-1].append(c)
        else:
            runs.append([c])
    return runs


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


def disk_usage(path: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of every file below ``path``."""
    if is_remote(path):  # objects: what is stored is what is billed
        from ooc import remote

        total = sum(remote.list_files(path).values())
        return total, total
    apparent = allocated = 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.stat(os.path.join(root, name))
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated
