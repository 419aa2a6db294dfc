"""Progress a user can plan by: plain lines with rate and ETA when stderr is not a terminal (never a
carriage return), --quiet, the summary lines, the choices in --help, --version. In-process
(``ooc.cli.main``) where it can be, so that the file stays fast."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from dataclasses import replace

import pytest

import ooc
import ooc.progress
from ooc.cli import Compression, main
from ooc.formats import FORMATS, get_format
from ooc.progress import Reporter

from conftest import MNIST


def run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["ooc", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def chatty(monkeypatch):
    """A line at every 10 % however fast, and conversions that read 100 samples at a time (not 8192):
    the small conversions here are long enough to report."""
    monkeypatch.setattr(ooc.progress, "MIN_GAP", 0.0)
    monkeypatch.setattr(sys.modules["ooc.convert"], "READ_CHUNK_SAMPLES", 100)


def test_conversion_reports_plain_lines(tmp_path, monkeypatch, capsys, chatty):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(
        monkeypatch,
        capsys,
        "convert",
        "--format",
        "zarr",
        "--source",
        MNIST,
        "--limit",
        2000,
        "--chunk-size",
        100,
    )
    assert code == 0, err
    assert "\r" not in err
    lines = err.splitlines()
    for split in ("train", "test"):
        mine = [line for line in lines if line.startswith(f"convert {split}: ")]
        running, last = mine[:-1], mine[-1]
        assert len(running) >= 3, err  # every 10 %, past the first chunk (the rate's baseline)
        for line in running:
            assert re.fullmatch(
                rf"convert {split}: [\d,]+/2,000 samples \(\d+ %\), [\d,]+ samples/s, elapsed \d:\d\d:\d\d, "
                r"ETA \d:\d\d:\d\d",
                line,
            ), line
        assert re.fullmatch(rf"convert {split}: 2,000 samples in [\d.]+ s \([\d,]+ samples/s\)", last), last
    assert re.fullmatch(
        r"wrote zarr store data/zarr \(train 2000, test 2000\) in [\d.]+ s \([\d,]+ samples/s, [\d.,]+ "
        r"MB/s\)\n",
        out,
    ), out


def test_a_short_conversion_reports_its_end_only(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "ooc", "convert", "--format", "npy", "--source", MNIST, "--limit", "300"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    assert [line.split(":")[0] for line in done.stderr.splitlines()] == ["convert train", "convert test"]


@pytest.mark.parametrize(
    "quiet", [("convert", "--quiet"), ("--quiet", "convert"), ("-q", "convert"), ("convert", "-q")]
)
def test_quiet(quiet, tmp_path, monkeypatch, capsys, chatty):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(monkeypatch, capsys, *quiet, "--format", "npy", "--source", MNIST, "--limit", 500)
    assert (code, err) == (0, "")
    assert out.startswith("wrote npy store data/npy (train 500, test 500) in ")
    code, out, err = run(monkeypatch, capsys, "verify", "-q", "data/npy")
    assert (code, err) == (0, "") and out.endswith("bytes: every checksum matches\n")
    # the global --quiet does not stick to the next command
    code, out, err = run(monkeypatch, capsys, "verify", "data/npy")
    assert code == 0 and err.startswith("verify: ")


def test_verify_reports_files_bytes_and_rate(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert (
        run(monkeypatch, capsys, "convert", "-q", "--format", "csv", "--source", MNIST, "--limit", 50)[0] == 0
    )
    code, out, err = run(monkeypatch, capsys, "verify", "data/csv")
    assert code == 0 and "\r" not in err
    assert re.fullmatch(
        r"verify: 102 files, [\d.]+ MB in [\d.]+ s \([\d,]+ files/s, [\d.,]+ MB/s\)\n", err
    ), err
    assert re.fullmatch(
        r"data/csv: checked in [\d.]+ s \([\d.,]+ MB/s\), 102 files, [\d,]+ bytes: every checksum matches\n",
        out,
    ), out


def test_reporter_lines():
    """The rules, on a fake clock: a line per 10 % (not within MIN_GAP of the last) or per INTERVAL, one at the end."""
    clock = [100.0]
    stream = io.StringIO()
    original = ooc.progress.time.perf_counter
    ooc.progress.time.perf_counter = lambda: clock[0]
    try:
        with Reporter(stream=stream) as reporter:
            task = reporter.task("copy", 1000, unit="rows")
            for done in range(10, 1001, 10):  # 1 % a second
                clock[0] += 1
                task.update(done)
            phases = reporter.task("bench", 4, unit="phases", run_eta=True)
            clock[0] += 10
            phases.update(1, description="bench phase 2/4: zarr", force_line=True)
    finally:
        ooc.progress.time.perf_counter = original
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    copy = [line for line in lines if line.startswith("copy: ")]
    # every 5 s (5 % of the task), the 10 % rule never first; then the end line
    assert len(copy) == 20 and copy[0] == "copy: 50/1,000 rows (5 %), 10 rows/s, elapsed 0:00:05, ETA 0:01:35"
    assert copy[-1] == "copy: 1,000 rows in 0:01:40 (10 rows/s)"
    assert lines[-2] == "bench phase 2/4: zarr: elapsed 0:00:10, run ETA 0:00:30"
    assert lines[-1] == "bench phase 2/4: zarr: 1 phases in 10.0 s"  # finished on the way out


def test_quiet_reporter_writes_nothing():
    stream = io.StringIO()
    with Reporter(stream=stream, quiet=True) as reporter:
        reporter.note("found")
        reporter.conversion()("train", 10, 10)
    assert stream.getvalue() == ""


CHOICES = {
    "convert": ["[" + "|".join(FORMATS) + "]", "[none|gzip|lzf|zstd|blosc|snappy]"],
    "train": [
        "[" + "|".join(FORMATS) + "|memory]",
        "[none|global|chunk]",
        "[train_on_batch|fit]",
        "[cosine|constant]",
        "[raise|skip]",
        "[lenet|lenet-wide|mlp]",
    ],
    "bench": ["[lenet|lenet-wide|mlp]"],
}


@pytest.mark.parametrize("command", list(CHOICES))
def test_choices_in_help(command, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "300")
    code, out, _ = run(monkeypatch, capsys, command, "--help")
    assert code == 0
    for choices in CHOICES[command]:
        assert choices in out, (choices, out)
    assert "--quiet" in out or command == "train"


def test_compression_choices_are_every_layouts():
    every = []
    for name in FORMATS:
        every += [c for c in get_format(name).OPTIONS.compressions if c not in every]
    assert sorted(c.value for c in Compression) == sorted(every)


@pytest.mark.parametrize(
    "args,message",
    [
        (("convert", "--format", "foo"), f"unknown format 'foo': choose one of {', '.join(FORMATS)}"),
        (
            ("convert", "--format", "zarr", "--compression", "rar"),
            "--compression 'rar' is not available for zarr: choose one of none, zstd, blosc, gzip",
        ),
        (
            ("convert", "--format", "hdf5", "--compression", "snappy"),
            "--compression 'snappy' is not available for hdf5: choose one of none, gzip, lzf",
        ),
        (("train", "--store", "lmdb"), f"unknown --store 'lmdb': choose one of {', '.join(FORMATS)}, memory"),
        (
            ("train", "--store", "memory", "--model", "vgg"),
            "unknown --model 'vgg': choose one of lenet, lenet-wide, mlp, a .keras file or module:function",
        ),
    ],
)
def test_a_bad_choice_is_one_line(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(monkeypatch, capsys, *args)
    assert (code, err) == (1, f"ooc: error: {message}\n")
    assert not (tmp_path / "data").exists()


def test_version():
    for command in ([sys.executable, "-m", "ooc", "--version"],):
        done = subprocess.run(command, capture_output=True, text=True)
        assert (done.returncode, done.stdout, done.stderr) == (0, f"ooc {ooc.__version__}\n", "")
    assert ooc.__version__ == "0.1.0"


def test_bench_phases(tmp_path, monkeypatch):
    """The phases ``run_bench`` announces: one at a time, numbered 1..total, then total + 1 at the
    end; with the measurements stubbed out (the real run is tests/test_bench.py)."""
    from ooc.benchmark import report as bench_report
    from ooc.benchmark import run as bench

    def fake_training(store, **options):
        return bench.Training("chunk", "train_on_batch", False, {"median": 1.0}, {}, 1.0, 1, 1.0, 1.0, 1.0)

    monkeypatch.setattr(bench, "measure_reads", lambda *a, **k: {})
    monkeypatch.setattr(bench, "measure_training", fake_training)
    monkeypatch.setattr(
        bench,
        "_rounds_summary",
        lambda *a: replace(fake_training(None), ratio_to_memory=1.0, ratio_rounds=[1.0]),
    )
    monkeypatch.setattr(bench, "loader_cpu_share", lambda *a: 0.0)
    monkeypatch.setattr(bench, "measure_fit", lambda *a, **k: None)
    monkeypatch.setattr(bench, "measure_conversion_jobs", lambda *a, **k: None)
    monkeypatch.setattr(bench, "measure_scale", lambda *a, **k: None)
    monkeypatch.setattr(bench_report, "write_plots", lambda *a: None)
    monkeypatch.setattr(bench_report, "write_markdown", lambda *a: "")
    seen = []
    bench.run_bench(
        out=tmp_path / "out",
        stores_dir=tmp_path / "stores",
        formats=["npy", "zarr"],
        variants=False,
        source=MNIST,
        limit=50,
        repeats=2,
        scale_repeat=3,
        progress=lambda line: None,
        phase=lambda *p: seen.append(p),
    )
    names = [name for _, _, name in seen]
    assert names == [
        "baseline memory",
        "baseline npy-memmap",
        "npy: converting, reading",
        "zarr: converting, reading",
        "training round 1 of 2",
        "training round 2 of 2",
        "training with the global shuffle",
        "model.fit",
        "conversion with --jobs",
        "memory at scale",
        "done",
    ]
    assert [(i, total) for i, total, _ in seen] == [(i, 10) for i in range(1, 12)]
    assert bench.run_bench.__kwdefaults__["phase"] is None  # callers without it keep working
