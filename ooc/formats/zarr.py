"""A Zarr v3 group: the store directory is the group, with arrays ``<split>/x`` (n, *sample_shape) and
``<split>/y`` (n, *target_shape) in the source's dtypes, chunked along the sample axis.
``zarr.open_group(store)`` reads it as is.
An interrupted conversion resumes from its first uncommitted chunk.

Reads go chunk by chunk through ``ChunkedStore``'s cache. On a local disk a chunk file is read and
decoded with the numcodecs decoder zarr itself would call (``_decoder``), because zarr 3.1's read path
(event loop, thread pool, buffer wrappers) costs as much CPU again as the decoding; a store with
codecs ooc does not write still reads through zarr.

Zarr reads a missing chunk file as the fill value (zeros) without a word (zarr-python #486; an option
to raise came after 3.1), so every chunk is written, even an all-zero one (``write_empty_chunks``),
and the reader checks that a chunk's file exists before reading it: a deleted chunk is an error,
never a batch of black images.

A store may be a URL (``s3://bucket/mnist.zarr``, see ``ooc.remote``): zarr opens it through its
``FsspecStore``, which is async, so the chunks of a read are fetched concurrently. A remote store
fetches every chunk a batch misses in one zarr call (local stores read runs of adjacent chunks), and
checks that chunk objects exist against one listing of the store, not a request per chunk.
"""

from __future__ import annotations

import os
import re
import zlib

import numpy as np

from ooc import remote
from ooc.cache import store_key
from ooc.core.checksums import data_checksum
from ooc.direct_io import advise_will_need, read_file
from ooc.errors import CorruptStoreError
from ooc.formats import integrity
from ooc.formats.base import LayoutOptions, ParallelParts, Resumable
from ooc.formats.base import Writer as _Writer
from ooc.formats.chunked import ChunkedStore
from ooc.fs import is_remote
from ooc.manifest import checksum_size

NAME = "zarr"
OPTIONS = LayoutOptions(
    compressions=("none", "zstd", "blosc", "gzip"),
    default_compression="zstd",
    default_chunk_size=1024,
    remote=True,
    bench_variants=({"compression": "none"}, {"chunk_size": 256}),
    out_of_core=True,
    bench_jobs=True,  # compression: CPU-bound
)


def _compressors(name: str):
    from zarr import codecs

    return {
        "none": None,
        "zstd": [
            codecs.ZstdCodec(level=3, checksum=True)
        ],  # a damaged chunk fails to decode instead of giving other pixels
        "blosc": [codecs.BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")],
        "gzip": [codecs.GzipCodec(level=4)],
    }[name]


# zarr writes a chunk to "<key>.<32 hex digits>.partial", then renames it; a killed process leaves these
_TEMPORARY = re.compile(r"\.[0-9a-f]{32}\.partial$")
_CONFIG = {"write_empty_chunks": True}
LABEL_CHUNK = 1 << 16


def _dimension_names(first: str, rank: int) -> tuple[str, ...]:
    return (first, *(f"dim_{i}" for i in range(rank)))


class Writer(_Writer, Resumable, ParallelParts):
    """A sample chunk file is final once written (zarr writes it to a temporary name, then renames
    it), so a resumed conversion keeps the committed chunks and goes on from the first uncommitted
    one. A target chunk spans many commits: the journal keeps a CRC of the targets committed, which a
    resumed conversion checks against what the chunk holds."""

    def __init__(self, path, **options):
        super().__init__(path, **options)
        self._group = None
        self._arrays: dict[str, tuple] = {}  # split -> (x, y) zarr arrays
        self._target_crcs: dict[str, int] = {}

    def _open_group(self):
        import zarr

        if self._group is None:
            self._group = zarr.open_group(**_where(self.path), mode="a", zarr_format=3)
        return self._group

    def _chunks(self, count, schema):
        return (max(1, min(self.chunk_size, count)), *schema.sample_shape), (
            max(1, min(LABEL_CHUNK, count)),
            *schema.target_shape,
        )

    def begin_split(self, split, count, schema):
        group = self._open_group()
        compressors = _compressors(self.compression)
        x_chunks, y_chunks = self._chunks(count, schema)
        self._arrays[split] = (
            group.create_array(
                f"{split}/x",
                shape=(count, *schema.sample_shape),
                dtype=schema.dtype,
                chunks=x_chunks,
                compressors=compressors,
                dimension_names=_dimension_names("sample", len(schema.sample_shape)),
                config=_CONFIG,
                overwrite=True,
            ),
            group.create_array(
                f"{split}/y",
                shape=(count, *schema.target_shape),
                dtype=schema.target_dtype,
                chunks=y_chunks,
                compressors=compressors,
                dimension_names=_dimension_names("sample", len(schema.target_shape)),
                config=_CONFIG,
                overwrite=True,
            ),
        )
        self._target_crcs[split] = 0

    def resume_split(self, split, count, schema, done, state):
        group = self._open_group()
        for root, _, files in os.walk(self.path / split):
            for name in files:
                if _TEMPORARY.search(name):
                    os.unlink(os.path.join(root, name))
        x_chunks, y_chunks = self._chunks(count, schema)
        done = done if done == count else done - done % x_chunks[0]
        try:
            x, y = group[f"{split}/x"], group[f"{split}/y"]
            fits = (
                x.shape == (count, *schema.sample_shape)
                and x.chunks == x_chunks
                and x.dtype == schema.dtype
                and y.shape == (count, *schema.target_shape)
                and y.chunks == y_chunks
                and y.dtype == schema.target_dtype
            )
            targets_crc = (
                zlib.crc32(np.ascontiguousarray(y[:done]))
                if fits and done < count
                else state.get("labels_crc")
            )
        except (KeyError, ValueError, RuntimeError):  # missing, or a target chunk zarr cannot decode
            fits = False
        if not done or not fits or targets_crc != state.get("labels_crc"):
            self.begin_split(split, count, schema)
            return 0
        self._arrays[split] = (x.with_config(_CONFIG), y.with_config(_CONFIG))
        self._target_crcs[split] = targets_crc
        return done

    def write(self, split, start, x, y):
        xs, _ = self._arrays[split]
        xs[start : start + len(x)] = x
        self.absorb_part(split, start, y, None)

    def commit(self, split, done):
        return {"labels_crc": self._target_crcs[split]}

    def final_files(self, split, done):
        xs, ys = self._arrays[split]
        files = [self.path / split / name / "zarr.json" for name in ("x", "y")]
        files += [
            self.path.joinpath(split, "x", "c", str(c), *["0"] * (xs.ndim - 1))
            for c in range(_finished(done, xs))
        ]
        return files + [
            self.path.joinpath(split, "y", "c", str(c), *["0"] * (ys.ndim - 1))
            for c in range(_finished(done, ys))
        ]

    def path_of(self, split, index):
        rank = len(self._arrays[split][0].shape) - 1 if split in self._arrays else 2
        return self.path.joinpath(split, "x", "c", str(index // self.chunk_size), *["0"] * rank)

    # parallel: each sample chunk is its own file, written whole by one worker; targets stay here
    def write_part(self, split, start, x, y, spec):
        import zarr

        xs = zarr.open_array(self.path / split / "x", mode="r+", zarr_format=3).with_config(_CONFIG)
        xs[start : start + len(x)] = x

    def absorb_part(self, split, start, y, result):
        _, ys = self._arrays[split]
        targets = np.ascontiguousarray(y)
        ys[start : start + len(y)] = targets
        self._target_crcs[split] = zlib.crc32(targets, self._target_crcs[split])

    def close(self):
        self._group = None


def _finished(done: int, array) -> int:
    """How many chunks of ``array`` the first ``done`` samples fill (all of them once it is full)."""
    return -(-done // array.chunks[0]) if done == array.shape[0] else done // array.chunks[0]


class Store(ChunkedStore):
    format_name = NAME
    # numcodecs raises RuntimeError on a damaged chunk, a short one fails to reshape (ValueError)
    damage_errors = (OSError, EOFError, RuntimeError, ValueError)

    def _reset_handles(self):
        super()._reset_handles()
        self._group = None
        self._keys = None  # a remote store's object names, listed once
        self._decoders = {}  # split -> local chunk decoder, or None to read through zarr
        self._cache_decoders = {}  # split -> the decoder of chunk objects read through the cache

    def _array(self, split: str, name: str):
        import zarr

        if self._group is None:
            try:
                self._group = zarr.open_group(**_where(self.path), mode="r")
            except (FileNotFoundError, ValueError) as e:
                raise CorruptStoreError(
                    f"{self.path}: cannot open as a Zarr group ({e}); re-convert with `ooc convert --format "
                    "zarr --overwrite`"
                ) from None
        try:
            return self._group[f"{split}/{name}"]
        except KeyError:
            raise CorruptStoreError(
                f"{self.path}: array {split}/{name} is missing; re-convert with `ooc convert --format zarr "
                "--overwrite`"
            ) from None

    @property
    def check_unit(self):  # zstd chunks carry their content checksum, gzip its CRC; none and blosc nothing
        local = not is_remote(self.path)
        return self.chunk_size if local and self.options["compression"] in ("none", "blosc") else None

    def _check_manifest(self):
        for split in self.splits:
            x, y = self._array(split, "x"), self._array(split, "y")
            self._check_array(self.path, split, "x", x.shape, x.dtype, x.chunks[0])
            self._check_array(self.path, split, "y", y.shape, y.dtype)

    def _read_labels(self, split):
        array = self._array(split, "y")
        for chunk in range(-(-self.num_samples(split) // array.chunks[0])):
            path = self.path.joinpath(split, "y", "c", str(chunk), *["0"] * len(self.schema.target_shape))
            if not self._exists(path):
                raise self._missing(
                    split,
                    path,
                    range(
                        chunk * array.chunks[0], min((chunk + 1) * array.chunks[0], self.num_samples(split))
                    ),
                )
        return array[:]

    def _read_rows(self, split, start, stop):
        array = self._array(split, "x")
        decode = self._chunk_decoder(split, array)
        chunks = range(start // self.chunk_size, -(-stop // self.chunk_size))
        if decode is None:
            for chunk in chunks:
                path = self._file_of(split, chunk * self.chunk_size)
                if not self._exists(path):
                    raise self._missing(split, path, self._samples_with(split, chunk * self.chunk_size))
            return array[start:stop]
        parts = []
        for chunk in chunks:
            path = self._file_of(split, chunk * self.chunk_size)
            try:
                parts.append(decode(read_file(path, direct=self._reads_direct())))
            except FileNotFoundError:
                raise self._missing(split, path, self._samples_with(split, chunk * self.chunk_size)) from None
        rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return rows[: stop - start]  # the last chunk is stored whole, padded with the fill value

    reads_ahead = True

    def _reads_ahead_here(self):
        """A local store whose chunks ooc decodes itself: the file reads and the decoders (zstd, blosc,
        zlib) release the GIL, so the reader thread decodes the next stretch while the caller uses
        this one (both cores). Made here, in the caller's thread: zarr's group, the decoders."""
        return all(self._chunk_decoder(split, self._array(split, "x")) is not None for split in self.splits)

    def _advise_chunks(self, split, chunk_ids):
        for c in chunk_ids:  # a file per chunk, read whole
            advise_will_need(self._file_of(split, c * self.chunk_size), [(0, 0)])

    def _chunk_decoder(self, split, array):
        """A local chunk file's bytes to its rows, through the same numcodecs decoders zarr calls but
        without zarr 3.1's read path, whose event loop and thread hops cost as much CPU as the decoding
        (2.7 against 1.35 ms a 1024-sample zstd chunk, measured): half of what a zarr store costs the
        training on 2 cores. None (read through zarr) for a URL or codecs ooc does not write."""
        if split not in self._decoders:
            self._decoders[split] = None if is_remote(self.path) else _decoder(array)
        return self._decoders[split]

    def _targets_file(self, split):
        return self.path.joinpath(split, "y")  # the targets' array (its chunk files below it)

    def _file_of(self, split, index):
        # the default v3 chunk key: c/<sample chunk>/0/0… (the other axes are one chunk each)
        return self.path.joinpath(
            split, "x", "c", str(index // self.chunk_size), *["0"] * len(self.sample_shape)
        )

    def _missing(self, split, path, samples):
        error = CorruptStoreError(
            f"{path}: chunk file is missing (samples {samples.start}–{samples.stop - 1} of split '{split}'; "
            f"zarr would read them as zeros); check the store with `ooc verify {self.path}`, re-convert it to "
            "repair"
        )
        error.split, error.indices = split, samples
        return error

    def _exists(self, path) -> bool:
        if not is_remote(self.path):
            return os.path.exists(path)
        if self._keys is None:  # one listing of the store instead of a request per chunk
            self._keys = set(remote.list_files(self.path))
        return path[len(self.path) + 1 :] in self._keys

    def largest_unit(self):  # the largest sample chunk object: the manifest's checksums, else a listing
        files = self.manifest.get("checksums", {}).get("files")
        if files is not None:
            sizes = {name: checksum_size(value) for name, value in files.items()}
        else:
            sizes = remote.list_files(self.path) if is_remote(self.path) else {}
        chunks = tuple(f"{split}/x/c/" for split in self.splits)
        return max((size for name, size in sizes.items() if name.startswith(chunks)), default=None)

    def _read_chunks(self, split, chunk_ids):
        size, count = self.chunk_size, self.num_samples(split)
        if self.cache is not None and is_remote(self.path):
            if split not in self._cache_decoders:  # None: codecs ooc does not write, read through zarr
                self._cache_decoders[split] = _decoder(self._array(split, "x"))
            if (decode := self._cache_decoders[split]) is not None:
                return self._fetch_through_cache(split, chunk_ids, size, count, decode)
        if not is_remote(self.path) or len(chunk_ids) < 2:
            return None
        # remote: every missing chunk in one orthogonal selection, which zarr fetches concurrently
        array = self._array(split, "x")
        for c in chunk_ids:
            path = self._file_of(split, c * size)
            if not self._exists(path):
                raise self._missing(split, path, self._samples_with(split, c * size))
        bounds = [(c * size, min((c + 1) * size, count)) for c in chunk_ids]
        block = array.oindex[np.concatenate([np.arange(start, stop) for start, stop in bounds])]
        fetched, at = {}, 0
        for c, (start, stop) in zip(chunk_ids, bounds):
            fetched[c] = block[at : at + stop - start].copy()  # the cache keeps chunks, not the whole block
            at += stop - start
        return fetched

    def _fetch_through_cache(self, split, chunk_ids, size, count, decode):
        """Chunk objects from the cache, else fetched concurrently (then kept), each checked against
        the manifest's checksum of it, and decoded here (zarr's codecs, without its read path)."""

        key, files = store_key(self.path, self.manifest), self.manifest.get("checksums", {}).get("files", {})
        names = {c: self._file_of(split, c * size)[len(self.path) + 1 :] for c in chunk_ids}
        blobs = {c: self.cache.get(key, names[c], files.get(names[c])) for c in chunk_ids}
        missing = [c for c in chunk_ids if blobs[c] is None]
        fetched = remote.fetch(self.path, [names[c] for c in missing]) if missing else {}
        for c in missing:
            data = fetched[names[c]]
            if isinstance(data, FileNotFoundError):
                raise self._missing(
                    split, self._file_of(split, c * size), self._samples_with(split, c * size)
                )
            if isinstance(data, BaseException):
                raise data
            if names[c] in files and data_checksum(data) != files[names[c]]:
                samples = self._samples_with(split, c * size)
                raise integrity.checksum_error(
                    self, split, samples, f"{data_checksum(data)}, recorded {files[names[c]]}"
                )
            self.cache.put(key, names[c], data)
            blobs[c] = data
        return {c: decode(blobs[c])[: min((c + 1) * size, count) - c * size] for c in chunk_ids}


def _decoder(array):
    """The decoding of ``array``'s chunk files as ooc writes them: the bytes codec, then at most one
    of zstd, blosc, gzip (self-describing formats: numcodecs needs none of their settings to decode;
    zstd checks its content checksum). None for anything else."""
    import numcodecs

    codecs = [codec.to_dict() for codec in array.metadata.codecs]
    decoders = {"zstd": numcodecs.Zstd, "blosc": numcodecs.Blosc, "gzip": numcodecs.GZip}
    if codecs[0]["name"] != "bytes" or len(codecs) > 2 or any(c["name"] not in decoders for c in codecs[1:]):
        return None
    endian = codecs[0].get("configuration", {}).get("endian", "little")
    dtype = array.dtype.newbyteorder("<" if endian == "little" else ">")
    decompress = decoders[codecs[1]["name"]]().decode if len(codecs) == 2 else bytes
    shape = array.chunks

    def decode(data: bytes) -> np.ndarray:
        return np.frombuffer(decompress(data), dtype).reshape(shape)

    return decode


def _where(path) -> dict:
    """``zarr.open_group``'s store argument: a URL goes through fsspec, with its storage options."""
    if is_remote(path):
        return {"store": str(path), "storage_options": path.storage_options}
    return {"store": path}
