"""What the benchmark measures, as typed rows: the entries of report.json's ``results`` (written by
``run``, read back by ``report``)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


# -- what is measured: the rows of report.json's ``results`` ---------------------------------------


def _optional():
    """A field that report.json leaves out while it is None."""
    return field(default=None, metadata={"omit_if_none": True})


@dataclass
class ReadPass:
    """Passes over the train split in one of READ_MODES; ``seconds`` etc. are ``summary`` dicts."""

    seconds: dict[str, float]
    cpu_seconds: dict[str, float]
    samples_per_second: float
    mb_per_second: float  # of the decoded payload, as reads return it
    peak_rss_mb: float


@dataclass
class Conversion:
    seconds: dict[str, float]
    samples_per_second: float
    bytes: int  # apparent size of the files
    bytes_on_disk: int  # allocated blocks
    bytes_per_sample: float  # on disk
    ratio_to_raw: float  # on disk / the stored payload


@dataclass
class Training:
    """Training runs of one kind (loop, shuffle, cache) on one store; the ratios are to in-memory training."""

    shuffle: str
    loop: str
    cold: bool
    epoch_seconds: dict[str, float]
    epoch_cpu_seconds: dict[str, float]
    first_epoch_seconds: float
    train_samples: int
    samples_per_second: float
    test_accuracy: float
    peak_rss_mb: float
    ratio_to_memory: float | None = _optional()
    loader_cpu_share: float | None = _optional()
    memory_epoch_seconds: dict[str, float] | None = _optional()  # interleaved rounds: the memory runs
    ratio_rounds: list[float] | None = _optional()  # interleaved rounds: each round's ratio
    memory_noise: float | None = _optional()  # interleaved rounds: (max - min) / median of the memory epochs
    untrusted: str | None = _optional()  # why the ratio cannot be told from 1.0 in this run, if it cannot


@dataclass
class OutOfCore:
    """One layout read out of core (``ooc bench --memory-limit``, ``ooc.benchmark.out_of_core``): in a child
    process in a memory cgroup of ``memory_limit`` bytes, over a store of ``copies`` copies of the
    source; each pass cold and at most the run's ``pass_seconds`` long, without prefetch."""

    name: str
    format: str
    copies: int
    train_samples: int
    store_bytes: int  # allocated, the whole store
    train_bytes: int  # stored bytes of the train split (zarr: compressed)
    memory_limit: int
    disk_mb_per_second: float | None  # sequential O_DIRECT read of the store's files; None: refused
    samples_per_second: float  # chunk shuffle, with the read-ahead hints
    mb_per_second: float  # of stored bytes
    disk_share: float | None  # mb_per_second / disk_mb_per_second
    samples_per_second_no_read_ahead: float
    read_ahead_gain: float
    global_samples_per_second: float  # the exact global shuffle
    global_to_chunk: float
    samples_read: int  # by the chunk-shuffle pass
    peak_memory_mb: float | None  # the cgroup's counter: anonymous memory and page cache
    peak_rss_mb: float  # the reading process's own peak resident set
    training_ratio: float | None = _optional()  # s/sample from the store / from in-memory arrays
    training_samples_per_second: float | None = _optional()
    memory_training_samples_per_second: float | None = _optional()
    training_peak_memory_mb: float | None = _optional()
    training_note: str | None = _optional()  # why there is no training ratio


@dataclass
class Row:
    """One measured target (``kind`` "store") or baseline: an entry of report.json's ``results``."""

    name: str
    kind: str
    format: str
    options: dict[str, Any]
    read: dict[str, ReadPass]  # by mode of READ_MODES
    conversion: Conversion | None = None
    training: Training | None = None  # chunk shuffle, warm cache: the headline
    training_cold: Training | None = None
    training_fit: Training | None = None
    training_global_shuffle: Training | None = None
    tf_data: dict[str, Any] | None = None  # TFRecord's streaming view: "warm" and "cold" passes

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        """A row as report.json holds it (``to_json``'s inverse)."""

        def training(entry):
            return Training(**entry) if entry else None

        return cls(
            **{
                **data,
                "read": {mode: ReadPass(**r) for mode, r in data["read"].items()},
                "conversion": Conversion(**data["conversion"]) if data.get("conversion") else None,
                **{k: training(data.get(k)) for k in ("training", "training_cold", "training_fit")},
                "training_global_shuffle": training(data.get("training_global_shuffle")),
            }
        )


def to_json(value: Any) -> Any:
    """Dataclasses as the dicts report.json holds (their optional fields only when set)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_json(getattr(value, f.name))
            for f in fields(value)
            if not (f.metadata.get("omit_if_none") and getattr(value, f.name) is None)
        }
    if isinstance(value, dict):
        return {key: to_json(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value
