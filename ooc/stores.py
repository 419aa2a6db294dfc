"""Opening stores: from a directory (the manifest says which layout), or from memory as a baseline."""

from __future__ import annotations

import os

import numpy as np

from ooc.cache import ChunkCache, needed_bytes
from ooc.core.units import human_bytes, parse_bytes
from ooc.errors import CorruptStoreError, FormatMismatchError, OptionError
from ooc.formats import FORMATS, get_format, require_local_unless_remote
from ooc.formats.base import Store
from ooc.formats.text import ROUNDINGS
from ooc.manifest import check_manifest_crc, read_manifest_signed
from ooc.remote import is_url, location
from ooc.sampling import SHUFFLE_BUFFER_CHUNKS
from ooc.schema import DECODES, MAX_RANK, SAMPLE_DTYPES, TARGET_KINDS, Schema, TargetTally, schema_for


def open_store(
    path: str | os.PathLike,
    *,
    expect_format: str | None = None,
    storage_options: dict | None = None,
    cache_dir: str | os.PathLike | None = None,
    cache_size: int | str | None = None,
) -> Store:
    """The store at ``path``, of whatever layout its manifest names.

    ``expect_format`` guards against training on another layout than the caller meant. The manifest
    is checked (its fields, its own checksum, and against the data files: ``Store._check_manifest``)
    before the store is returned. ``path`` may
    be a URL (``s3://bucket/mnist.zarr``) for zarr and parquet stores, with fsspec
    ``storage_options`` (default: credentials and endpoint from the environment).

    ``cache_dir`` and ``cache_size`` (bytes, or a size such as ``"2G"``) keep the units a remote store's
    reads fetch on local disk (``ooc.cache.ChunkCache``), so that later epochs and runs read them from
    there; the size must hold one stretch of the chunk shuffle (``SHUFFLE_BUFFER_CHUNKS`` units).
    """
    path = location(path, storage_options)
    if cache_dir is not None or cache_size is not None:
        cache_size = _cache_options(path, cache_dir, cache_size)
    if expect_format is not None:
        require_local_unless_remote(expect_format, path)
    manifest, signature = read_manifest_signed(path)
    _check_manifest(path, manifest)
    check_manifest_crc(f"{os.fspath(path)}/ooc.json", manifest)
    fmt = manifest["format"]
    if expect_format is not None and fmt != expect_format:
        raise FormatMismatchError(
            f"{path} holds a {fmt} store, not {expect_format}: pass --store {fmt}, or --path to a "
            f"{expect_format} store"
        )
    require_local_unless_remote(fmt, path)
    store = get_format(fmt).Store(path, manifest)
    store._seen = signature  # the file read above, not one that replaced it since
    store._check_manifest()  # the manifest against the data files: counts, shapes, chunk sizes
    if cache_dir is not None:
        store.cache = _cache_for(store, cache_dir, cache_size)
    return store


def _cache_options(path, cache_dir, cache_size) -> int:
    """``cache_size`` in bytes, once both options are given and apply to ``path``."""
    if cache_dir is None:
        raise OptionError("--cache-size goes with --cache-dir: pass the directory to keep the chunks in")
    if cache_size is None:
        raise OptionError(f"--cache-dir {cache_dir} needs --cache-size: how much disk it may use (e.g. 2G)")
    if not is_url(path):
        raise OptionError(
            f"--cache-dir applies to stores on object storage (s3://…), not the local store {path}; drop "
            "--cache-dir"
        )
    if isinstance(cache_size, bool) or not isinstance(cache_size, (int, str)):
        raise OptionError(f"--cache-size {cache_size!r}: give a size such as 1G, 512M or 268435456 (bytes)")
    if isinstance(cache_size, int):
        if cache_size < 1:
            raise OptionError(f"--cache-size must be a positive number of bytes, got {cache_size}")
        return cache_size
    return parse_bytes(cache_size, "--cache-size")


def _cache_for(store: Store, cache_dir, cache_size: int):
    """The store's ``ChunkCache``, once the size is known to hold a stretch of its largest units."""

    largest = store.largest_unit()
    if largest is None:
        raise OptionError(f"--cache-dir: {store.format_name} stores have no cached reads; drop --cache-dir")
    need = needed_bytes(largest, SHUFFLE_BUFFER_CHUNKS)
    if cache_size < need:
        raise OptionError(
            f"--cache-size {human_bytes(cache_size)} cannot hold one stretch of chunks of {store.path} "
            f"({SHUFFLE_BUFFER_CHUNKS} units of up to {human_bytes(largest)}: {human_bytes(need)}); give at least "
            f"--cache-size {_size_option(need)}"
        )
    return ChunkCache(cache_dir, cache_size)


def _size_option(size: int) -> str:
    """The smallest whole K, M or G at least ``size`` bytes, as the option takes it: 9.7 MiB -> 10M."""
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= scale:
            return f"{-(-size // scale)}{unit}"
    return str(size)


def _check_manifest(path, manifest: dict) -> None:
    """Every field a reader relies on, with its type: a damaged or hand-edited manifest is refused
    here, in one line, instead of failing somewhere inside a layout."""
    where = f"{os.fspath(path)}/ooc.json"

    def bad(field, wanted):
        return CorruptStoreError(
            f"{where}: '{field}' is {manifest.get(field)!r:.60}, expected {wanted}; re-convert the store"
        )

    def whole(value, least):
        return isinstance(value, int) and not isinstance(value, bool) and value >= least

    if not isinstance(manifest["format"], str) or manifest["format"] not in FORMATS:
        raise bad("format", f"one of {', '.join(FORMATS)}")
    splits = manifest["splits"]
    if (
        not isinstance(splits, dict)
        or not splits
        or not all(
            isinstance(k, str) and isinstance(v, dict) and whole(v.get("count"), 0) for k, v in splits.items()
        )
    ):
        raise bad("splits", 'a mapping like {"train": {"count": 60000}, ...}')
    shape = manifest.get("sample_shape")
    if not isinstance(shape, list) or not 1 <= len(shape) <= MAX_RANK or not all(whole(d, 1) for d in shape):
        raise bad("sample_shape", f"a list of 1 to {MAX_RANK} positive sizes, like [28, 28, 1]")
    x = manifest.get("x")
    if (
        not isinstance(x, dict)
        or x.get("dtype") not in SAMPLE_DTYPES
        or x.get("decode") not in DECODES
        or (x.get("decode") == "pixels" and x.get("dtype") != "uint8")
    ):
        raise bad(
            "x", f'{{"dtype": one of {", ".join(SAMPLE_DTYPES)}, "decode": "pixels" (uint8 only) or "none"}}'
        )
    _check_target(manifest.get("target"), bad, whole)
    options = manifest.get("options")
    layout = get_format(manifest["format"]).OPTIONS
    if not isinstance(options, dict):
        raise bad("options", "a mapping of chunk_size, compression and dtype")
    chunk, shard = options.get("chunk_size"), options.get("shard_size")
    if (
        (layout.default_chunk_size is None) != (chunk is None)
        or (chunk is not None and not whole(chunk, 1))
        or (layout.default_shard_size is not None and not whole(shard, 1))
    ):
        raise bad("options", f"the {manifest['format']} options ooc writes")
    try:
        layout.resolve(
            manifest["format"],
            chunk_size=chunk,
            compression=options.get("compression"),
            shard_size=shard if layout.default_shard_size else None,
            delimiter=options.get("delimiter"),
        )
    except OptionError as e:
        raise CorruptStoreError(
            f"{where}: options are not valid for {manifest['format']} ({e}); re-convert the store"
        ) from None
    if not isinstance(options.get("compression"), str) or options.get("dtype") != x["dtype"]:
        raise bad("options", "compression and dtype names, the dtype that of x")
    if options.get("rounding", "float32") not in ROUNDINGS:
        raise bad("options", f"a rounding of {' or '.join(ROUNDINGS)} (csv folders)")


def _check_target(target, bad, whole) -> None:
    wanted = '{"kind": classes|onehot|multilabel|regression, "shape": [...], "dtype": ..., "num_classes": N}'
    if (
        not isinstance(target, dict)
        or target.get("kind") not in TARGET_KINDS
        or not isinstance(target.get("shape"), list)
        or not all(whole(d, 1) for d in target["shape"])
        or target.get("dtype") not in (*SAMPLE_DTYPES, "int64")
    ):
        raise bad("target", wanted)
    kind, shape, classes = target["kind"], target["shape"], target.get("num_classes")
    if (kind == "classes" and (shape or not whole(classes, 1))) or (
        kind in ("onehot", "multilabel") and (len(shape) != 1 or classes != shape[0])
    ):
        raise bad("target", wanted)


class MemoryStore(Store):
    """Every split held in numpy arrays: the in-memory baseline, read through the same surface."""

    format_name = "memory"

    def __init__(
        self,
        arrays: dict[str, tuple[np.ndarray, np.ndarray]],
        *,
        name: str = "memory",
        schema: Schema | None = None,
    ):
        first_x, first_y = next(iter(arrays.values()))
        if schema is None:
            schema = schema_for(first_x.shape, first_x.dtype, first_y.shape, first_y.dtype, where=name)
        if (
            schema.target_kind in ("classes", "binary")
            and schema.num_classes is None
            or schema.target_kind == "binary"
        ):
            tally = TargetTally()  # the number of classes, one-hot or multi-label: what the arrays hold
            for split, (_, y) in arrays.items():
                tally.add(schema, y, where=name, split=split)
            schema = tally.finish(schema)
        manifest = {
            "format": "memory",
            "splits": {split: {"count": len(x)} for split, (x, _) in arrays.items()},
            **schema.to_manifest(),
            "options": {"chunk_size": None, "compression": "none", "dtype": schema.dtype.name},
        }
        super().__init__(name, manifest)
        self.arrays = arrays

    @classmethod
    def from_source(cls, source, *, limit: int | None = None) -> MemoryStore:
        if limit is not None and limit < 1:
            raise OptionError(f"--limit must be a positive number of samples, got {limit}")
        arrays = {}
        for split in source.splits:
            chunks = list(source.iter_chunks(split, 1 << 14, limit))
            arrays[split] = (np.concatenate([x for x, _ in chunks]), np.concatenate([y for _, y in chunks]))
        return cls(arrays, name=f"memory:{source.name}", schema=source.schema)

    def _read_labels(self, split):
        return self.arrays[split][1]

    def _read_sorted(self, split, indices, state):
        return self.arrays[split][0][indices]

    def _file_of(self, split, index):
        return self.path
