"""The command line as a user types it: happy paths, and errors that are one line with exit 1."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ooc.formats import FORMATS

from conftest import MNIST


def ooc(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "ooc", *map(str, args)], cwd=cwd, capture_output=True, text=True
    )


def one_line_error(result, message):
    assert result.returncode == 1, result.stderr
    assert result.stderr == f"ooc: error: {message}\n"


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_convert_info_train(fmt, tmp_path):
    """The README's main job on a small store: convert, inspect, train one epoch, beat chance."""
    done = ooc("convert", "--format", fmt, "--source", MNIST, "--limit", 2000, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {fmt} store data/{fmt} (train 2000, test 2000) in ")
    info = ooc("info", f"data/{fmt}", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    lines = dict(line.split(":", 1) for line in info.stdout.splitlines())
    assert lines["format"].split()[0] == fmt
    assert lines["splits"].strip() == "train 2000, test 2000"
    assert lines["samples"].strip() == (
        "(28, 28, 1) float32" if fmt == "csv" else "(28, 28, 1) uint8, read as float32 / 255"
    )
    assert lines["targets"].strip() == "10 classes (uint8)"
    assert lines["order"].strip() == "as the source lists them"
    assert "bytes" in lines["size"] and "per sample" in lines["size"]

    trained = ooc(
        "train", "--store", fmt, "--epochs", 1, "--batch-size", 16, "--report", "r.json", cwd=tmp_path
    )
    assert trained.returncode == 0, trained.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert (
        report["store"]["format"] == fmt
        and report["store"]["train_samples"] == 1800
        and report["store"]["val_samples"] == 200
    )
    assert len(report["history"]) == 1 and report["history"][0]["samples_per_second"] > 0
    assert report["test"]["accuracy"] > 0.7  # chance is 0.1; this run reaches 0.815
    assert (tmp_path / "data" / "models" / f"{fmt}-lenet.keras").is_file()
    assert "Total params" in trained.stdout and "test: loss" in trained.stdout


def test_errors_are_one_line(tmp_path):
    one_line_error(
        ooc("convert", "--format", "foo", cwd=tmp_path),
        f"unknown format 'foo': choose one of {', '.join(FORMATS)}",
    )
    assert not (tmp_path / "data").exists()
    one_line_error(
        ooc("info", "nowhere", cwd=tmp_path),
        "nowhere: no such store; create it with `ooc convert --out nowhere`",
    )
    (tmp_path / "notes").mkdir()
    one_line_error(
        ooc("info", "notes", cwd=tmp_path),
        "notes is not an ooc store (no ooc.json); create one with `ooc convert --out PATH`",
    )
    one_line_error(
        ooc("convert", "--format", "csv", "--chunk-size", 10, cwd=tmp_path),
        "--chunk-size does not apply to csv (it has no chunks); drop the option",
    )
    one_line_error(
        ooc("convert", "--format", "zarr", "--compression", "lzf", cwd=tmp_path),
        "--compression 'lzf' is not available for zarr: choose one of none, zstd, blosc, gzip",
    )
    assert ooc("convert", "--format", "hdf5", "--limit", 20, cwd=tmp_path).returncode == 0
    one_line_error(
        ooc("convert", "--format", "hdf5", "--limit", 20, cwd=tmp_path),
        "data/hdf5 already holds a store; pass --overwrite to replace it",
    )
    one_line_error(
        ooc("train", "--store", "zarr", "--path", "data/hdf5", cwd=tmp_path),
        "data/hdf5 holds a hdf5 store, not zarr: pass --store hdf5, or --path to a zarr store",
    )
    one_line_error(
        ooc("train", "--store", "lmdb", cwd=tmp_path),
        f"unknown --store 'lmdb': choose one of {', '.join(FORMATS)}, memory",
    )
    one_line_error(
        ooc("train", "--store", "hdf5", "--batch-size", 0, cwd=tmp_path),
        "--batch-size must be a positive number of samples, got 0",
    )


def test_training_names_a_broken_csv_file(tmp_path):
    assert ooc("convert", "--format", "csv", "--source", MNIST, "--limit", 100, cwd=tmp_path).returncode == 0
    broken = tmp_path / "data" / "csv" / "train" / "013.csv"
    broken.write_text(broken.read_text().replace("0.0 ", "", 1))
    one_line_error(
        ooc("train", "--store", "csv", "--epochs", 1, "--val-fraction", 0, cwd=tmp_path),
        "data/csv/train/013.csv: expected 784 numeric values (28 lines of 28), found 783 values or a "
        "non-numeric one; re-convert with `ooc convert --format csv --overwrite`",
    )


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_convert_to_an_out_another_convert_is_writing(tmp_path, overwrite):
    """Issue 18: a second `ooc convert` to the --out a running one holds (the lock, held here as the
    first conversion holds it) exits 1 with one line and touches nothing there."""
    import os

    from ooc.output import owning

    done = ooc("convert", "--format", "hdf5", "--source", MNIST, "--limit", 100, "--out", "s", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in (tmp_path / "s").rglob("*")}
    with owning(tmp_path / "s"):
        second = ooc("convert", "--format", "hdf5", "--source", MNIST, "--out", "s", *overwrite, cwd=tmp_path)
        one_line_error(
            second,
            f"s is being written by another ooc convert (pid {os.getpid()}); wait for it or choose another --out",
        )
        after = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in (tmp_path / "s").rglob("*")}
        assert {p: v for p, v in after.items() if p.name != "ooc.lock"} == before
    assert ooc("verify", "s", cwd=tmp_path).returncode == 0
