"""Interrupted conversions resume exactly, and `ooc verify` names every damaged file (issue 6)."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import ooc
from ooc.errors import ConversionInterrupted, StoreExistsError, StoreNotFoundError
from ooc.formats import FORMATS, get_format
from ooc.formats.base import Resumable
from ooc.manifest import PARTIAL_NAME
from ooc.verify import verify

from conftest import CHUNK, LIMIT, MNIST, ROOT

converting = importlib.import_module("ooc.convert")  # the module: `ooc.convert` is the function


# where a resumed conversion starts again: after the last committed unit, unless the layout
# cannot trust a file killed mid-write (hdf5: the one file; parquet: the split's file)
def restarts(fmt):
    writer = get_format(fmt).Writer
    return (
        None
        if issubclass(writer, Resumable) and writer.resume_unit == "commit"
        else "split"
        if issubclass(writer, Resumable)
        else "store"
    )


def sizes(fmt):
    options = get_format(fmt).OPTIONS
    return {
        "chunk_size": None if options.default_chunk_size is None else CHUNK,
        "shard_size": None if options.default_shard_size is None else CHUNK,
    }


def stamps(path):
    """(inode, mtime) of every file: a file rewritten in place or replaced changes one of them."""
    return {
        p.relative_to(path).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in path.rglob("*")
        if p.is_file()
    }


def assert_same_store(path, reference):
    got, expected = ooc.open_store(path), ooc.open_store(reference)
    assert (
        got.manifest["checksums"]["files"] == expected.manifest["checksums"]["files"]
    )  # the same bytes in every file
    for split in ("train", "test"):
        (x, y), (ex, ey) = got.read(split, np.arange(LIMIT)), expected.read(split, np.arange(LIMIT))
        assert x.tobytes() == ex.tobytes() and y.tobytes() == ey.tobytes()


def interrupt_writes(monkeypatch, fmt, interrupt):
    """Make the layout's writer record each write and raise KeyboardInterrupt on the writes numbered
    in ``interrupt`` (a list the test may clear); returns (calls, interrupt)."""
    layout = get_format(fmt)
    original, calls = layout.Writer.write, []

    def write(self, split, start, x, y):
        calls.append((split, start))
        if len(calls) in interrupt:
            raise KeyboardInterrupt
        return original(self, split, start, x, y)

    monkeypatch.setattr(layout.Writer, "write", write)
    return calls, interrupt


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("nth", [3, 7])  # 3: in train (128 samples committed); 7: in test, train finished
def test_interrupted_conversion_resumes_where_it_stopped(fmt, nth, tmp_path, monkeypatch):
    monkeypatch.setattr(converting, "READ_CHUNK_SAMPLES", CHUNK)  # a unit per chunk: 5 writes a split
    calls, interrupt = interrupt_writes(monkeypatch, fmt, [nth])
    out = tmp_path / "s"
    with pytest.raises(ConversionInterrupted) as caught:
        ooc.convert(out, format=fmt, source=MNIST, limit=LIMIT, **sizes(fmt))
    assert isinstance(caught.value, KeyboardInterrupt)
    committed = "train 128/300 samples" if nth == 3 else "train 300/300, test 64/300 samples"
    assert (
        str(caught.value)
        == f"{out} is incomplete ({committed}); re-run the same command to resume, or pass --overwrite to "
        "start over"
    )
    with pytest.raises(StoreNotFoundError, match="is an incomplete ooc store"):
        ooc.open_store(out)
    journal = json.loads((out / PARTIAL_NAME).read_text())
    kept = {name for entry in journal["splits"].values() for name in entry["files"]}
    before = stamps(out)

    calls.clear()
    interrupt.clear()
    manifest = ooc.convert(out, format=fmt, source=MNIST, limit=LIMIT, **sizes(fmt))
    restart = restarts(fmt)
    expected_first = {
        3: ("train", 0 if restart else 128),
        7: ("train", 0) if restart == "store" else ("test", 0 if restart else 64),
    }[nth]
    assert calls[0] == expected_first
    assert len(calls) == len(set(calls))  # nothing written twice
    if fmt in ("zarr", "csv", "tfrecord") or (nth == 7 and fmt in ("npy", "parquet")):
        assert kept, "files the interrupted run finished are in the journal"
    after = stamps(out)
    assert {name: after[name] for name in kept} == {
        name: before[name] for name in kept
    }  # kept files untouched
    resumed = {"train": 128} if nth == 3 else {"train": 300, "test": 64}
    if restart:
        resumed = {} if restart == "store" or nth == 3 else {"train": 300}
    assert manifest.get("resumed", {}) == resumed

    ooc.convert(tmp_path / "clean", format=fmt, source=MNIST, limit=LIMIT, **sizes(fmt))
    assert_same_store(out, tmp_path / "clean")
    assert verify(out).ok


@pytest.mark.parametrize(
    "fmt,damaged",
    [
        ("zarr", "train/x/c/0/0/0/0"),
        ("zarr", "train/y/c/0"),
        ("csv", "train/001.csv"),
        ("csv", "target.csv"),
        ("npy", "train_x.npy"),
        ("tfrecord", "train-00000-of-00005.tfrecord"),
    ],
)
def test_resume_starts_a_split_over_when_kept_data_changed(fmt, damaged, tmp_path, monkeypatch):
    """Kept files are re-checked (the journal's checksums, or the CRC of what a file holds so far):
    if something else changed them, the split is written again rather than trusted."""
    monkeypatch.setattr(converting, "READ_CHUNK_SAMPLES", CHUNK)
    calls, interrupt = interrupt_writes(monkeypatch, fmt, [3])
    with pytest.raises(KeyboardInterrupt):
        ooc.convert(tmp_path / "s", format=fmt, source=MNIST, limit=LIMIT, **sizes(fmt))
    victim = tmp_path / "s" / damaged
    data = bytearray(victim.read_bytes())
    data[200 if fmt == "npy" else -2] ^= 0x01  # in the committed part of a file still being written, too
    victim.write_bytes(bytes(data))
    calls.clear()
    interrupt.clear()
    ooc.convert(tmp_path / "s", format=fmt, source=MNIST, limit=LIMIT, **sizes(fmt))
    assert calls[0] == ("train", 0)
    ooc.convert(tmp_path / "clean", format=fmt, source=MNIST, limit=LIMIT, **sizes(fmt))
    assert_same_store(tmp_path / "s", tmp_path / "clean")


def test_resume_needs_the_same_arguments(tmp_path, monkeypatch):
    monkeypatch.setattr(converting, "READ_CHUNK_SAMPLES", CHUNK)
    original = get_format("zarr").Writer.write
    calls = []

    def write(self, split, start, x, y):
        calls.append(start)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, split, start, x, y)

    monkeypatch.setattr(get_format("zarr").Writer, "write", write)
    out = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        ooc.convert(out, format="zarr", source=MNIST, limit=LIMIT, chunk_size=CHUNK)
    monkeypatch.setattr(get_format("zarr").Writer, "write", original)
    with pytest.raises(
        StoreExistsError,
        match=rf"^{out} holds an interrupted conversion with other arguments \(--chunk-size 64, not 32; "
        r"--limit 300, not 200\); "
        r"re-run it with those to resume, or pass --overwrite to start over$",
    ):
        ooc.convert(out, format="zarr", source=MNIST, limit=200, chunk_size=32)
    with pytest.raises(StoreExistsError, match=r"\(--format zarr, not npy\)"):
        ooc.convert(out, format="npy", source=MNIST, limit=LIMIT)
    manifest = ooc.convert(
        out, format="npy", source=MNIST, limit=200, overwrite=True
    )  # --overwrite starts clean
    assert manifest["splits"]["train"]["count"] == 200 and "resumed" not in manifest


def test_sources_start_where_asked(tmp_path):
    from test_sources import _image_folder, _write_idx

    from ooc.sources import RepeatedSource, open_source

    sources = [
        open_source(MNIST),
        RepeatedSource(open_source(MNIST), 3),
        open_source(_write_idx(tmp_path / "idx")[0]),
        open_source(_write_idx(tmp_path / "gz", compress=True)[0]),
        open_source(_image_folder(tmp_path / "images")[0]),
    ]
    for source in sources:
        for split in ("train", "test"):
            everything = list(source.iter_chunks(split, 16, 40))
            x, y = np.concatenate([c[0] for c in everything]), np.concatenate([c[1] for c in everything])
            for start in (1, 16, 17, len(x) - 1, len(x)):
                chunks = list(source.iter_chunks(split, 16, 40, start=start))
                assert [len(c[0]) for c in chunks] == [min(16, len(x) - s) for s in range(start, len(x), 16)]
                if chunks:
                    assert np.array_equal(np.concatenate([c[0] for c in chunks]), x[start:])
                    assert np.array_equal(np.concatenate([c[1] for c in chunks]), y[start:])


def _ctrl_c_as_at_a_terminal():
    # a suite started in the background (`cmd &` in a script) inherits SIGINT ignored, and so would
    # ooc: the interrupt tests then saw a conversion run to its end
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ooc_cli(*args, cwd, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "ooc", *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=_ctrl_c_as_at_a_terminal,
        **kwargs,
    )


def wait_for_progress(process, journal, timeout=60):
    """Until the journal shows committed train samples (then the conversion is under way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if json.loads(journal.read_text())["splits"]["train"]["done"] > 0:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.005)
    pytest.fail(
        f"no progress in {journal} before the conversion "
        f"{'ended' if process.poll() is not None else 'timed out'}"
    )


LONG = ("convert", "--format", "zarr", "--repeat", 3, "--out", "big")  # 190 000 samples, over a second


def test_sigkill_then_resume(tmp_path):
    killed = ooc_cli(*LONG, cwd=tmp_path)
    wait_for_progress(killed, tmp_path / "big" / PARTIAL_NAME)
    killed.kill()
    killed.communicate()
    journal = json.loads((tmp_path / "big" / PARTIAL_NAME).read_text())
    assert 0 < journal["splits"]["train"]["done"] < 180_000, "killed mid-way"
    with pytest.raises(StoreNotFoundError, match="is an incomplete ooc store"):
        ooc.open_store(tmp_path / "big")
    stdout, stderr = ooc_cli(*LONG, cwd=tmp_path).communicate()
    assert (
        stdout.startswith("wrote zarr store big (train 180000, test 10000) in ")
        and "resuming with train " in stdout
    ), stderr
    manifest = json.loads((tmp_path / "big" / "ooc.json").read_text())
    assert manifest["resumed"]["train"] >= journal["splits"]["train"]["done"]
    checked = subprocess.run(
        [sys.executable, "-m", "ooc", "verify", "big"], cwd=tmp_path, capture_output=True, text=True
    )
    assert checked.returncode == 0 and checked.stdout.endswith("every checksum matches\n"), checked.stdout
    store = ooc.open_store(tmp_path / "big")
    with np.load(MNIST) as d:
        x, y = store.read("train", np.arange(0, 60_000, 997))  # the first copy is the source itself
        assert np.array_equal(
            np.rint(x[..., 0] * 255).astype(np.uint8), d["x_train"][::997]
        ) and np.array_equal(y, d["y_train"][::997])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_prints_one_line(tmp_path, signum):
    process = ooc_cli(*LONG, cwd=tmp_path)
    wait_for_progress(process, tmp_path / "big" / PARTIAL_NAME)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and stdout == ""
    lines = [
        line for line in stderr.splitlines() if not line.startswith("train: ")
    ]  # the non-tty progress line
    assert len(lines) == 1 and lines[0].startswith("ooc: interrupted: big is incomplete (train "), stderr
    assert lines[0].endswith("samples); re-run the same command to resume, or pass --overwrite to start over")
    assert (tmp_path / "big" / PARTIAL_NAME).exists() and not (tmp_path / "big" / "ooc.json").exists()


@pytest.fixture
def small_store(fmt, tmp_path):
    ooc.convert(tmp_path / "s", format=fmt, source=MNIST, limit=LIMIT, **sizes(fmt))
    return tmp_path / "s"


def biggest_data_file(path):
    files = ooc.open_store(path).manifest["checksums"]["files"]
    return path / max(files, key=lambda name: int(files[name].split()[1]))


def test_verify_names_every_damaged_file(small_store):
    report = verify(small_store)
    assert report.ok and report.checked == report.files > 0, report.problems
    victim = biggest_data_file(small_store)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    problems = verify(small_store).problems
    assert len(problems) == 1 and problems[0].startswith(f"{victim}: checksum differs (crc32 "), problems

    victim.write_bytes(bytes(data[: len(data) // 2]))
    problems = verify(small_store).problems
    assert problems == [f"{victim}: truncated to {len(data) // 2:,} bytes, the manifest says {len(data):,}"]
    assert verify(small_store, quick=True).problems == problems  # sizes: checked for every file

    victim.unlink()
    (small_store / "train" / "stray.bin").parent.mkdir(exist_ok=True)
    (small_store / "train" / "stray.bin").write_bytes(b"x")
    assert verify(small_store).problems == [
        f"{victim}: missing",
        f"{small_store}/train/stray.bin: not in the manifest (a file the conversion did not write)",
    ]


def test_verify_command(fmt, small_store):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "ooc", "verify", *map(str, args)], capture_output=True, text=True
        )

    clean = run(small_store)
    assert (
        clean.returncode == 0
        and clean.stdout.startswith(f"{small_store}: ")
        and clean.stdout.endswith("bytes: every checksum matches\n")
    )
    quick = run(small_store, "--quick")
    assert quick.returncode == 0 and "chosen at random" in quick.stdout, quick.stdout
    victim = biggest_data_file(small_store)
    with open(victim, "ab") as f:
        f.write(b"\0")
    for args in ((small_store,), (small_store, "--quick")):
        damaged = run(*args)
        lines = damaged.stdout.splitlines()
        assert damaged.returncode == 1 and len(lines) == 2, damaged.stdout
        assert lines[0].startswith(f"{victim}: grown to ") and lines[1].startswith(
            f"{small_store}: 1 problem in "
        )


def test_verify_older_store_without_checksums(tmp_path):
    ooc.convert(tmp_path / "s", format="zarr", source=MNIST, limit=20)
    manifest_file = tmp_path / "s" / "ooc.json"
    manifest = json.loads(manifest_file.read_text())
    del manifest["checksums"]
    manifest_file.write_text(json.dumps(manifest))
    assert ooc.open_store(tmp_path / "s").read("train", [0, 1])[0].shape == (2, 28, 28, 1)  # still opens
    report = verify(tmp_path / "s")
    assert report.problems == [
        f"{tmp_path / 's'}: the manifest has no checksums (converted by an ooc that did not record them); "
        "re-convert the store with --overwrite to add them"
    ]
    assert not report.ok and report.summary == f"{tmp_path / 's'}: not verified"
