"""``ooc bench``: measure every layout on the same work and say which one to pick.

For each target (a layout with given options) it converts the source, then measures reading
(sequential and shuffled passes over the train split, with a warm and a cold page cache) and
training (the shared loop), next to three baselines measured in the same run: numpy arrays in
memory, a raw ``.npy`` memmap (the physical bound for reading this payload), and the classic
recipe's loader (``np.loadtxt`` per CSV file, one batch at a time) on the CSV layout.

Every timing is repeated; reports give the median with min and max. Reading passes run without
prefetch, so they measure the loader itself; training uses the loop exactly as ``ooc train`` does.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ooc.benchmark import report as reports
from ooc.benchmark.measure import PeakRSS, evict_from_page_cache
from ooc.benchmark.out_of_core import measure_out_of_core, out_of_core_formats
from ooc.benchmark.rows import Conversion, ReadPass, Row, Training, summary, to_json
from ooc.convert import convert, remove_store
from ooc.errors import OptionError
from ooc.formats import FORMATS, get_format, layouts
from ooc.formats.base import Store
from ooc.formats.text import DELIMITERS
from ooc.fs import disk_usage
from ooc.remote import URL
from ooc.sampling import epoch_batches
from ooc.sources import as_source
from ooc.stores import MemoryStore, open_store

REPORT_VERSION = 1
# order of samples (none / global permutation / chunk-aware shuffle) x page cache (warm / cold)
READ_MODES = ("sequential_warm", "global_warm", "chunk_warm", "sequential_cold", "global_cold", "chunk_cold")
_ORDER = {"sequential": "none", "global": "global", "chunk": "chunk"}
# Options worth comparing beside each layout's defaults, as each layout declares them
VARIANTS: dict[str, list[dict[str, Any]]] = {
    name: [{}, *get_format(name).OPTIONS.bench_variants] for name in FORMATS
}
TF_DATA_SHUFFLE_BUFFER = 10_000  # records in tf.data's shuffle buffer for the streaming TFRecord pass
# Conversion against `convert --jobs`: the layouts that declare it (``OPTIONS.bench_jobs``), default options.
JOBS_FORMATS = tuple(layouts(lambda m: m.OPTIONS.bench_jobs))
JOBS = (1, 2)


@dataclass
class Target:
    name: str
    format: str
    options: dict[str, Any] = field(default_factory=dict)


def targets_for(formats: list[str], *, variants: bool) -> list[Target]:
    targets = []
    for fmt in formats:
        get_format(fmt)  # refuses unknown names with the list of known ones
        for opts in VARIANTS.get(fmt, [{}]) if variants else [{}]:
            suffix = "".join(f"-chunk{v}" if k == "chunk_size" else f"-{v}" for k, v in opts.items())
            targets.append(Target(fmt + suffix, fmt, opts))
    return targets


# -- readers: what a read pass calls for each batch of indices -------------------------------------


class MemmapReader:
    """The raw .npy memmap baseline: pages straight from the file, decoded like the stores."""

    chunk_size = None

    def __init__(self, path: Path, labels: np.ndarray, schema):
        self.path, self.labels, self.schema = path, labels, schema
        self.x = np.load(path, mmap_mode="r")

    def __call__(self, indices):
        return self.schema.decoded(self.x[indices]), self.labels[indices]

    def close(self):
        del self.x  # pages of a file stay cached while a memmap of it is alive


class RecipeReader:
    """The classic recipe's get_batch: np.loadtxt on each sample's CSV file, float64, no prefetch."""

    chunk_size = None

    def __init__(self, csv_store: Path, sample_shape: tuple[int, ...]):
        with open_store(csv_store) as store:  # the files and labels the store lists, in its dialect
            self.files = [store._file_of("train", i) for i in range(store.num_samples("train"))]
            self.labels = store.labels("train")
            self.delimiter = None if store.dialect == "whitespace" else DELIMITERS[store.dialect].decode()
        self.sample_shape = sample_shape

    def __call__(self, indices):
        x = np.array([np.loadtxt(self.files[i], delimiter=self.delimiter) for i in indices])
        return x.reshape(len(indices), *self.sample_shape), self.labels[indices]

    def close(self):
        pass


def read_pass(reader, n: int, *, batch_size: int, shuffle: str, seed: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process) of one pass over ``n`` samples."""
    plan = epoch_batches(n, batch_size=batch_size, shuffle=shuffle, seed=seed, chunk_size=reader.chunk_size)
    start, cpu = time.perf_counter(), time.process_time()
    for batch in plan:
        reader(batch)
    return time.perf_counter() - start, time.process_time() - cpu


def measure_reads(
    open_reader: Callable[[], Any],
    n: int,
    *,
    files: Path | None,
    chunk_size: int | None,
    batch_size: int,
    repeats: int,
    progress: Callable[[str], None],
    modes: tuple[str, ...] = READ_MODES,
) -> dict[str, ReadPass]:
    """Every mode of READ_MODES (warm only without ``files``); cold passes evict ``files`` and reopen
    the reader first (a reopened HDF5 file starts with an empty chunk cache; a closed memmap lets
    its pages go)."""
    results = {}
    for mode in modes:
        if mode.endswith("cold") and files is None:
            continue  # data in memory has no cold cache
        order, cold = _ORDER[mode.split("_")[0]], mode.endswith("cold")
        if order == "chunk" and chunk_size is None:
            # without chunks the chunk shuffle is the global one, batch for batch: no second measurement
            if mode.replace("chunk", "global") in results:
                results[mode] = results[mode.replace("chunk", "global")]
                continue
            order = "global"
        times, cpus, peak = [], [], 0.0
        reader = open_reader()
        sample_bytes = reader(np.zeros(1, np.int64))[0].nbytes  # decoded payload per sample
        if not cold:
            read_pass(reader, n, batch_size=batch_size, shuffle=order, seed=999)  # warm the cache
        for rep in range(repeats):
            if cold:
                reader.close()
                evict_from_page_cache(files)
                reader = open_reader()
            with PeakRSS() as rss:
                seconds, cpu = read_pass(reader, n, batch_size=batch_size, shuffle=order, seed=rep)
            times.append(seconds)
            cpus.append(cpu)
            peak = max(peak, rss.peak_mb)
        reader.close()
        median = statistics.median(times)
        results[mode] = ReadPass(
            seconds=summary(times),
            cpu_seconds=summary(cpus),
            samples_per_second=n / median,
            mb_per_second=n * sample_bytes / median / 1e6,
            peak_rss_mb=peak,
        )
        progress(f"  read {mode}: {n / median:,.0f} samples/s")
    return results


def measure_tf_data(
    path: Path, *, batch_size: int, repeats: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Passes over a TFRecord store's train split through its streaming tf.data view (shards
    interleaved, parsed in parallel, shuffled in a buffer), warm and cold: what tf.data users get."""
    from ooc.formats.tfrecord import tf_dataset  # deferred: its pass runs only with TensorFlow

    results = {}
    for cold in (False, True):
        times = []
        for rep in range(repeats + (0 if cold else 1)):  # warm: one unmeasured pass first
            store = open_store(path)
            if cold:
                evict_from_page_cache(path)
            start = time.perf_counter()
            n = sum(
                len(y)
                for _, y in tf_dataset(
                    store, "train", batch_size=batch_size, shuffle_buffer=TF_DATA_SHUFFLE_BUFFER, seed=rep
                )
            )
            if cold or rep:
                times.append(time.perf_counter() - start)
        median = statistics.median(times)
        results["cold" if cold else "warm"] = {"seconds": summary(times), "samples_per_second": n / median}
        progress(
            f"  read through tf.data ({'cold' if cold else 'warm'}, shuffle buffer "
            f"{TF_DATA_SHUFFLE_BUFFER:,}): {n / median:,.0f} samples/s"
        )
    return results


class _StoreReader:
    def __init__(self, store: Store):
        self.store = store
        self.chunk_size = store.shuffle_unit

    def __call__(self, indices):
        return self.store.read("train", indices)

    def close(self):
        self.store.close()


def measure_training(
    store: Store,
    *,
    epochs: int,
    batch_size: int,
    model: str,
    seed: int,
    shuffle: str = "chunk",
    loop: str = "train_on_batch",
    cold: bool = False,
) -> Training:
    """One training run; ``cold`` evicts the store's files from the page cache before every epoch."""
    import keras

    from ooc.train import train  # deferred: a training child imports Keras only when it trains

    keras.backend.clear_session()
    with PeakRSS() as rss:
        report = train(
            store,
            epochs=epochs,
            batch_size=batch_size,
            model=model,
            seed=seed,
            shuffle=shuffle,
            loop=loop,
            log=lambda line: None,
            before_epoch=(lambda epoch: evict_from_page_cache(store.path)) if cold else None,
        )
    history = report["history"][1:] or report["history"]  # the first epoch also traces the graph
    median = statistics.median(e["seconds"] for e in history)
    return Training(
        shuffle=shuffle,
        loop=loop,
        cold=cold,
        epoch_seconds=summary([e["seconds"] for e in history]),
        epoch_cpu_seconds=summary([e["cpu_seconds"] for e in history]),
        first_epoch_seconds=report["history"][0]["seconds"],
        train_samples=report["store"]["train_samples"],
        samples_per_second=report["store"]["train_samples"] / median,
        test_accuracy=report["test"]["accuracy"],
        peak_rss_mb=rss.peak_mb,
    )


def measure_training_rounds(
    rows: list[Row],
    memory: MemoryStore,
    stores_dir: Path,
    n: int,
    *,
    rounds: int,
    epochs: int,
    batch_size: int,
    model: str,
    seed: int,
    tradeoff: bool,
    progress: Callable[[str], None],
    phase: Callable[[str], None] | None = None,
) -> None:
    """Every store's training runs against in-memory ones, in ``rounds`` interleaved rounds.

    Each round takes the stores in turn (the order rotated from round to round) and trains memory,
    then the store with a warm cache, then with a cold one; a round's ratio divides the store's
    epoch time by that of the memory run just before it, and the reported ratio is the median over
    the rounds (min–max kept). A shared 2-core machine drifts by 10 % within minutes: one pair of
    neighbouring runs sees the same machine, and the median drops the round a burst of other work
    spoiled. The global-shuffle run (accuracy and speed of the exact shuffle) comes once, after."""
    stores = [row for row in rows if row.kind == "store"]
    options = dict(epochs=epochs, batch_size=batch_size, model=model, seed=seed)
    runs = _interleaved_rounds(
        stores, memory, stores_dir, rounds=rounds, options=options, progress=progress, phase=phase
    )
    for row in stores:
        mine = runs[row.name]
        row.training, row.training_cold = (
            _rounds_summary(mine[kind], mine["memory"]) for kind in ("warm", "cold")
        )
        row.training.loader_cpu_share = loader_cpu_share(row.read, n, row.training, rows[0].training)
        t, c = row.training, row.training_cold
        progress(
            f"{row.name}: training {t.ratio_to_memory:.2f} x memory warm "
            f"({min(t.ratio_rounds):.2f}–{max(t.ratio_rounds):.2f}), "
            f"{c.ratio_to_memory:.2f} x cold ({min(c.ratio_rounds):.2f}–{max(c.ratio_rounds):.2f}), "
            f"loader CPU {t.loader_cpu_share * 100:.1f} % of an in-memory epoch's"
        )
    if tradeoff:
        if phase is not None:
            phase("training with the global shuffle")
        memory_epoch = statistics.median(
            r.epoch_seconds["median"] for mine in runs.values() for r in mine["memory"]
        )
        for row in stores:
            g = row.training_global_shuffle = measure_training(
                open_store(stores_dir / row.name), shuffle="global", **options
            )
            g.ratio_to_memory = g.epoch_seconds["median"] / memory_epoch
            progress(
                f"  {row.name}: train (global shuffle): {g.epoch_seconds['median']:.2f} s/epoch "
                f"({g.ratio_to_memory:.2f} x memory)"
            )


def _interleaved_rounds(
    stores: list[Row],
    memory: MemoryStore,
    stores_dir: Path,
    *,
    rounds: int,
    options: dict[str, Any],
    progress: Callable[[str], None],
    phase: Callable[[str], None] | None,
) -> dict[str, dict[str, list[Training]]]:
    """The runs of ``measure_training_rounds``: store name -> "memory", "warm", "cold" -> one run a round."""
    runs = {row.name: {"memory": [], "warm": [], "cold": []} for row in stores}
    for round_ in range(rounds):
        if phase is not None:
            phase(f"training round {round_ + 1} of {rounds}")
        progress(f"training, round {round_ + 1} of {rounds}")
        for row in stores[round_ % len(stores) :] + stores[: round_ % len(stores)]:
            path, mine = stores_dir / row.name, runs[row.name]
            mine["memory"].append(measure_training(memory, **options))
            mine["warm"].append(measure_training(open_store(path), **options))
            mine["cold"].append(measure_training(open_store(path), cold=True, **options))
            m, w, c = (mine[k][-1].epoch_seconds["median"] for k in ("memory", "warm", "cold"))
            progress(
                f"  {row.name}: memory {m:.2f}, warm {w:.2f} ({w / m:.2f} x), cold {c:.2f} s/epoch "
                f"({c / m:.2f} x)"
            )
    return runs


def _rounds_summary(store_runs: list[Training], memory_runs: list[Training]) -> Training:
    """One store's runs of every round as one record: the first run's fields, the epochs of all
    rounds, and the median of the rounds' ratios to their memory runs."""
    ratios = [s.epoch_seconds["median"] / m.epoch_seconds["median"] for s, m in zip(store_runs, memory_runs)]
    epoch_medians = [s.epoch_seconds["median"] for s in store_runs]
    noise, untrusted = trust(statistics.median(ratios), memory_runs)
    return replace(
        store_runs[0],
        epoch_seconds=summary(epoch_medians),
        epoch_cpu_seconds=summary([s.epoch_cpu_seconds["median"] for s in store_runs]),
        samples_per_second=store_runs[0].train_samples / statistics.median(epoch_medians),
        peak_rss_mb=max(s.peak_rss_mb for s in store_runs),
        memory_epoch_seconds=summary([m.epoch_seconds["median"] for m in memory_runs]),
        ratio_rounds=ratios,
        ratio_to_memory=statistics.median(ratios),
        memory_noise=noise,
        untrusted=untrusted,
    )


MIN_TIMED_EPOCHS = 3  # in-memory epochs timed across the rounds, below which no spread can be told


def trust(ratio: float, memory_runs: list[Training]) -> tuple[float, str | None]:
    """The in-memory epochs' spread, (max - min) / median over every timed epoch of every round, and
    why ``ratio`` cannot be told from 1.0 by this run: too few timed epochs, or a difference to
    memory smaller than that spread. A noisy run must not recommend a layout that "trains faster
    than memory"."""
    timed = sum(m.epoch_seconds["n"] for m in memory_runs)
    low = min(m.epoch_seconds["min"] for m in memory_runs)
    high = max(m.epoch_seconds["max"] for m in memory_runs)
    noise = (high - low) / statistics.median(m.epoch_seconds["median"] for m in memory_runs)
    if timed < MIN_TIMED_EPOCHS:
        return noise, (f"only {timed} in-memory epoch(s) timed: too few to tell; raise --epochs or --repeats")
    if abs(ratio - 1) <= noise:
        return noise, (
            f"within noise: the in-memory epochs spread {noise * 100:.0f} %, more than the "
            f"{abs(ratio - 1) * 100:.0f} % difference"
        )
    return noise, None


def measure_conversion_jobs(
    stores_dir: Path,
    source,
    *,
    formats: list[str],
    limit: int | None,
    repeats: int,
    progress: Callable[[str], None],
) -> dict[str, Any] | None:
    """Conversion wall time with each of ``JOBS`` (``convert --jobs``; the pool's start-up included),
    repetitions interleaved so that the drift of a shared machine hits every --jobs alike."""
    results = {}
    for fmt in [f for f in JOBS_FORMATS if f in formats]:
        times = {jobs: [] for jobs in JOBS}
        for _ in range(repeats):
            for jobs in JOBS:
                path = stores_dir / f"{fmt}-jobs{jobs}"
                remove_store(path)
                start = time.perf_counter()
                manifest = convert(path, format=fmt, source=source, limit=limit, jobs=jobs)
                times[jobs].append(time.perf_counter() - start)
        total = sum(split["count"] for split in manifest["splits"].values())
        results[fmt] = {
            "jobs": {
                str(jobs): {"seconds": summary(t), "samples_per_second": total / statistics.median(t)}
                for jobs, t in times.items()
            }
        }
        results[fmt]["speedup"] = statistics.median(times[JOBS[0]]) / statistics.median(times[JOBS[-1]])
        progress(
            f"{fmt}: converted with --jobs "
            + ", ".join(f"{jobs}: {total / statistics.median(t):,.0f} samples/s" for jobs, t in times.items())
        )
    return results or None


def measure_fit(
    rows: list[Row],
    memory: MemoryStore,
    stores_dir: Path,
    n: int,
    *,
    epochs: int,
    batch_size: int,
    model: str,
    seed: int,
    repeats: int,
    progress: Callable[[str], None],
) -> None:
    """``model.fit`` for memory and every store, last: once a process has made a tf.data generator
    dataset (Keras' PyDataset adapter does), TensorFlow 2.21 on Python 3.11 fixes glibc's mmap
    threshold at 128 KiB (``mallopt`` in ``ApplyPython311MemoryPatch``, against tensorflow#65675's
    memory growth), so every batch-sized array is a fresh mmap whose pages fault in. Measured earlier,
    it would tax every later read pass and ``train_on_batch`` run, which ``ooc train`` never pays. The
    chunk-order read pass is measured again after it: the loader CPU a ``--loop fit`` process pays."""
    progress("model.fit, last (its tf.data generator changes this process's allocator)")
    options = dict(epochs=epochs, batch_size=batch_size, model=model, seed=seed, loop="fit")
    memory_fit = rows[0].training_fit = measure_training(memory, **options)
    memory_fit.ratio_to_memory = 1.0
    progress(f"  memory: train with fit: {memory_fit.epoch_seconds['median']:.2f} s/epoch")
    for row in rows:
        if row.kind != "store":
            continue
        path = stores_dir / row.name
        fit = row.training_fit = measure_training(open_store(path), **options)
        fit.ratio_to_memory = fit.epoch_seconds["median"] / memory_fit.epoch_seconds["median"]
        store = open_store(path)
        read = measure_reads(
            lambda: _StoreReader(open_store(path)),
            n,
            files=path,
            chunk_size=store.shuffle_unit,
            batch_size=batch_size,
            repeats=repeats,
            progress=lambda line: None,
            modes=("chunk_warm",),
        )
        fit.loader_cpu_share = loader_cpu_share(read, n, row.training, rows[0].training)
        progress(
            f"  {row.name}: train with fit: {fit.epoch_seconds['median']:.2f} s/epoch "
            f"({fit.ratio_to_memory:.2f} x memory with fit), "
            f"loader CPU after fit {fit.loader_cpu_share * 100:.1f} %"
        )


def loader_cpu_share(
    read: dict[str, ReadPass], n: int, training: Training, memory_training: Training
) -> float:
    """CPU the loader spends on one training epoch's samples (chunk order, warm), as a share of the
    CPU of one in-memory training epoch."""
    per_sample = read["chunk_warm"].cpu_seconds["median"] / n
    return per_sample * training.train_samples / memory_training.epoch_cpu_seconds["median"]


# -- one run: prepare the stores, measure conversions and reads, then training, then write the reports ----


class _Phases:
    """Announces the run's phases: ``callback(index, total, name)``, index from 1, total + 1 at the end."""

    def __init__(self, total: int, callback: Callable[[int, int, str], None] | None):
        self.total, self.callback, self.started = total, callback, 0

    def start(self, name: str) -> None:
        self.started += 1
        if self.callback is not None:
            self.callback(self.started, self.total, name)

    def done(self) -> None:
        if self.callback is not None:
            self.callback(self.total + 1, self.total, "done")


@dataclass
class _Run:
    """What the steps of one ``run_bench`` share."""

    source: Any
    limit: int | None
    memory: MemoryStore
    stores_dir: Path
    batch_size: int
    repeats: int
    epochs: int
    model: str
    seed: int
    progress: Callable[[str], None]
    phases: _Phases

    @property
    def n(self) -> int:
        return self.memory.num_samples("train")

    @property
    def training_options(self) -> dict[str, Any]:
        return dict(epochs=self.epochs, batch_size=self.batch_size, model=self.model, seed=self.seed)

    def reads(self, open_reader: Callable[[], Any], *, files: Path | None, chunk_size: int | None):
        return measure_reads(
            open_reader,
            self.n,
            files=files,
            chunk_size=chunk_size,
            batch_size=self.batch_size,
            repeats=self.repeats,
            progress=self.progress,
        )


def run_bench(
    *,
    out: Path,
    stores_dir: Path = Path("data") / "bench",
    formats: list[str] | None = None,
    variants: bool = True,
    source: str | Path | None = None,
    source_options=None,
    limit: int | None = None,
    repeats: int = 3,
    batch_size: int = 512,
    epochs: int = 3,
    model: str = "lenet",
    seed: int = 0,
    tradeoff: bool = True,
    scale_repeat: int = 0,
    remote: bool = False,
    command: str = "",
    progress: Callable[[str], None] = print,
    phase: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Measure, then write report.json, report.md and the plots into ``out``; return the report
    (its ``results`` are ``Row`` objects). Stores are converted under ``stores_dir`` and kept there.

    ``progress(line)`` gets the findings as they come; ``phase(index, total, name)`` is called as
    each of the run's ``total`` phases starts (index from 1), and with ``total + 1`` at the end."""
    _check_options(
        repeats=repeats, epochs=epochs, batch_size=batch_size, limit=limit, scale_repeat=scale_repeat
    )
    _check_folders(out=out, stores_dir=stores_dir)
    targets = targets_for(formats or list(FORMATS), variants=variants)
    _check_remote(targets, remote=remote)
    src = as_source(source, options=source_options)
    out.mkdir(parents=True, exist_ok=True)
    memory = MemoryStore.from_source(src, limit=limit)
    phases = _Phases(
        2 + len(targets) + repeats + bool(tradeoff) + 2 + (scale_repeat > 1) + bool(remote), phase
    )
    run = _Run(src, limit, memory, stores_dir, batch_size, repeats, epochs, model, seed, progress, phases)

    rows = measure_baselines(run)
    for target in targets:
        rows += measure_target(run, target, recipe=not any(r.name == "recipe-loadtxt" for r in rows))
    measure_all_training(run, rows, tradeoff=tradeoff)
    report = {
        "ooc_bench_version": REPORT_VERSION,
        "command": command,
        "machine": machine_info(),
        "config": _config(run, tradeoff=tradeoff, scale_repeat=scale_repeat),
        "results": rows,
        **measure_beyond_the_rows(run, targets, scale_repeat=scale_repeat, remote=remote),
    }
    write_reports(report, out)
    phases.done()
    return report


def _check_remote(targets: list[Target], *, remote: bool) -> None:
    if remote and not any(t.name in FORMATS and get_format(t.name).OPTIONS.remote for t in targets):
        raise OptionError(
            "--remote measures the zarr and parquet stores from an S3 server: include zarr or parquet in "
            "--formats"
        )


def _check_options(
    *, repeats: int, epochs: int, batch_size: int, limit: int | None, scale_repeat: int
) -> None:
    for option, value in (
        ("--repeats", repeats),
        ("--epochs", epochs),
        ("--batch-size", batch_size),
        ("--limit", 1 if limit is None else limit),
    ):
        if value < 1:
            raise OptionError(f"{option} must be at least 1, got {value}")
    if scale_repeat < 0 or scale_repeat == 1:
        raise OptionError(f"--scale-repeat must be 0 (skip) or at least 2 copies, got {scale_repeat}")


def _check_folders(*, out: Path, stores_dir: Path) -> None:
    for option, folder in (("--out", Path(out)), ("--stores-dir", Path(stores_dir))):
        if folder.exists() and not folder.is_dir():
            raise OptionError(f"{option} {folder} is a file; pass a folder")


def _config(run: _Run, *, tradeoff: bool, scale_repeat: int) -> dict[str, Any]:
    schema = run.memory.schema
    return {
        "source": str(run.source.path),
        "limit": run.limit,
        "train_samples": run.n,
        "sample_shape": list(schema.sample_shape),
        "stored_dtype": schema.dtype.name,
        "read_dtype": schema.read_dtype.name,
        "repeats": run.repeats,
        "batch_size": run.batch_size,
        "epochs": run.epochs,
        "model": run.model,
        "seed": run.seed,
        "tradeoff": tradeoff,
        "scale_repeat": scale_repeat,
    }


def measure_baselines(run: _Run) -> list[Row]:
    """The numpy arrays in memory (read and trained) and a raw .npy memmap of them (read)."""
    memory, progress = run.memory, run.progress
    run.phases.start("baseline memory")
    progress(f"baseline memory: {run.n} train samples")
    rows = [
        Row(
            "memory",
            "baseline",
            "memory",
            {},
            read=run.reads(lambda: _StoreReader(memory), files=None, chunk_size=None),
            training=measure_training(memory, **run.training_options),
        )
    ]
    progress(f"  train: {rows[0].training.epoch_seconds['median']:.2f} s/epoch")

    npy = run.stores_dir / "npy-memmap" / "train_x.npy"
    npy.parent.mkdir(parents=True, exist_ok=True)
    np.save(npy, memory.arrays["train"][0])
    run.phases.start("baseline npy-memmap")
    progress("baseline npy-memmap")
    reader = lambda: MemmapReader(npy, memory.labels("train"), memory.schema)
    rows.append(Row("npy-memmap", "baseline", "npy", {}, read=run.reads(reader, files=npy, chunk_size=None)))
    return rows


def measure_target(run: _Run, target: Target, *, recipe: bool) -> list[Row]:
    """Convert one target and read it; on the csv layout, with ``recipe``, the recipe's loader too."""
    run.phases.start(f"{target.name}: converting, reading")
    run.progress(f"{target.name}: converting")
    path = run.stores_dir / target.name
    store, conversion = measure_conversion(run, target, path)
    read = run.reads(lambda: _StoreReader(open_store(path)), files=path, chunk_size=store.shuffle_unit)
    tf_data = None
    if target.format == "tfrecord":
        tf_data = measure_tf_data(path, batch_size=run.batch_size, repeats=run.repeats, progress=run.progress)
    rows = [
        Row(target.name, "store", target.format, store.options, read, conversion=conversion, tf_data=tf_data)
    ]
    if target.format == "csv" and recipe:
        run.progress("baseline recipe-loadtxt (on the csv store)")
        reader = lambda: RecipeReader(path, run.memory.sample_shape)
        rows.append(
            Row("recipe-loadtxt", "baseline", "csv", {}, read=run.reads(reader, files=path, chunk_size=None))
        )
    return rows


def measure_conversion(run: _Run, target: Target, path: Path) -> tuple[Store, Conversion]:
    """Convert ``repeats`` times (each into a fresh folder); the store and the conversion's numbers."""
    times = []
    for _ in range(run.repeats):
        remove_store(path)  # deleting the previous store is not part of converting
        start = time.perf_counter()
        convert(path, format=target.format, source=run.source, limit=run.limit, **target.options)
        times.append(time.perf_counter() - start)
    store = open_store(path)
    apparent, allocated = disk_usage(path)
    total = sum(store.num_samples(s) for s in store.splits)
    schema = run.memory.schema
    raw_bytes = int(np.prod(schema.sample_shape)) * schema.dtype.itemsize  # stored payload per sample
    conversion = Conversion(
        seconds=summary(times),
        samples_per_second=total / statistics.median(times),
        bytes=apparent,
        bytes_on_disk=allocated,
        bytes_per_sample=allocated / total,
        ratio_to_raw=allocated / (total * raw_bytes),
    )
    run.progress(
        f"  {allocated / total:,.0f} bytes/sample, {conversion.samples_per_second:,.0f} samples/s converted"
    )
    return store, conversion


def measure_all_training(run: _Run, rows: list[Row], *, tradeoff: bool) -> None:
    """Training through every store against in-memory training (interleaved rounds), then model.fit."""
    memory, n = run.memory, run.n
    measure_training_rounds(
        rows,
        memory,
        run.stores_dir,
        n,
        rounds=run.repeats,
        tradeoff=tradeoff,
        progress=run.progress,
        phase=run.phases.start,
        **run.training_options,
    )
    run.phases.start("model.fit")
    measure_fit(
        rows, memory, run.stores_dir, n, repeats=run.repeats, progress=run.progress, **run.training_options
    )
    reference = rows[0].training  # memory's own, against itself
    reference.ratio_to_memory = 1.0
    reference.loader_cpu_share = loader_cpu_share(rows[0].read, n, reference, reference)


def measure_beyond_the_rows(
    run: _Run, targets: list[Target], *, scale_repeat: int, remote: bool
) -> dict[str, Any]:
    """The report's entries besides ``results``: conversion with --jobs, memory at scale, S3 reads."""
    run.phases.start("conversion with --jobs")
    found = {
        "conversion_jobs": measure_conversion_jobs(
            run.stores_dir,
            run.source,
            formats=[t.format for t in targets],
            limit=run.limit,
            repeats=run.repeats,
            progress=run.progress,
        ),
        "scale": None,
    }
    if scale_repeat > 1:
        run.phases.start("memory at scale")
        found["scale"] = measure_scale(
            run.stores_dir,
            run.source,
            limit=run.limit,
            repeat=scale_repeat,
            batch_size=run.batch_size,
            model=run.model,
            seed=run.seed,
            progress=run.progress,
        )
    if remote:  # the default zarr and parquet stores, read from a local S3-compatible server next to the disk
        run.phases.start("stores on S3")
        found["remote"] = measure_remote_reads(
            {
                t.name: run.stores_dir / t.name
                for t in targets
                if t.name in FORMATS and get_format(t.name).OPTIONS.remote
            },
            batch_size=run.batch_size,
            repeats=run.repeats,
            progress=run.progress,
        )
    return found


def write_reports(report: dict[str, Any], out: Path) -> None:
    """report.json (the rows as dicts), the plots and report.md."""
    (out / "report.json").write_text(json.dumps(to_json(report), indent=2) + "\n")
    reports.write_plots(report, out)
    (out / "report.md").write_text(reports.write_markdown(report))


def machine_info() -> dict[str, Any]:
    import psutil

    versions = {}
    for module in ("numpy", "h5py", "zarr", "tensorflow", "keras", "pandas"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = None
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def measure_scale(
    stores_dir: Path,
    source,
    *,
    limit,
    repeat: int,
    batch_size: int,
    model: str,
    seed: int,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Peak memory of one training epoch on a Zarr store, and on one ``repeat`` times larger
    (``convert --repeat``), each in a fresh ``ooc train`` process so that nothing else counts."""
    import subprocess

    runs = {}
    for copies in (1, repeat):
        path = stores_dir / f"scale-zarr-x{copies}"
        progress(f"scale: converting zarr x{copies}")
        remove_store(path)
        convert(path, format="zarr", source=source, limit=limit, repeat=copies)
        report_path = path.with_name(path.name + "-train.json")
        progress(f"scale: training 1 epoch on {open_store(path).num_samples('train')} samples")
        options = {
            "--store": "zarr",
            "--path": path,
            "--epochs": 1,
            "--batch-size": batch_size,
            "--model": model,
        }
        options.update(
            {"--seed": seed, "--report": report_path, "--model-out": path.with_name(path.name + ".keras")}
        )
        cmd = [sys.executable, "-m", "ooc", "train", *(str(v) for item in options.items() for v in item)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        report = json.loads(report_path.read_text())
        runs[copies] = {
            "train_samples": report["store"]["train_samples"],
            "peak_rss_mb": report["peak_rss_mb"],
            "epoch_seconds": report["history"][0]["seconds"],
            "samples_per_second": report["history"][0]["samples_per_second"],
        }
        progress(f"  peak RSS {report['peak_rss_mb']:,.0f} MB")
    small, large = runs[1], runs[repeat]
    return {
        "repeat": repeat,
        "small": small,
        "large": large,
        "peak_rss_ratio": large["peak_rss_mb"] / small["peak_rss_mb"],
    }


# -- reading from object storage (``ooc bench --remote``) ----------------------------------------------

REMOTE_READ_MODES = ("chunk_warm", "global_warm")
REMOTE_BUCKET = "ooc-bench"


def measure_remote_reads(
    stores: dict[str, Path], *, batch_size: int, repeats: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Shuffled reads (chunk and global shuffle, warm) of each local zarr/parquet store, and of the
    same store uploaded to a local S3-compatible server over HTTP, measured back to back."""
    from ooc.benchmark.s3_server import LocalS3Server  # deferred: moto, only with --remote

    rows = []
    # explicit options, not the environment: the measurement never touches a real account
    with LocalS3Server(key="bench", secret="bench", option="--remote") as server:
        server.create_bucket(REMOTE_BUCKET)
        base = URL(f"s3://{REMOTE_BUCKET}", server.storage_options)
        for name, path in stores.items():
            url = base / name
            local = open_store(path)
            n = local.num_samples("train")
            progress(f"remote: uploading {name} to {server.endpoint}")
            base.fs.put(str(path), url.key, recursive=True)
            remote = open_store(url)  # checks the upload is a whole store
            apparent, _ = disk_usage(url)
            row = {"name": name, "format": local.format_name, "bytes": apparent, "train_samples": n}
            for where, store_path in (("local", path), ("remote", url)):
                reads = measure_reads(
                    lambda: _StoreReader(open_store(store_path)),
                    n,
                    files=None,
                    chunk_size=local.shuffle_unit,
                    batch_size=batch_size,
                    repeats=repeats,
                    progress=lambda line: None,
                )
                row[where] = {mode: to_json(reads[mode]) for mode in REMOTE_READ_MODES}
            progress(
                f"  {name}: shuffled warm samples/s, chunk / global: local "
                f"{row['local']['chunk_warm']['samples_per_second']:,.0f} / "
                f"{row['local']['global_warm']['samples_per_second']:,.0f}, S3 "
                f"{row['remote']['chunk_warm']['samples_per_second']:,.0f} / "
                f"{row['remote']['global_warm']['samples_per_second']:,.0f}"
            )
            remote.close()
            rows.append(row)
    return {"server": "moto standalone server (python -m moto.server) on 127.0.0.1, HTTP", "results": rows}


# -- out of core for real (``ooc bench --memory-limit``) -------------------------------------------


def run_out_of_core_bench(
    *,
    out: Path,
    memory_limit: int,
    stores_dir: Path = Path("data") / "bench",
    formats: list[str] | None = None,
    source: str | Path | None = None,
    source_options=None,
    limit: int | None = None,
    factor: float = 3.0,
    pass_seconds: float = 30.0,
    training: bool = True,
    batch_size: int = 512,
    model: str = "lenet",
    seed: int = 0,
    command: str = "",
    progress: Callable[[str], None] = print,
    cgroup_root: Path | None = None,
) -> dict[str, Any]:
    """Only the out-of-core measurement (``ooc.benchmark.out_of_core.measure_out_of_core``): writes
    out_of_core.json and out_of_core.md into ``out`` and returns the report (its rows ``OutOfCore``)."""

    if factor < 1:
        raise OptionError(
            f"--memory-limit-factor must be at least 1 (a store larger than the limit), got {factor}"
        )
    if pass_seconds <= 0:
        raise OptionError(f"--pass-seconds must be positive, got {pass_seconds}")
    _check_options(repeats=1, epochs=1, batch_size=batch_size, limit=limit, scale_repeat=0)
    _check_folders(out=out, stores_dir=stores_dir)
    src = as_source(source, options=source_options)
    out.mkdir(parents=True, exist_ok=True)
    Path(stores_dir).mkdir(parents=True, exist_ok=True)
    entry = measure_out_of_core(
        Path(stores_dir),
        src,
        memory_limit=memory_limit,
        factor=factor,
        formats=formats or list(out_of_core_formats()),
        limit=limit,
        batch_size=batch_size,
        model=model,
        seed=seed,
        seconds=pass_seconds,
        training=training,
        progress=progress,
        root=cgroup_root,
    )
    report = {
        "ooc_bench_version": REPORT_VERSION,
        "command": command,
        "machine": machine_info(),
        "source": str(src.path),
        "out_of_core": entry,
    }
    (out / "out_of_core.json").write_text(json.dumps(to_json(report), indent=2) + "\n")
    (out / "out_of_core.md").write_text(reports.out_of_core_markdown(report))
    return report
