"""ooc bench on a small --limit run: the report's structure, every number present and positive.
Timings themselves are never asserted."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys

import pytest

from ooc.benchmark.report import load_report, write_markdown
from ooc.benchmark.run import READ_MODES, VARIANTS, targets_for
from ooc.formats import FORMATS

from conftest import MNIST


def _positive_numbers(obj, where=""):
    if isinstance(obj, str):
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _positive_numbers(value, f"{where}.{key}")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield where, obj


# csv brings the recipe baseline, zarr the chunk and compression variants, tfrecord the tf.data pass;
# every other layout is measured by the same code (test_every_layout_is_a_target)
MEASURED = ("csv", "zarr", "tfrecord")


def test_every_layout_is_a_target():
    names = [t.name for t in targets_for(list(FORMATS), variants=True)]
    assert [name for name in names if name in FORMATS] == list(FORMATS)  # a new layout is measured by itself
    assert {"hdf5-gzip", "zarr-none", "zarr-chunk256", "tfrecord-gzip"} <= set(names)
    assert [t.name for t in targets_for(list(FORMATS), variants=False)] == list(FORMATS)


def test_bench_report(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ooc",
            "bench",
            "--source",
            str(MNIST),
            "--limit",
            "300",
            "--repeats",
            "2",
            "--epochs",
            "2",
            "--batch-size",
            "64",
            "--scale-repeat",
            "3",
            "--out",
            "results",
            "--formats",
            ",".join(MEASURED),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    out = tmp_path / "results"
    report = json.loads((out / "report.json").read_text())
    assert report["ooc_bench_version"] == 1
    assert report["command"].startswith("ooc bench --source")
    assert report["config"]["train_samples"] == 300 and report["config"]["repeats"] == 2
    assert set(report["machine"]) == {"cpus", "memory_gb", "python", "platform", "versions"}

    expected = ["memory", "npy-memmap"]
    for fmt in MEASURED:
        for opts in VARIANTS.get(fmt, [{}]):
            expected.append(
                fmt + "".join(f"-chunk{v}" if k == "chunk_size" else f"-{v}" for k, v in opts.items())
            )
            if fmt == "csv" and not opts:
                expected.append("recipe-loadtxt")
    assert [r["name"] for r in report["results"]] == expected

    for row in report["results"]:
        modes = READ_MODES if row["name"] != "memory" else ("sequential_warm", "global_warm", "chunk_warm")
        assert tuple(row["read"]) == modes, row["name"]
        for mode in modes:
            assert set(row["read"][mode]) == {
                "seconds",
                "cpu_seconds",
                "samples_per_second",
                "mb_per_second",
                "peak_rss_mb",
            }
            assert row["read"][mode]["seconds"]["n"] == 2
        if row["kind"] == "store":
            assert set(row["conversion"]) == {
                "seconds",
                "samples_per_second",
                "bytes",
                "bytes_on_disk",
                "bytes_per_sample",
                "ratio_to_raw",
            }
        if row["kind"] == "store" or row["name"] == "memory":
            fields = {
                "shuffle",
                "loop",
                "cold",
                "epoch_seconds",
                "epoch_cpu_seconds",
                "first_epoch_seconds",
                "train_samples",
                "samples_per_second",
                "test_accuracy",
                "peak_rss_mb",
                "ratio_to_memory",
                "loader_cpu_share",
            }
            rounds = (
                {"memory_epoch_seconds", "ratio_rounds", "memory_noise", "untrusted"}
                if row["kind"] == "store"
                else set()
            )
            assert set(row["training"]) == fields | rounds
            if rounds:  # one ratio per interleaved round, against that round's memory run
                assert (
                    len(row["training"]["ratio_rounds"]) == 2
                    and row["training"]["memory_epoch_seconds"]["n"] == 2
                )
                assert row["training"]["ratio_to_memory"] == statistics.median(
                    row["training"]["ratio_rounds"]
                )
                # 2 rounds of 2 epochs, the first untimed: too few in-memory epochs to rank anything
                assert row["training"]["untrusted"] == (
                    "only 2 in-memory epoch(s) timed: too few to tell; raise --epochs or --repeats"
                )
            assert row["training"]["shuffle"] == "chunk"
            # a store's fit run carries the loader CPU measured after it (TensorFlow then pins glibc's mmap threshold)
            assert set(row["training_fit"]) == fields - (
                {"loader_cpu_share"} if row["name"] == "memory" else set()
            )
            assert row["training_fit"]["loop"] == "fit"
        if row["kind"] == "store":
            assert (
                set(row["training_cold"]) == fields - {"loader_cpu_share"} | rounds
                and row["training_cold"]["cold"] is True
            )
            assert set(row["training_global_shuffle"]) == fields - {"loader_cpu_share"}
            assert row["training_global_shuffle"]["shuffle"] == "global"
        else:
            assert row["training_global_shuffle"] is None
        if row.get("format") == "tfrecord":
            assert set(row["tf_data"]) == {"warm", "cold"} and row["tf_data"]["cold"]["seconds"]["n"] == 2
        else:
            assert row.get("tf_data") is None
        numbers = list(_positive_numbers(row))
        assert numbers and all(math.isfinite(v) and v > 0 for _, v in numbers), [
            n for n in numbers if not n[1] > 0
        ]

    jobs = report["conversion_jobs"]  # csv and zarr, converted with --jobs 1 and 2
    assert list(jobs) == ["csv", "zarr"]
    for result in jobs.values():
        assert list(result["jobs"]) == ["1", "2"] and result["speedup"] > 0
        for run in result["jobs"].values():
            assert run["seconds"]["n"] == 2 and run["seconds"]["min"] > 0 and run["samples_per_second"] > 0

    scale = report["scale"]
    assert (
        scale["repeat"] == 3
        and scale["small"]["train_samples"] == 270
        and scale["large"]["train_samples"] == 810
    )
    assert (
        all(v > 0 for run in (scale["small"], scale["large"]) for v in run.values())
        and scale["peak_rss_ratio"] > 0
    )

    markdown = (out / "report.md").read_text()
    for heading in (
        "## Which layout should I use",
        "## Size on disk and conversion",
        "## Reading the train split",
        "## Training with the shared loop",
        "## Trade-offs: chunk size × compression × shuffle",
        "## Memory at scale",
        "## TFRecord through tf.data",
        "## Conversion speed against --jobs",
    ):
        assert heading in markdown
    assert report["command"] in markdown
    assert "This run cannot rank the layouts by training speed (only 2 in-memory epoch(s) timed" in markdown
    assert "≈ memory†" in markdown and "† not told from memory by this run: only 2" in markdown
    assert write_markdown(load_report(out / "report.json")) == markdown  # report.json holds every typed field
    for plot in ("read_throughput.png", "size_on_disk.png", "training_ratio.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| target | bytes/sample | shuffled warm samples/s (chunk / global) |" in done.stdout
    # every model.fit comes after every other read and training run: fit's generator dataset makes
    # TensorFlow pin glibc's mmap threshold for the rest of the process
    lines = done.stderr.splitlines()
    first_fit = next(i for i, line in enumerate(lines) if "with fit" in line)
    assert lines[first_fit - 1].startswith("model.fit, last") and not any(
        "read " in line or "train (" in line for line in lines[first_fit:]
    )
    assert (tmp_path / "data" / "bench" / "zarr" / "ooc.json").is_file()


def test_bench_refuses_unknown_formats(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "ooc", "bench", "--formats", "zarr,tiff"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert done.stderr == f"ooc: error: unknown format 'tiff': choose one of {', '.join(FORMATS)}\n"
    assert not (tmp_path / "bench").exists()


def _memory_run(*epochs: float):
    from ooc.benchmark.rows import Training, summary

    return Training(
        shuffle="chunk",
        loop="train_on_batch",
        cold=False,
        epoch_seconds=summary(list(epochs)),
        epoch_cpu_seconds=summary(list(epochs)),
        first_epoch_seconds=epochs[0],
        train_samples=100,
        samples_per_second=100 / statistics.median(epochs),
        test_accuracy=0.5,
        peak_rss_mb=1.0,
    )


def test_a_ratio_within_the_memory_epochs_spread_is_not_a_ranking():
    from ooc.benchmark.run import trust

    runs = [_memory_run(1.0, 1.1), _memory_run(0.95, 1.05)]  # spread (1.1 - 0.95) / 1.025 = 14.6 %
    noise, why = trust(0.9, runs)
    assert noise == pytest.approx(0.15 / 1.025)
    assert why == "within noise: the in-memory epochs spread 15 %, more than the 10 % difference"
    assert trust(1.2, runs)[1] is None
    assert trust(1.5, [_memory_run(1.0, 1.0)])[1] == (
        "only 2 in-memory epoch(s) timed: too few to tell; raise --epochs or --repeats"
    )
