"""Parallel conversion (issue 8): `--jobs N` and `--dask ADDRESS` write the same bytes as one process,
refuse the single-file layouts, and resume like any conversion."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time

import pytest

import ooc
from ooc.errors import ConversionInterrupted, OptionError
from ooc.formats import FORMATS, get_format
from ooc.formats.base import ParallelParts
from ooc.manifest import MANIFEST_NAME, PARTIAL_NAME
from ooc.verify import verify

from conftest import CHUNK, LIMIT, MNIST

converting = importlib.import_module("ooc.convert")  # the module: `ooc.convert` is the function
PARALLEL = [fmt for fmt in FORMATS if issubclass(get_format(fmt).Writer, ParallelParts)]


def sizes(fmt):
    options = get_format(fmt).OPTIONS
    return {
        "chunk_size": None if options.default_chunk_size is None else CHUNK,
        "shard_size": None if options.default_shard_size is None else CHUNK,
    }


def contents(path):
    """Every file's bytes, the manifest but what differs per conversion: its timing, its generation (and
    so its own checksum)."""
    files = {
        p.relative_to(path).as_posix(): p.read_bytes()
        for p in path.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME
    }
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    for key in ("conversion_seconds", "generation", "manifest_crc32"):
        manifest.pop(key)
    return files, manifest


@pytest.fixture
def small_units(monkeypatch):
    # 128-sample units: 3 a split of 300, so that tasks run side by side (the workers are handed the
    # unit size; they do not see this patch)
    monkeypatch.setattr(converting, "READ_CHUNK_SAMPLES", 2 * CHUNK)


def test_every_layout_parallelises_or_says_why_not():
    for fmt in FORMATS:
        writer = get_format(fmt).Writer
        assert issubclass(writer, ParallelParts) or writer.one_process_because, fmt
    assert PARALLEL  # the suite below runs on some layout


@pytest.mark.parametrize("fmt", PARALLEL)
def test_jobs_2_writes_the_same_files_as_jobs_1(fmt, tmp_path, small_units):
    ooc.convert(tmp_path / "one", format=fmt, source=MNIST, limit=LIMIT, **sizes(fmt))
    ooc.convert(tmp_path / "two", format=fmt, source=MNIST, limit=LIMIT, jobs=2, **sizes(fmt))
    one, two = contents(tmp_path / "one"), contents(tmp_path / "two")
    assert sorted(two[0]) == sorted(one[0])
    assert two == one
    assert verify(tmp_path / "two").ok


def test_jobs_with_repeat_shift_the_copies_alike(tmp_path, small_units):
    """--repeat's shifts depend on where a sample is, not on which process reads it."""
    ooc.convert(tmp_path / "one", format="zarr", source=MNIST, limit=LIMIT, chunk_size=CHUNK, repeat=2)
    ooc.convert(
        tmp_path / "two", format="zarr", source=MNIST, limit=LIMIT, chunk_size=CHUNK, repeat=2, jobs=2
    )
    assert contents(tmp_path / "two") == contents(tmp_path / "one")


def test_dask_cluster_writes_the_same_files_as_jobs_1(tmp_path, small_units):
    from distributed import LocalCluster

    ooc.convert(tmp_path / "one", format="zarr", source=MNIST, limit=LIMIT, chunk_size=CHUNK)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        manifest = ooc.convert(
            tmp_path / "dask",
            format="zarr",
            source=MNIST,
            limit=LIMIT,
            chunk_size=CHUNK,
            dask=cluster.scheduler_address,
        )
    assert manifest["splits"] == {"train": {"count": LIMIT}, "test": {"count": LIMIT}}
    assert contents(tmp_path / "dask") == contents(tmp_path / "one")


@pytest.mark.parametrize(
    "fmt,why",
    [
        ("hdf5", "one file, data.h5, which only one process can write without MPI"),
        ("parquet", "one file per split, which only one process can write"),
    ],
)
def test_single_file_layouts_refuse_parallel_writers(fmt, why, tmp_path):
    out = tmp_path / "s"
    with pytest.raises(OptionError) as caught:
        ooc.convert(out, format=fmt, source=MNIST, limit=LIMIT, jobs=2)
    assert (
        str(caught.value)
        == f"--jobs 2: {fmt} cannot be written in parallel: it is {why}; convert it with one process: --jobs "
        "1 (the default)"
    )
    with pytest.raises(OptionError) as caught:
        ooc.convert(out, format=fmt, source=MNIST, limit=LIMIT, dask="tcp://127.0.0.1:8786")
    assert (
        str(caught.value)
        == f"--dask tcp://127.0.0.1:8786: {fmt} cannot be written in parallel: it is {why}; convert it with "
        "one process: without --dask"
    )
    assert not out.exists()


def test_bad_jobs_are_refused(tmp_path):
    for jobs in (0, -1):
        with pytest.raises(
            OptionError, match=rf"^--jobs must be a positive number of processes, got {jobs}$"
        ):
            ooc.convert(tmp_path / "s", format="zarr", source=MNIST, limit=LIMIT, jobs=jobs)
    with pytest.raises(
        OptionError,
        match=r"^pass --jobs N \(local processes\) or --dask ADDRESS \(a Dask cluster\), not both$",
    ):
        ooc.convert(
            tmp_path / "s", format="zarr", source=MNIST, limit=LIMIT, jobs=2, dask="tcp://127.0.0.1:8786"
        )
    assert not (tmp_path / "s").exists()


def test_cli_refusal_is_one_line(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ooc",
            "convert",
            "--format",
            "hdf5",
            "--jobs",
            "2",
            "--source",
            str(MNIST),
            "--out",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert done.stderr == (
        "ooc: error: --jobs 2: hdf5 cannot be written in parallel: it is one file, data.h5, which only one "
        "process can write without MPI; convert it with one process: --jobs 1 (the default)\n"
    )


def test_interrupted_parallel_conversion_resumes(tmp_path, monkeypatch, small_units):
    """Only completed units are committed; a re-run (with any --jobs) goes on from there."""
    layout = get_format("zarr")
    original, calls = layout.Writer.absorb_part, []

    def absorb_part(self, split, start, y, result):  # runs in the converting process, in sample order
        calls.append((split, start))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, split, start, y, result)

    monkeypatch.setattr(layout.Writer, "absorb_part", absorb_part)
    out = tmp_path / "s"
    with pytest.raises(ConversionInterrupted) as caught:
        ooc.convert(out, format="zarr", source=MNIST, limit=LIMIT, chunk_size=CHUNK, jobs=2)
    assert (
        str(caught.value)
        == f"{out} is incomplete (train 128/300 samples); re-run the same command to resume, or pass "
        "--overwrite to start over"
    )
    journal = json.loads((out / PARTIAL_NAME).read_text())
    kept = set(journal["splits"]["train"]["files"])
    assert {"train/x/c/0/0/0/0", "train/x/c/1/0/0/0"} <= kept and "train/x/c/2/0/0/0" not in kept
    stamps = {name: (out / name).stat().st_mtime_ns for name in kept}

    monkeypatch.setattr(layout.Writer, "absorb_part", original)
    calls.clear()
    manifest = ooc.convert(out, format="zarr", source=MNIST, limit=LIMIT, chunk_size=CHUNK, jobs=2)
    assert manifest["resumed"] == {"train": 128}
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == stamps  # kept chunks untouched
    ooc.convert(tmp_path / "one", format="zarr", source=MNIST, limit=LIMIT, chunk_size=CHUNK)
    assert contents(out)[0] == contents(tmp_path / "one")[0]
    assert verify(out).ok


def _sigkill_and_wait(parent: subprocess.Popen, children) -> list:
    """SIGKILL the parent; the children still running 5 s later (killed then, so none outlives the test)."""
    import psutil

    parent.kill()
    parent.wait()
    _, alive = psutil.wait_procs(children, timeout=5)
    for child in alive:
        child.kill()
    return alive


def test_workers_die_with_a_killed_parent(tmp_path):
    import psutil

    args = ["convert", "--format", "csv", "--jobs", 2, "--source", MNIST, "--out", tmp_path / "csv"]
    convert = subprocess.Popen(
        [sys.executable, "-m", "ooc", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    workers, deadline = [], time.monotonic() + 60
    try:
        while len(workers) < 2 or not (tmp_path / "csv" / "train").is_dir():  # both workers are writing
            assert time.monotonic() < deadline and convert.poll() is None
            time.sleep(0.05)
            workers = [
                p for p in psutil.Process(convert.pid).children() if "spawn_main" in " ".join(p.cmdline())
            ]
        assert _sigkill_and_wait(convert, workers) == []
        assert convert.stdout.read() == b""  # the pipe ends: no worker holds it open
    finally:
        _sigkill_and_wait(convert, workers)


def test_the_watchdog_ends_a_worker_whose_parent_is_gone(tmp_path):
    """Where prctl is missing: the worker's watchdog thread notices its parent pid changed."""
    import psutil

    orphan = "import os, time; from ooc.parallel import _watch_parent; _watch_parent(os.getppid(), 0.05)"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {orphan!r}]); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    deadline, worker = time.monotonic() + 30, []
    try:
        while not psutil.Process(parent.pid).children():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        worker = psutil.Process(parent.pid).children()
        time.sleep(1)  # the child has imported ooc and watches
        assert worker[0].is_running() and _sigkill_and_wait(parent, worker) == []
    finally:
        _sigkill_and_wait(parent, worker)
