"""TFRecord shards of ``tf.train.Example`` records, the TensorFlow-native layout::

    <store>/train-00000-of-00015.tfrecord …    --shard-size records each (.tfrecord.gz with GZIP)
    <store>/train.index.npy                    (n, 2) int64: payload offset and length of every record

Each record is one sample with the features of ``feature_spec(schema)``: ``image`` holds the
sample's values, row-major, as the bytes of the stored dtype, ``shape`` its shape; ``label`` the
class (int64), or, for any other target, ``target`` its bytes in the stored dtype. Plain tf.data reads
the shards as is::

    ds = tf.data.TFRecordDataset(sorted(glob("data/tfrecord/train-*")), compression_type="")
    ds = ds.map(lambda r: tf.io.parse_single_example(r, feature_spec(store.schema)))

Random access, which the common interface needs for its shuffles, uses the index written beside the
shards (offsets in the uncompressed record stream):
- uncompressed shards: each wanted record is one ``pread`` of its payload (adjacent records one
  read), so a shuffled batch costs what it reads, like ``npy``; records are parsed a batch at a time
  by ``tf.io.parse_example``;
- GZIP shards cannot seek, so a shard is the unit read: it is decompressed whole and cached like a
  chunk of the chunked layouts (``chunk_size`` is the shard size and the chunk shuffle groups by
  shard), so each shard is inflated once per epoch.
``tf_dataset`` is the streaming view tf.data is built for: shards interleaved, parsed in parallel.

An interrupted conversion keeps the shards it completed and starts the one it was writing over.
"""

from __future__ import annotations

import errno
import os
import struct
import zlib
from contextlib import contextmanager

import numpy as np

from ooc.errors import CorruptStoreError
from ooc.formats.base import LayoutOptions, ParallelParts, Resumable
from ooc.formats.base import Writer as _Writer
from ooc.formats.chunked import ChunkedStore
from ooc.schema import SAMPLE_DTYPES, Schema

NAME = "tfrecord"
OPTIONS = LayoutOptions(
    compressions=("none", "gzip"),
    default_compression="none",
    default_chunk_size=None,
    default_shard_size=4096,
    dtypes=tuple(d for d in SAMPLE_DTYPES if d != "uint32"),
    chunking="records in shards of --shard-size samples, an offset index per split",
    needs_tensorflow=True,
    bench_variants=({"compression": "gzip"},),
)
# A TFRecord is: uint64 length, uint32 masked CRC of the length, payload, uint32 masked CRC of it.
RECORD_HEADER, RECORD_FOOTER = 12, 4
_REPAIR = "re-convert with `ooc convert --format tfrecord --overwrite`"


def feature_spec(schema: Schema):
    """What ``tf.io.parse_example`` needs to read an ooc record of ``schema``."""
    import tensorflow as tf

    target = "label" if schema.target_kind == "classes" else "target"
    return {
        "image": tf.io.FixedLenFeature([], tf.string),
        "shape": tf.io.FixedLenFeature([len(schema.sample_shape)], tf.int64),
        target: tf.io.FixedLenFeature([], tf.int64 if target == "label" else tf.string),
    }


def _raw(data, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Parsed bytes features (n,) back to (n, *shape) values of ``dtype``."""
    return np.frombuffer(b"".join(data.tolist()), dtype).reshape((len(data), *shape))


def shard_paths(store, split: str, count: int, shard_size: int, compression: str) -> list:
    shards = max(1, -(-count // shard_size))
    suffix = ".tfrecord.gz" if compression == "gzip" else ".tfrecord"
    return [store / f"{split}-{i:05d}-of-{shards:05d}{suffix}" for i in range(shards)]


def index_path(store, split: str):
    return store / f"{split}.index.npy"


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


class Writer(_Writer, Resumable, ParallelParts):
    def __init__(self, path, **options):
        super().__init__(path, **options)
        self._splits: dict[str, dict] = {}  # split -> its shard paths, index and the shard being written

    def begin_split(self, split, count, schema):
        paths = shard_paths(self.path, split, count, self.shard_size, self.compression)
        self._splits[split] = {
            "paths": paths,
            "schema": schema,
            "index": np.zeros((count, 2), np.int64),
            "first": 0,
            "file": None,
            "shard": -1,
            "position": 0,
        }

    def write(self, split, start, x, y):
        with _os_errors():
            self._write(self._splits[split], start, x, y)

    # parallel: a task writes whole shards and returns their index rows, which are assembled here
    def part_unit(self, step):
        return max(1, -(-step // self.shard_size)) * self.shard_size

    def part_spec(self, split):
        state = self._splits[split]
        return {"paths": [str(p) for p in state["paths"]], "schema": state["schema"]}

    def write_part(self, split, start, x, y, spec):
        from pathlib import Path

        state = {
            "paths": [Path(p) for p in spec["paths"]],
            "schema": spec["schema"],
            "index": np.zeros((len(x), 2), np.int64),
            "first": start,
            "file": None,
            "shard": -1,
            "position": 0,
        }
        with _os_errors():
            self._write(state, start, x, y)
            self._close_shard(state)
        return state["index"]

    def absorb_part(self, split, start, y, result):
        state = self._splits[split]
        state["index"][start : start + len(y)] = result
        state["shard"] = (start + len(y) - 1) // self.shard_size  # the shards after it are still to come

    def _write(self, state, start, x, y):
        tf = _tf()
        schema = state["schema"]
        shape = tf.train.Feature(int64_list=tf.train.Int64List(value=list(schema.sample_shape)))
        classes = schema.target_kind == "classes"
        for i, (sample, target) in enumerate(zip(x, y.tolist() if classes else y), start):
            shard = i // self.shard_size
            if shard != state["shard"]:
                self._close_shard(state)
                options = tf.io.TFRecordOptions(compression_type="GZIP" if self.compression == "gzip" else "")
                state["file"] = tf.io.TFRecordWriter(str(state["paths"][shard]), options=options)
                state["shard"], state["position"] = shard, 0
            label = (
                tf.train.Feature(int64_list=tf.train.Int64List(value=[target]))
                if classes
                else tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[np.ascontiguousarray(target).tobytes()])
                )
            )
            record = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "image": tf.train.Feature(
                            bytes_list=tf.train.BytesList(value=[np.ascontiguousarray(sample).tobytes()])
                        ),
                        "shape": shape,
                        "label" if classes else "target": label,
                    }
                )
            ).SerializeToString(deterministic=True)  # map keys sorted: the same bytes in any process
            state["file"].write(record)
            state["index"][i - state["first"]] = (state["position"] + RECORD_HEADER, len(record))
            state["position"] += RECORD_HEADER + len(record) + RECORD_FOOTER

    def _close_shard(self, state):
        if state["file"] is not None:
            state["file"].close()
            state["file"] = None

    def _finish(self, split, state):
        self._close_shard(state)
        for path in state["paths"][state["shard"] + 1 :]:  # an empty split still gets its one (empty) shard
            _tf().io.TFRecordWriter(str(path)).close()
        np.save(index_path(self.path, split), state["index"])
        state["finished"] = True

    def commit(self, split, done):
        state = self._splits[split]
        with _os_errors():
            if done == len(state["index"]):
                self._finish(split, state)
            elif done >= (state["shard"] + 1) * self.shard_size:
                self._close_shard(state)  # full: final now, not when the next shard opens
        return {}

    def final_files(self, split, done):
        state = self._splits[split]
        if done == len(state["index"]):
            return state["paths"] + [index_path(self.path, split)]
        return state["paths"][: done // self.shard_size]

    def resume_split(self, split, count, schema, done, state):
        """Completed shards are kept (their index entries rebuilt from the record headers); the
        shard that was being written starts over."""
        self.begin_split(split, count, schema)
        entry = self._splits[split]
        if done == count:
            entry["finished"] = True
            return done
        try:
            for shard in range(done // self.shard_size):
                self._scan(entry, shard)
        except (OSError, ValueError, zlib.error, struct.error):
            return 0
        return done // self.shard_size * self.shard_size

    def _scan(self, state, shard):
        data = state["paths"][shard].read_bytes()
        if self.compression == "gzip":
            data = zlib.decompress(data, wbits=31)
        position = 0
        for i in range(shard * self.shard_size, min((shard + 1) * self.shard_size, len(state["index"]))):
            (length,) = struct.unpack_from("<Q", data, position)
            state["index"][i] = (position + RECORD_HEADER, length)
            position += RECORD_HEADER + length + RECORD_FOOTER
        if position != len(data):
            raise ValueError(f"{state['paths'][shard]}: {len(data) - position} bytes after its records")

    def path_of(self, split, index):
        paths = self._splits.get(split, {}).get("paths", [self.path])
        return paths[min(index // self.shard_size, len(paths) - 1)]

    def abort(self):
        for state in self._splits.values():
            self._close_shard(state)  # no index, no empty shards: the journal says what is done

    def close(self):
        with _os_errors():
            for split, state in self._splits.items():
                if not state.get("finished"):
                    self._finish(split, state)
        self._splits = {}


@contextmanager
def _os_errors():
    """TensorFlow's file errors as the OSError they stand for (a full disk is ResourceExhaustedError),
    so that a failed write is reported like any other layout's, naming the file."""
    tf = _tf()
    try:
        yield
    except tf.errors.OpError as e:
        code = {
            tf.errors.ResourceExhaustedError: errno.ENOSPC,
            tf.errors.PermissionDeniedError: errno.EACCES,
            tf.errors.NotFoundError: errno.ENOENT,
        }.get(type(e), errno.EIO)
        path = e.message.split(";")[0].strip() if ";" in e.message else None
        raise OSError(code, os.strerror(code), path) from e


class Store(ChunkedStore):
    format_name = NAME

    def _reset_handles(self):
        super()._reset_handles()
        self._index: dict[str, np.ndarray] = {}  # split -> (n, 2) record offsets and lengths
        self._fds: dict[str, int] = {}  # "split/shard" -> open descriptor
        self._shard_paths: dict[str, list] = {}

    @property
    def shard_size(self) -> int:
        return int(self.options["shard_size"])

    @property
    def chunk_size(self):
        return self.shard_size if self.options["compression"] == "gzip" else None

    def _file_of(self, split, index):
        return self.shard_paths(split)[index // self.shard_size]

    def _samples_with(self, split, index):
        return super()._samples_with(split, index) if self.chunk_size else range(index, index + 1)

    def shard_paths(self, split: str) -> list:
        if split not in self._shard_paths:
            self._shard_paths[split] = shard_paths(
                self.path, split, self.num_samples(split), self.shard_size, self.options["compression"]
            )
        return self._shard_paths[split]

    @property
    def check_unit(self):  # a GZIP shard carries its CRC; ooc's reads of plain records skip TFRecord's own
        return self.shard_size if self.options["compression"] == "none" else None

    def _check_manifest(self):
        """The shard files the count and shard size name, the index's length, and the sample shape
        that the first record holds (its ``shape`` feature)."""
        for split in self.splits:
            for path in self.shard_paths(split):
                if not path.is_file():
                    raise CorruptStoreError(
                        f"{path}: missing: the manifest's count and shard size name {len(self.shard_paths(split))} "
                        f"shards; {_REPAIR}"
                    )
            index = self._index_of(split)  # checks the count
            if not len(index):
                continue
            data = self._shard_bytes(split, 0)
            payload = self._payloads(data, index[:1], 0, split, 0)[0]
            tf = _tf()
            try:
                shape = tf.io.parse_single_example(payload, {"shape": tf.io.VarLenFeature(tf.int64)})["shape"]
                shape = tf.sparse.to_dense(shape).numpy().tolist()
            except (tf.errors.InvalidArgumentError, UnicodeDecodeError):  # TF's message of damaged bytes
                shape = None
            if shape != list(self.sample_shape):
                raise CorruptStoreError(
                    f"{self.shard_paths(split)[0]}: holds samples of shape {shape}, the manifest says "
                    f"{list(self.sample_shape)}; {_REPAIR}"
                )

    def _index_of(self, split: str) -> np.ndarray:
        if split not in self._index:
            path = index_path(self.path, split)
            try:
                index = np.load(path)
            except (OSError, ValueError) as e:
                raise CorruptStoreError(f"{path}: cannot read the record index ({e}); {_REPAIR}") from None
            if index.shape != (self.num_samples(split), 2):
                raise CorruptStoreError(
                    f"{path}: indexes {index.shape[0]} records, the manifest says {self.num_samples(split)}; "
                    f"{_REPAIR}"
                )
            self._index[split] = index
        return self._index[split]

    def _parse(self, payloads: list[bytes], split: str, first: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixels and labels of serialized records, parsed together (one TF call, not one per record)."""
        tf = _tf()
        where = self.shard_paths(split)[first // self.shard_size]
        try:
            features = tf.io.parse_example(payloads, {"image": feature_spec(self.schema)["image"]})
            return _raw(features["image"].numpy(), self.schema.dtype, self.sample_shape)
        except (tf.errors.InvalidArgumentError, UnicodeDecodeError):  # TF's message of damaged bytes
            raise CorruptStoreError(
                f"{where}: a record near sample {first} does not parse as an ooc tf.train.Example; {_REPAIR}"
            ) from None
        except ValueError:
            raise CorruptStoreError(
                f"{where}: a record near sample {first} holds a sample of another size than "
                f"{self.schema.dtype} {self.sample_shape}; {_REPAIR}"
            ) from None

    def _shard_bytes(self, split: str, shard: int) -> bytes:
        path = self.shard_paths(split)[shard]
        try:
            data = path.read_bytes()
            return zlib.decompress(data, wbits=31) if self.options["compression"] == "gzip" else data
        except (OSError, zlib.error) as e:
            raise CorruptStoreError(f"{path}: cannot read ({e}); {_REPAIR}") from None

    def _payloads(self, data: bytes, index: np.ndarray, base: int, split: str, shard: int) -> list[bytes]:
        view = memoryview(data)
        offsets = (index[:, 0] - base).tolist()
        lengths = index[:, 1].tolist()
        if offsets and offsets[-1] + lengths[-1] > len(data):
            raise CorruptStoreError(
                f"{self.shard_paths(split)[shard]} is truncated: the index needs {offsets[-1] + lengths[-1]} "
                f"bytes, it holds {len(data)}; {_REPAIR}"
            )
        return [bytes(view[o : o + n]) for o, n in zip(offsets, lengths)]

    # GZIP: a shard is a chunk -----------------------------------------------------------------------
    def _read_rows(self, split, start, stop):
        index = self._index_of(split)
        parts = []
        for shard in range(start // self.shard_size, -(-stop // self.shard_size)):
            first, last = shard * self.shard_size, min((shard + 1) * self.shard_size, stop)
            data = self._shard_bytes(split, shard)
            payloads = self._payloads(data, index[first:last], 0, split, shard)
            parts.append(self._parse(payloads, split, first))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    # uncompressed: one pread per run of adjacent records ----------------------------------------------
    def _read_sorted(self, split, indices, state):
        if self.options["compression"] == "gzip":
            return super()._read_sorted(split, indices, state)
        index = self._index_of(split)
        shard_of = indices // self.shard_size
        breaks = np.flatnonzero((np.diff(indices) != 1) | (np.diff(shard_of) != 0)) + 1
        payloads = []
        for run in np.split(indices, breaks):
            shard = int(run[0]) // self.shard_size
            begin = int(index[run[0], 0])
            end = int(index[run[-1], 0] + index[run[-1], 1])
            data = os.pread(self._fd(split, shard), end - begin, begin)
            payloads += self._payloads(data, index[run], begin, split, shard)
        return self._parse(payloads, split, int(indices[0]))

    def _fd(self, split: str, shard: int) -> int:
        key = f"{split}/{shard}"
        if key not in self._fds:
            path = self.shard_paths(split)[shard]
            try:
                self._fds[key] = os.open(path, os.O_RDONLY)
            except OSError as e:
                raise CorruptStoreError(f"{path}: cannot open ({e.strerror}); {_REPAIR}") from None
        return self._fds[key]

    def _read_labels(self, split):
        # labels live inside the records: one sequential pass through tf.data, once per split
        tf = _tf()
        name = "label" if self.schema.target_kind == "classes" else "target"
        spec = {name: feature_spec(self.schema)[name]}
        compression = "GZIP" if self.options["compression"] == "gzip" else ""
        paths = [str(p) for p in self.shard_paths(split)]
        dataset = tf.data.TFRecordDataset(paths, compression_type=compression).batch(4096)
        try:
            parsed = [tf.io.parse_example(batch, spec)[name].numpy() for batch in dataset]
        except (tf.errors.NotFoundError, tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            raise CorruptStoreError(
                f"{self.path}: cannot read the {split} labels ({e.message.splitlines()[0]}); {_REPAIR}"
            ) from None
        except UnicodeDecodeError:  # TF could not even decode its message about the damaged bytes
            raise CorruptStoreError(f"{self.path}: cannot read the {split} labels; {_REPAIR}") from None
        if name == "label":
            labels = (
                np.concatenate(parsed).astype(self.schema.target_dtype)
                if parsed
                else np.empty(0, self.schema.target_dtype)
            )
        else:
            try:
                labels = (
                    np.concatenate(
                        [_raw(p, self.schema.target_dtype, self.schema.target_shape) for p in parsed]
                    )
                    if parsed
                    else np.empty((0, *self.schema.target_shape), self.schema.target_dtype)
                )
            except ValueError:
                raise CorruptStoreError(
                    f"{self.path}: a {split} record's target is not {self.schema.target_dtype} "
                    f"{self.schema.target_shape}; {_REPAIR}"
                ) from None
        if len(labels) != self.num_samples(split):
            raise CorruptStoreError(
                f"{self.path}: the {split} shards hold {len(labels)} records, the manifest says "
                f"{self.num_samples(split)}; {_REPAIR}"
            )
        return labels

    def close(self):
        for fd in self._fds.values():
            os.close(fd)
        super().close()


def tf_dataset(
    store: Store,
    split: str,
    *,
    batch_size: int,
    shuffle_buffer: int = 0,
    seed: int | None = None,
    cycle_length: int = 4,
):
    """The streaming tf.data view: shards interleaved (``cycle_length`` at a time, read in parallel),
    shuffled in a buffer of ``shuffle_buffer`` records, batched, parsed and decoded in parallel.
    Yields float32 ``(x, y)`` batches like ``ooc.batches``, but in tf.data's own order."""
    tf = _tf()
    autotune = tf.data.AUTOTUNE
    paths = [str(p) for p in store.shard_paths(split)]
    compression = "GZIP" if store.options["compression"] == "gzip" else ""
    files = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle_buffer:
        files = files.shuffle(len(paths), seed=seed)
    records = files.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=compression),
        cycle_length=cycle_length,
        num_parallel_calls=autotune,
        deterministic=seed is not None,
    )
    if shuffle_buffer:
        records = records.shuffle(shuffle_buffer, seed=seed)
    schema = store.schema
    spec = feature_spec(schema)
    stored = tf.as_dtype(schema.dtype)

    def decode(serialized):
        features = tf.io.parse_example(serialized, spec)
        x = tf.reshape(tf.io.decode_raw(features["image"], stored), (-1, *schema.sample_shape))
        if schema.decode == "pixels":
            x = tf.cast(x, tf.float32) / 255.0
        if "label" in features:
            return x, features["label"]
        return x, tf.reshape(
            tf.io.decode_raw(features["target"], tf.as_dtype(schema.target_dtype)), (-1, *schema.target_shape)
        )

    return records.batch(batch_size).map(decode, num_parallel_calls=autotune).prefetch(autotune)
