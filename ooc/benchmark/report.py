"""Turning a bench report into Markdown and PNG plots: the dict ``run_bench`` returns, whose
``results`` are ``ooc.benchmark.run.Row`` objects (``load_report`` makes one from a report.json)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ooc.benchmark.rows import Row, Training
from ooc.core.units import human_bytes

READ_LABELS = {
    "sequential_warm": "sequential, warm",
    "global_warm": "global shuffle, warm",
    "chunk_warm": "chunk shuffle, warm",
    "sequential_cold": "sequential, cold",
    "global_cold": "global shuffle, cold",
    "chunk_cold": "chunk shuffle, cold",
}


def load_report(path: Path) -> dict[str, Any]:
    """A report.json as the report ``run_bench`` returned (its rows typed again)."""
    report = json.loads(Path(path).read_text())
    return {**report, "results": [Row.from_json(row) for row in report["results"]]}


def _fit_cells(fit: Training | None) -> str:
    if not fit:
        return "– | – | – |"
    share = f"{fit.loader_cpu_share * 100:.1f} %" if fit.loader_cpu_share is not None else "–"
    return f"{fit.epoch_seconds['median']:.2f} | {fit.ratio_to_memory:.2f} | {share} |"


def _rate(read: dict | None, mode: str) -> str:
    if not read or mode not in read:
        return "–"
    r = read[mode]
    n = r.samples_per_second * r.seconds["median"]
    return f"{r.samples_per_second:,.0f} ({n / r.seconds['max']:,.0f}–{n / r.seconds['min']:,.0f})"


def _ratio(training: Training) -> str:
    rounds = training.ratio_rounds
    text = f"{training.ratio_to_memory:.2f}" + (f" ({min(rounds):.2f}–{max(rounds):.2f})" if rounds else "")
    return text + (" ≈ memory†" if training.untrusted else "")


def write_markdown(report: dict[str, Any]) -> str:
    rows, cfg = report["results"], report["config"]
    sections = [
        _introduction(report),
        _conversion_section(rows, cfg),
        _read_section(rows, cfg),
        _training_section(rows, cfg),
        _tradeoff_section(rows),
        _tf_data_section(rows),
        _jobs_section(report.get("conversion_jobs"), report["machine"]),
        _scale_section(report.get("scale")),
        _remote_section(report.get("remote")),
        ["", "Plots: `read_throughput.png`, `size_on_disk.png`, `training_ratio.png`.", ""],
    ]
    return "\n".join(line for section in sections for line in section)


def _introduction(report: dict[str, Any]) -> list[str]:
    cfg, m = report["config"], report["machine"]
    return [
        "# ooc bench report",
        "",
        f"Command: `{report['command'] or 'ooc bench'}`",
        "",
        f"Machine: {m['cpus']} CPUs, {m['memory_gb']} GB RAM, Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
        + f" ({m['platform']}).",
        "",
        f"Data: {cfg['train_samples']} train samples of {cfg['source']}"
        + (f" (limit {cfg['limit']})" if cfg["limit"] else "")
        + f"; batch size {cfg['batch_size']}, model {cfg['model']}, seed {cfg['seed']}. "
        f"Timings are the median of {cfg['repeats']} repetitions (training: of epochs 2–{cfg['epochs']}), "
        "min–max in brackets.",
        "",
        "## Which layout should I use",
        "",
        recommendation(report),
    ]


def _conversion_section(rows: list[Row], cfg: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Size on disk and conversion",
        "",
        f"| target | options | bytes/sample on disk | ratio to raw {cfg['stored_dtype']} | conversion samples/s | "
        "conversion s (min–max) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if r.conversion:
            c, s = r.conversion, r.conversion.seconds
            opts = ", ".join(f"{k}={v}" for k, v in r.options.items() if v is not None)
            lines.append(
                f"| {r.name} | {opts} | {c.bytes_per_sample:,.0f} | {c.ratio_to_raw:.2f} | "
                f"{c.samples_per_second:,.0f} | {s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f}) |"
            )
    return lines


def _read_section(rows: list[Row], cfg: dict[str, Any]) -> list[str]:
    read_bytes = math.prod(cfg["sample_shape"]) * np.dtype(cfg["read_dtype"]).itemsize
    lines = [
        "",
        "## Reading the train split (samples/s, no prefetch)",
        "",
        "Global shuffle: a uniform permutation per epoch. Chunk shuffle: random chunks, samples shuffled "
        "within "
        "stretches of 8 chunks (what `ooc train` does by default). "
        f"MB/s of decoded {cfg['read_dtype']} payload = samples/s × {read_bytes} B / 1e6; "
        "cold passes evict the files with `posix_fadvise(POSIX_FADV_DONTNEED)` and reopen the store first.",
        "",
        "| target | "
        + " | ".join(READ_LABELS.values())
        + " | chunk warm MB/s | ratio to npy memmap (global warm / chunk warm) | peak RSS MB |",
        "| --- | " + " | ".join("---:" for _ in READ_LABELS) + " | ---: | ---: | ---: |",
    ]
    memmap = next((r for r in rows if r.name == "npy-memmap"), None)
    for r in rows:
        ratios = "–"
        if memmap:
            ratios = " / ".join(
                f"{r.read[m].samples_per_second / memmap.read[m].samples_per_second:.2f}"
                for m in ("global_warm", "chunk_warm")
            )
        peak = max(v.peak_rss_mb for v in r.read.values())
        lines.append(
            f"| {r.name} | "
            + " | ".join(_rate(r.read, mode) for mode in READ_LABELS)
            + f" | {r.read['chunk_warm'].mb_per_second:,.0f} | {ratios} | {peak:,.0f} |"
        )
    return lines


def _training_section(rows: list[Row], cfg: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Training with the shared loop (train_on_batch, chunk shuffle, prefetch 2)",
        "",
        f"Training runs in {cfg['repeats']} interleaved rounds: each round takes the stores in turn (rotated "
        "from round to round) and trains in-memory, then the store with a warm cache, then with its files "
        "evicted from the page cache before every epoch (cold). "
        "A store's ratio is the median over the rounds of its epoch time divided by that of the in-memory run "
        "just before it (min–max of the rounds in brackets); "
        "its epoch s is the median of the rounds' epoch times. Loader CPU: CPU seconds of a read-only pass "
        "over one epoch's samples (chunk order, warm cache) as a share of the "
        "CPU seconds of one in-memory training epoch. The `model.fit` runs come last, after every other "
        "measurement: "
        "TensorFlow's generator dataset (behind Keras' PyDataset adapter) fixes glibc's mmap threshold at 128 "
        "KiB for the rest of the "
        "process, so every batch-sized array is a fresh mmap; loader CPU after fit is the same read pass "
        "measured then.",
        "",
        "| target | epoch s (min–max) | ratio to in-memory | cold-cache ratio | samples/s | epoch CPU s | "
        "loader CPU | test accuracy | peak RSS MB | model.fit epoch s | fit ratio to in-memory fit | loader "
        "CPU after fit |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        t = r.training
        if t:
            e = t.epoch_seconds
            cold = _ratio(r.training_cold) if r.training_cold else "–"
            lines.append(
                f"| {r.name} | {e['median']:.2f} ({e['min']:.2f}–{e['max']:.2f}) | {_ratio(t)} | {cold} | "
                f"{t.samples_per_second:,.0f} | {t.epoch_cpu_seconds['median']:.2f} | "
                f"{t.loader_cpu_share * 100:.1f} % | "
                f"{t.test_accuracy * 100:.2f} % | {t.peak_rss_mb:,.0f} | " + _fit_cells(r.training_fit)
            )
    notes = {t.untrusted for r in rows for t in (r.training, r.training_cold) if t and t.untrusted}
    lines += (
        ["", *(f"† not told from memory by this run: {note}." for note in sorted(notes))] if notes else []
    )
    return lines


def _tradeoff_section(rows: list[Row]) -> list[str]:
    traded = [r for r in rows if r.training_global_shuffle]
    if not traded:
        return []
    lines = [
        "",
        "## Trade-offs: chunk size × compression × shuffle",
        "",
        "| target | chunk size | compression | bytes/sample | shuffle | read samples/s (warm) | loader "
        "CPU s/epoch | epoch ratio to in-memory | test accuracy |",
        "| --- | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in traded:
        for mode, t in (("chunk", r.training), ("global", r.training_global_shuffle)):
            read = r.read[f"{mode}_warm"]
            cpu = (
                read.cpu_seconds["median"]
                * t.train_samples
                / (read.samples_per_second * read.seconds["median"])
            )
            lines.append(
                f"| {r.name} | {r.options.get('chunk_size') or '–'} | "
                f"{r.options.get('compression')} | "
                f"{r.conversion.bytes_per_sample:,.0f} | {mode} | {read.samples_per_second:,.0f} "
                f"| {cpu:.2f} | "
                f"{t.ratio_to_memory:.2f} | {t.test_accuracy * 100:.2f} % |"
            )
    return lines


def _tf_data_section(rows: list[Row]) -> list[str]:
    streamed = [r for r in rows if r.tf_data]
    if not streamed:
        return []
    lines = [
        "",
        "## TFRecord through tf.data (interleaved shards, parallel parsing, shuffle buffer of 10,000 "
        "records)",
        "",
        "Not the exact shuffles of the table above: tf.data's own order. What a tf.data pipeline gets "
        "from the same files.",
        "",
        "| target | warm samples/s | cold samples/s | ooc reader, global shuffle, warm |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in streamed:
        lines.append(
            f"| {r.name} | {r.tf_data['warm']['samples_per_second']:,.0f} | "
            f"{r.tf_data['cold']['samples_per_second']:,.0f} | "
            f"{r.read['global_warm'].samples_per_second:,.0f} |"
        )
    return lines


def _jobs_section(jobs: dict[str, Any] | None, machine: dict[str, Any]) -> list[str]:
    if not jobs:
        return []
    lines = [
        "",
        "## Conversion speed against --jobs",
        "",
        f"`ooc convert --jobs N` with default options ({machine['cpus']} CPUs); the wall time includes starting "
        "the worker processes. "
        "The files are the same, byte for byte, whatever N.",
        "",
        "| layout | --jobs | conversion s (min–max) | samples/s | speed-up over --jobs 1 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for fmt, result in jobs.items():
        first = next(iter(result["jobs"].values()))
        for n, run in result["jobs"].items():
            s = run["seconds"]
            lines.append(
                f"| {fmt} | {n} | {s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f}) | "
                f"{run['samples_per_second']:,.0f} | "
                f"{run['samples_per_second'] / first['samples_per_second']:.2f} |"
            )
    return lines


def _scale_section(scale: dict[str, Any] | None) -> list[str]:
    if not scale:
        return []
    lines = [
        "",
        "## Memory at scale (one training epoch on Zarr, each in a fresh process)",
        "",
        "| train samples | peak RSS MB | epoch s | samples/s |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for run in (scale["small"], scale["large"]):
        lines.append(
            f"| {run['train_samples']:,} | {run['peak_rss_mb']:,.0f} | {run['epoch_seconds']:.1f} | "
            f"{run['samples_per_second']:,.0f} |"
        )
    return lines + [
        "",
        f"{scale['repeat']}× the samples ({scale['repeat']} copies, `ooc convert --repeat "
        f"{scale['repeat']}`): "
        f"peak memory × {scale['peak_rss_ratio']:.3f}.",
    ]


def _remote_section(remote: dict[str, Any] | None) -> list[str]:
    if not remote:
        return []
    lines = [
        "",
        "## Object storage (S3 API over HTTP, local server)",
        "",
        f"The default stores uploaded to {remote['server']}, read through fsspec/s3fs (zarr: "
        "its async "
        "FsspecStore, a batch's missing chunks fetched concurrently; parquet: a batch's missing row "
        "groups fetched "
        "concurrently, then decoded by pyarrow), against the same store on the local disk, measured back "
        "to back (warm, no prefetch). "
        "A local server measures the request overhead, not a network's latency.",
        "",
        "| target | bytes | local chunk / global samples/s | S3 chunk / global samples/s | S3 / local "
        "(chunk / global) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in remote["results"]:
        local, there = (
            tuple(r[w][m]["samples_per_second"] for m in ("chunk_warm", "global_warm"))
            for w in ("local", "remote")
        )
        lines.append(
            f"| {r['name']} | {r['bytes']:,} | {local[0]:,.0f} / {local[1]:,.0f} | {there[0]:,.0f} / "
            f"{there[1]:,.0f} | "
            f"{there[0] / local[0]:.2f} / {there[1] / local[1]:.2f} |"
        )
    return lines


def summary_table(report: dict[str, Any]) -> str:
    """The headline table `ooc bench` prints: one row a target."""
    lines = [
        "| target | bytes/sample | shuffled warm samples/s (chunk / global) | shuffled cold samples/s (chunk "
        "/ global) | training ratio to in-memory (chunk / global) | cold-cache training ratio | loader CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["results"]:
        read, t, g = r.read, r.training, r.training_global_shuffle
        size = f"{r.conversion.bytes_per_sample:,.0f}" if r.conversion else "–"
        warm = f"{read['chunk_warm'].samples_per_second:,.0f} / {read['global_warm'].samples_per_second:,.0f}"
        cold = (
            f"{read['chunk_cold'].samples_per_second:,.0f} / {read['global_cold'].samples_per_second:,.0f}"
            if "chunk_cold" in read
            else "–"
        )
        ratio = (f"{t.ratio_to_memory:.2f}" + (f" / {g.ratio_to_memory:.2f}" if g else "")) if t else "–"
        cpu = f"{t.loader_cpu_share * 100:.1f} %" if t else "–"
        cold_ratio = f"{r.training_cold.ratio_to_memory:.2f}" if r.training_cold else "–"
        lines.append(f"| {r.name} | {size} | {warm} | {cold} | {ratio} | {cold_ratio} | {cpu} |")
    return "\n".join(lines)


def recommendation(report: dict[str, Any]) -> str:
    """A few sentences chosen by the numbers of this run, not written in advance."""
    stores = [r for r in report["results"] if r.kind == "store"]
    if not stores:
        return "No store was measured."
    fastest = min(stores, key=lambda r: r.training.ratio_to_memory)
    if all(r.training.untrusted for r in stores):
        smallest = min(stores, key=lambda r: r.conversion.bytes_per_sample)
        return (
            f"This run cannot rank the layouts by training speed ({fastest.training.untrusted}): train "
            "longer before choosing by speed. For disk space pick "
            f"**{smallest.name}** ({smallest.conversion.bytes_per_sample:,.0f} bytes per sample)."
        )
    text = [
        f"For training speed pick **{fastest.name}**: its epochs took {fastest.training.ratio_to_memory:.2f}× "
        "the in-memory time "
        f"({fastest.training.epoch_seconds['median']:.2f} s against "
        f"{fastest.training.epoch_seconds['median'] / fastest.training.ratio_to_memory:.2f} s)."
    ]
    text += _size_and_cache_advice(stores, fastest)
    recipe = next((r for r in report["results"] if r.name == "recipe-loadtxt"), None)
    csv = next((r for r in stores if r.format == "csv"), None)
    if recipe and csv:
        gain = csv.read["global_warm"].samples_per_second / recipe.read["global_warm"].samples_per_second
        text.append(
            f"On the same CSV files ooc's reader runs at {gain:.2f}× the classic recipe's np.loadtxt loader "
            "(shuffled, warm)."
        )
    text += _shuffle_advice(stores)
    return " ".join(text)


def _size_and_cache_advice(stores: list[Row], fastest: Row) -> list[str]:
    smallest = min(stores, key=lambda r: r.conversion.bytes_per_sample)
    cold = max(stores, key=lambda r: r.read["chunk_cold"].samples_per_second)
    text = []
    if smallest is not fastest:
        st, sc = smallest.training, smallest.conversion
        text.append(
            f"For disk space pick **{smallest.name}**: {sc.bytes_per_sample:,.0f} bytes per sample "
            f"({sc.ratio_to_raw:.2f}× the raw payload) against "
            f"{fastest.conversion.bytes_per_sample:,.0f}, "
            f"at {st.ratio_to_memory:.2f}× the in-memory epoch time."
        )
    else:
        text.append(
            f"It is also the smallest on disk ({smallest.conversion.bytes_per_sample:,.0f} bytes per sample)."
        )
    if cold is not fastest:
        text.append(
            f"When the data will not stay in the page cache, **{cold.name}** reads shuffled batches "
            "fastest from a cold cache "
            f"({cold.read['chunk_cold'].samples_per_second:,.0f} samples/s with the chunk shuffle)."
        )
    slowest = max(stores, key=lambda r: r.training.ratio_to_memory)
    if slowest.training.ratio_to_memory > max(1.1, 1.1 * fastest.training.ratio_to_memory):
        text.append(
            f"Avoid **{slowest.name}** for training: {slowest.training.ratio_to_memory:.2f}× the "
            "in-memory epoch time."
        )
    return text


def _shuffle_advice(stores: list[Row]) -> list[str]:
    traded = [r for r in stores if r.training_global_shuffle and r.options.get("chunk_size")]
    if not traded:
        return []
    loss = max(r.training_global_shuffle.test_accuracy - r.training.test_accuracy for r in traded)
    speed = min(r.training_global_shuffle.ratio_to_memory / r.training.ratio_to_memory for r in traded)
    cost = (
        f"losing at most {loss * 100:.2f} points of test accuracy"
        if loss > 0
        else f"with no loss of test accuracy (at worst {-loss * 100:.2f} points above the global shuffle)"
    )
    return [
        f"On the chunked stores the chunk shuffle made epochs at least {speed:.2f}× faster than the exact "
        "global "
        f"shuffle, {cost}."
    ]


def write_plots(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    names = [r.name for r in rows]
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.13
    for i, mode in enumerate(READ_LABELS):
        values = [r.read[mode].samples_per_second if mode in r.read else 0 for r in rows]
        ax.bar(np.arange(len(rows)) + (i - 2.5) * width, values, width, label=READ_LABELS[mode])
    ax.set_xticks(np.arange(len(rows)), names, rotation=30, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("samples/s (log)")
    ax.set_title("Reading the train split")
    ax.legend(fontsize=8, ncols=2)
    fig.tight_layout()
    fig.savefig(out / "read_throughput.png", dpi=100)
    plt.close(fig)

    stores = [r for r in rows if r.conversion]
    _bars(
        plt,
        [r.name for r in stores],
        [r.conversion.bytes_per_sample for r in stores],
        reference=(
            stores[0].conversion.bytes_per_sample / stores[0].conversion.ratio_to_raw,
            "raw payload",
        )
        if stores
        else None,
        ylabel="bytes per sample on disk",
        title="Size on disk",
        path=out / "size_on_disk.png",
    )
    trained = [r for r in rows if r.training]
    _bars(
        plt,
        [r.name for r in trained],
        [r.training.ratio_to_memory for r in trained],
        reference=(1.0, "in-memory"),
        ylabel="epoch time / in-memory epoch time",
        title="Training through the store",
        path=out / "training_ratio.png",
    )


def _bars(plt, names, values, *, reference, ylabel, title, path):
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(names, values)
    ax.axhline(reference[0], color="black", linestyle="--", label=reference[1])
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- out of core for real (``ooc bench --memory-limit``: out_of_core.md) ---------------------------


def out_of_core_markdown(report: dict[str, Any]) -> str:
    """out_of_core.md: the out-of-core table, then the shuffle-quality and stretch × cache tables."""
    m = report["machine"]
    lines = [
        "# ooc bench: out of core for real",
        "",
        f"Command: `{report['command'] or 'ooc bench --memory-limit'}`",
        "",
        f"Machine: {m['cpus']} CPUs, {m['memory_gb']} GB RAM, Python {m['python']} ({m['platform']}). "
        f"Source: {report['source']}.",
    ]
    return "\n".join(lines + out_of_core_section(report["out_of_core"])) + "\n"


def out_of_core_section(entry: dict[str, Any] | None) -> list[str]:
    if not entry:
        return []
    limit = entry["memory_limit"]
    lines = ["", f"## Out of core: reads under a {human_bytes(limit)} memory limit", ""]
    if entry.get("skipped"):
        return lines + [f"Skipped: no memory cgroup could be made ({entry['skipped']})."]
    lines += [
        f"Each layout's store holds at least {entry['factor']:g} × the limit of train samples (stored bytes: "
        "zarr's compressed ones; `convert --repeat` copies of the source). Its passes run in a child process "
        f"placed in a memory cgroup (v{entry.get('cgroup', '?')}) of that limit, each after the store is "
        f"evicted from the page cache, for at most {entry['pass_seconds']:g} s, batches of "
        f"{entry['batch_size']}, no prefetch. Disk MB/s: a sequential `O_DIRECT` read of the same files in the "
        "same process. MB/s stored: chunk-shuffle samples/s × stored bytes per sample; share: of the disk's "
        "MB/s. Read-ahead gain: the chunk shuffle with `Store.will_need` hints a stretch ahead (what "
        "`ooc.batches` does) over the same without. Training ratio: seconds per sample of `train_on_batch` "
        "from the store (chunk shuffle, prefetch 2, cold) over those from in-memory arrays of a subset, same "
        "model and batch size, in another child under the same limit. Peak: the cgroup's counter (anonymous "
        "memory and page cache charged to it) and the reading process's own peak RSS.",
        "",
        "| layout | store / limit | train samples | reads/s (chunk shuffle) | MB/s stored | disk MB/s | "
        "share of disk | without read-ahead | read-ahead gain | global shuffle reads/s | global / chunk | "
        "training ratio | peak MB (cgroup) | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in entry["rows"]:
        disk = f"{r.disk_mb_per_second:,.0f}" if r.disk_mb_per_second else "– (no O_DIRECT)"
        share = f"{r.disk_share:.2f}" if r.disk_share is not None else "–"
        training = f"{r.training_ratio:.2f}" if r.training_ratio is not None else (r.training_note or "–")
        peak = f"{r.peak_memory_mb:,.0f}" if r.peak_memory_mb else "–"
        lines.append(
            f"| {r.name} | {r.store_bytes / limit:.1f} ({r.copies} copies) | {r.train_samples:,} | "
            f"{r.samples_per_second:,.0f} | {r.mb_per_second:,.0f} | {disk} | {share} | "
            f"{r.samples_per_second_no_read_ahead:,.0f} | {r.read_ahead_gain:.2f} | "
            f"{r.global_samples_per_second:,.0f} | {r.global_to_chunk:.3f} | {training} | {peak} | "
            f"{r.peak_rss_mb:,.0f} |"
        )
    return lines + _quality_section(entry.get("quality"))


def _tv(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _quality_section(quality: dict[str, Any] | None) -> list[str]:
    if not quality:
        return []
    expected = quality["expected_global_tv"]
    lines = [
        "",
        "## Shuffle quality: how well each mode mixes",
        "",
        f"On the source's {quality['labels']:,} train labels with chunks of {quality['chunk_size']} "
        "(`ooc.benchmark.shuffle_quality`, from the batch plan alone), in the stored order and class-sorted "
        "(the labels sorted: a dataset stored class by class). TV: mean total-variation distance between a "
        "batch's label distribution and the split's"
        + (f" (the exact global shuffle's expectation, in closed form: {expected:.3f})" if expected else "")
        + ". Chunks/batch: distinct chunks a batch draws from; samples/chunk: the most samples of a batch "
        f"from one chunk. Reads/s: out of core on {quality['layout']} (the table above's passes; the order "
        "of the labels does not change it). Cache: decoded chunks kept.",
        "",
        "| mode | order | TV distance | chunks / batch | samples / chunk | reads/s | cache MB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for q in quality["modes"]:
        lines.append(
            f"| {q['mode']} | {q['order']} | {_tv(q['tv_distance'])} | {_tv(q['chunks_per_batch'])} | "
            f"{_tv(q['samples_per_chunk'])} | {q['samples_per_second']:,.0f} | {q['cache_mb']:,.1f} |"
        )
    if quality["tradeoff"]:
        lines += [
            "",
            "### Chunk shuffle: stretch × cache",
            "",
            "Chunks per stretch (`epoch_batches(stretch_chunks=)`, default 8) with a cache of twice as many "
            "(`ChunkedStore.cache_chunks`, default 16), the reads out of core as above.",
            "",
            "| chunks / stretch | chunks cached | cache MB | TV stored | TV class-sorted | chunks / batch | "
            "samples / chunk | reads/s |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for t in quality["tradeoff"]:
            s, c = t["stored"], t["class-sorted"]
            lines.append(
                f"| {t['stretch_chunks']} | {t['cache_chunks']} | {t['cache_mb']:,.1f} | {_tv(s['tv_distance'])} | "
                f"{_tv(c['tv_distance'])} | {_tv(s['chunks_per_batch'])} | {_tv(s['samples_per_chunk'])} | "
                f"{t['samples_per_second']:,.0f} |"
            )
    return lines
