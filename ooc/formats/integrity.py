"""What the read path checks for every layout, so that nothing it returns differs from what was written.

Here: the targets checked once per open (shape, dtype, the CRC-32 the conversion recorded in the
manifest's ``read_checksums``, class labels within ``num_classes``); each unit of samples checked
against its CRC-32 the first time a reader reads it in a pass over the split (a layout whose bytes
carry no checksum of their own declares ``check_unit``); the generation re-check (a store converted
again since it was opened raises ``StoreRewrittenError`` instead of mixing two stores); and the
one-line errors that name the damaged file and its samples (for ``--on-error skip``).

Not here: how a layout reads its bytes (``ooc.formats.base.Store``'s hooks), what a reader caches
(``ooc.formats.chunked``). These are functions of a store and of the reader's ``ReadState``: the
store is their data, none of them keeps state of its own.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

import numpy as np

from ooc.errors import CorruptStoreError, OocError, StoreRewrittenError
from ooc.fs import is_remote
from ooc.manifest import manifest_signature, read_manifest

if TYPE_CHECKING:
    from ooc.formats.base import ReadState, Store


def crc(values: np.ndarray) -> str:
    """CRC-32 of an array's bytes (C order), 8 hex digits: what ``read_checksums`` records."""
    return f"{zlib.crc32(np.ascontiguousarray(values)):08x}"


def first_line(error: Exception) -> str:
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:200]}"


def recorded(store: Store, split: str) -> dict[str, Any]:
    """The CRC-32s the conversion recorded for ``split``'s reads ({} for a store without them)."""
    return store.manifest.get("read_checksums", {}).get("splits", {}).get(split, {})


def read_checksums(store: Store) -> dict[str, Any] | None:
    """What the read path checks, computed by reading the written store back once (the conversion
    records it in the manifest): per split the targets' CRC-32 and, with a ``check_unit``, each
    unit's. None for a store in object storage (reading it back would fetch it all)."""
    if is_remote(store.path):
        return None
    unit, splits = store.check_unit, {}
    for split in store.splits:
        n = store.num_samples(split)
        entry = {"y": crc(np.asarray(store._read_labels(split)))}
        if unit:
            entry["x"] = [crc(store._unit_rows(split, a, min(a + unit, n))) for a in range(0, n, unit)]
        splits[split] = entry
    return {"algorithm": "crc32", "unit": unit, "splits": splits}


def checked_targets(store: Store, split: str) -> np.ndarray:
    """Every target of ``split`` as stored, refused in one line unless they are what was written."""
    store._split_info(split)
    try:
        targets = np.asarray(store._read_labels(split))
    except OocError:
        raise  # the layout's own message names the file already
    except store.damage_errors as error:
        raise CorruptStoreError(
            f"{store._targets_file(split)}: cannot read the targets of split '{split}' ({first_line(error)}); "
            f"check the store with `ooc verify {store.path}`, re-convert it to repair"
        ) from error
    schema = store.schema
    want = (store.num_samples(split), *schema.target_shape)
    if targets.shape != want or targets.dtype != schema.target_dtype:
        raise CorruptStoreError(
            f"{store.path}: the targets of split '{split}' are {targets.dtype} {targets.shape}, the "
            f"manifest says {schema.target_dtype} {want}; re-convert the store"
        )
    expected = recorded(store, split).get("y")
    if expected is not None and crc(targets) != expected:
        raise CorruptStoreError(
            f"{store._targets_file(split)}: the targets of split '{split}' differ from their checksum (crc32 "
            f"{crc(targets)}, recorded {expected}); check the store with `ooc verify {store.path}`, re-convert "
            "it to repair"
        )
    classes = schema.num_classes
    if schema.target_kind == "classes" and classes and targets.size:
        low, high = int(targets.min()), int(targets.max())
        if low < 0 or high >= classes:
            raise CorruptStoreError(
                f"{store.path}: split '{split}' has class labels {low}–{high}, the manifest says "
                f"{classes} classes (0–{classes - 1}); re-convert the store"
            )
    return targets


def check_units(store: Store, state: ReadState, split: str, indices: np.ndarray) -> None:
    """Each unit of ``indices`` not yet checked in this reader's pass over the split, against its
    CRC-32 (a pass: until a split's worth of samples was read, then every unit is checked again)."""
    expected = recorded(store, split).get("x")
    unit = store.manifest.get("read_checksums", {}).get("unit")
    if not expected or not unit or unit != store.check_unit:
        return
    checked = state.checked_units.setdefault(split, set())
    n = store.num_samples(split)
    if state.read_in_pass.get(split, 0) >= n:
        checked.clear()
        state.read_in_pass[split] = 0
    state.read_in_pass[split] = state.read_in_pass.get(split, 0) + len(indices)
    for u in np.unique(indices // unit).tolist():
        if u in checked:
            continue
        start, stop = u * unit, min((u + 1) * unit, n)
        actual = store._unit_crc(split, u, start, stop, state)
        if u >= len(expected) or actual != expected[u]:
            was = expected[u] if u < len(expected) else "none"
            raise checksum_error(store, split, np.arange(start, stop), f"crc32 {actual}, recorded {was}")
        checked.add(u)


def checksum_error(store: Store, split: str, samples, detail: str) -> CorruptStoreError:
    """The one-line error for ``samples`` (a range or sorted array) whose bytes differ from their
    recorded checksum (``detail``: the two values), naming them for ``--on-error skip``."""
    first, last = int(samples[0]), int(samples[-1])
    error = CorruptStoreError(
        f"{store._file_of(split, first)}: samples {first}–{last} of split '{split}' differ from their "
        f"checksum ({detail}); check the store with `ooc verify {store.path}`, re-convert it to repair"
    )
    error.split, error.indices = split, samples
    return error


def read_error(store: Store, split: str, indices: np.ndarray, error: Exception, state: ReadState):
    """A one-line error naming the damaged file and its samples: the batch is re-read sample by
    sample (only on this failure path) to find the first that fails."""
    bad = int(indices[0])
    for index in indices.tolist():
        try:
            store._read_sorted(split, np.array([index]), state)
        except (OocError, *store.damage_errors):
            bad = index
            break
    samples = store._samples_with(split, bad)
    which = f"sample {bad}" if len(samples) == 1 else f"samples {samples.start}–{samples.stop - 1}"
    result = CorruptStoreError(
        f"{store._file_of(split, bad)}: cannot read {which} of split '{split}' ({first_line(error)}); "
        f"check the store with `ooc verify {store.path}`, re-convert it to repair"
    )
    result.split, result.indices = split, np.asarray(samples, dtype=np.int64)
    return result


def check_unchanged(store: Store) -> None:
    """Raise ``StoreRewrittenError`` if the store was converted again since it was opened: one stat
    of the manifest (``store._seen``: the file as opened); its generation is read again only when
    the file changed."""
    if store._seen is None:
        return
    now = manifest_signature(store.path)
    if now == store._seen:
        return
    try:
        manifest = read_manifest(store.path) if now is not None else None
    except OocError:
        manifest = None
    generation = store.manifest.get("generation")
    if manifest is not None and (
        manifest.get("generation") == generation and (generation is not None or manifest == store.manifest)
    ):
        store._seen = now  # the same store (its manifest written again, or only touched)
        return
    raise StoreRewrittenError(
        f"store {store.path} was rewritten while being read (by ooc convert --overwrite?); start again"
    )
