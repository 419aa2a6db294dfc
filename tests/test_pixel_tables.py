"""Tables of pixels, a row per image as Kaggle shares MNIST (``label,pixel0,…``, pandas
``to_csv(index=False)``): stored as uint8 and read as float32 / 255 only when every value is an
integer in 0–255, the target column found by its name, and a test table without targets refused."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import ooc
import ooc.sources.table
from ooc.errors import OptionError, SourceError
from ooc.sources import SourceOptions


def kaggle_frame(n=50, pixels=64, *, label=True, seed=0) -> pd.DataFrame:
    """Kaggle's train.csv (test.csv: label=False): int64 columns label, pixel0 … pixel{pixels-1}."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.integers(0, 256, (n, pixels)), columns=[f"pixel{i}" for i in range(pixels)])
    if label:
        frame.insert(0, "label", rng.integers(0, 3, n))
    return frame


def save(frame: pd.DataFrame, path):
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def convert(tmp_path, source, name="s", **options):
    ooc.convert(tmp_path / name, format="zarr", source=source, source_options=SourceOptions(**options))
    return ooc.open_store(tmp_path / name)


def read_all(store, split):
    return store.read(split, np.arange(store.num_samples(split)))


def features(frame: pd.DataFrame) -> np.ndarray:
    return frame.drop(columns="label").to_numpy()


def decoded(frame: pd.DataFrame, shape=(8, 8, 1)) -> np.ndarray:
    """The features as a read returns pixels: float32 v / 255 (``Schema.decoded``), in ``shape``."""
    return np.divide(features(frame).astype(np.float32), np.float32(255)).reshape(-1, *shape)


def table_rows(table: np.ndarray, x: np.ndarray) -> list[int]:
    """Which rows of ``table`` the samples ``x`` are (every row is distinct)."""
    flat = table.reshape(len(table), -1)
    return [int(np.flatnonzero((flat == sample.ravel()).all(axis=1))[0]) for sample in x]


def check_rows(store, frame: pd.DataFrame, expected: np.ndarray) -> None:
    """Each split holds table rows in table order with their labels, the two splits every row once;
    ``expected`` is what a read returns for each row, compared bit for bit."""
    seen = []
    for split in ("train", "test"):
        x, y = read_all(store, split)
        rows = table_rows(expected, x)
        assert rows == sorted(rows) and np.array_equal(y, frame["label"].to_numpy()[rows])
        assert x.dtype == expected.dtype and x.tobytes() == expected[rows].tobytes()
        seen += rows
    assert sorted(seen) == list(range(len(frame)))


@pytest.fixture
def small_batches(monkeypatch):
    """Tables streamed in many record batches: a late value is one the first batch did not hold."""
    monkeypatch.setattr(ooc.sources.table, "CSV_BLOCK_BYTES", 1024)
    monkeypatch.setattr(ooc.sources.table, "BATCH_ROWS", 8)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_pixels_are_stored_as_uint8_and_read_as_images(tmp_path, suffix, small_batches):
    frame = kaggle_frame()
    store = convert(tmp_path, save(frame, tmp_path / f"t{suffix}"), sample_shape=(8, 8))
    assert store.manifest["x"] == {"dtype": "uint8", "decode": "pixels"}
    assert store.sample_shape == (8, 8, 1) and store.schema.is_image
    assert store.manifest["notes"] == [
        "target column 'label' found by its name",
        "features stored as uint8 (every value an integer in 0–255), read as images of float32 / 255",
    ]
    check_rows(store, frame, decoded(frame))
    assert store.num_samples("test") == 5


def test_raw_keeps_the_bytes(tmp_path):
    frame = kaggle_frame()
    store = convert(tmp_path, save(frame, tmp_path / "t.csv"), sample_shape=(8, 8), raw=True)
    assert store.manifest["x"] == {"dtype": "uint8", "decode": "none"}
    assert (
        store.manifest["notes"][1]
        == "features stored as uint8 (every value an integer in 0–255), read as they are (--raw)"
    )
    check_rows(store, frame, features(frame).astype(np.uint8).reshape(-1, 8, 8, 1))


def test_without_a_sample_shape(tmp_path):
    """pixel<N> columns are pixels of shape (64,); other integer columns are stored uint8, read as they are."""
    frame = kaggle_frame()
    store = convert(tmp_path, save(frame, tmp_path / "t.csv"), "p")
    assert (store.manifest["x"], store.sample_shape) == ({"dtype": "uint8", "decode": "pixels"}, (64,))
    assert store.manifest["notes"][1] == (
        "features stored as uint8 (every value an integer in 0–255), read as float32 / 255; pass "
        "--sample-shape 8,8 to read them as images"
    )
    counts = frame.rename(columns=lambda c: c.replace("pixel", "count"))
    store = convert(tmp_path, save(counts, tmp_path / "c.csv"), "c")
    assert (store.manifest["x"], store.sample_shape) == ({"dtype": "uint8", "decode": "none"}, (64,))
    assert store.manifest["notes"][1] == (
        "features stored as uint8 (every value an integer in 0–255), read as they are; pass "
        "--sample-shape 8,8 to read them as images of float32 / 255"
    )
    check_rows(store, frame, features(frame).astype(np.uint8))


@pytest.mark.parametrize("value", [256, 1.5, -1])
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_late_value_outside_0_255_keeps_the_table_as_it_is_today(tmp_path, value, suffix, small_batches):
    frame = kaggle_frame().astype({"pixel7": type(value)})
    frame.loc[49, "pixel7"] = value  # in the last record batch
    store = convert(tmp_path, save(frame, tmp_path / f"t{suffix}"), sample_shape=(8, 8))
    as_today = np.float32 if suffix == ".csv" else np.result_type(int, type(value))  # Parquet: its types
    assert store.manifest["x"] == {"dtype": np.dtype(as_today).name, "decode": "none"}
    assert store.sample_shape == (8, 8) and len(store.manifest["notes"]) == 1
    check_rows(store, frame, features(frame).astype(as_today).reshape(-1, 8, 8))


def test_parquet_floats_stay_floats_csv_text_is_its_values(tmp_path):
    """Parquet's float columns are floats by their type, even holding 0, 1, … 255 only; a CSV has no
    types: its text 3.0 is the integer 3."""
    frame = kaggle_frame().astype({f"pixel{i}": np.float32 for i in range(64)})
    store = convert(tmp_path, save(frame, tmp_path / "t.parquet"), "p", sample_shape=(8, 8))
    assert store.manifest["x"] == {"dtype": "float32", "decode": "none"}
    check_rows(store, frame, features(frame).astype(np.float32).reshape(-1, 8, 8))
    assert "3.0," in save(frame, tmp_path / "t.csv").read_text()
    store = convert(tmp_path, tmp_path / "t.csv", "c", sample_shape=(8, 8))
    assert store.manifest["x"] == {"dtype": "uint8", "decode": "pixels"}
    check_rows(store, frame, decoded(frame))


@pytest.mark.parametrize("name", ["label", "Target", "y", "CLASS"])
def test_the_target_column_is_found_by_its_name(tmp_path, name):
    frame = kaggle_frame().rename(columns={"label": name})
    frame = frame[[*frame.columns[1:], name]]  # last, not first
    store = convert(tmp_path, save(frame, tmp_path / "t.csv"), sample_shape=(8, 8))
    assert store.manifest["notes"][0] == f"target column {name!r} found by its name"
    renamed = frame.rename(columns={name: "label"})
    check_rows(store, renamed, decoded(renamed))


def test_a_named_target_column_is_not_a_note(tmp_path):
    frame = kaggle_frame().assign(y=1)  # label and y: --target-column picks
    store = convert(tmp_path, save(frame, tmp_path / "t.csv"), target_column="label", test_fraction=0.2)
    assert store.sample_shape == (65,) and store.manifest["x"]["decode"] == "none"  # y is a feature
    assert store.manifest["notes"] == [
        "features stored as uint8 (every value an integer in 0–255), read as they are; pass "
        "--sample-shape H,W to read them as images of float32 / 255"
    ]


def refused(tmp_path, error, message, source, **options):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        convert(tmp_path, source, **options)
    assert not (tmp_path / "s").exists()


def test_refusals(tmp_path):
    both = save(kaggle_frame().assign(y=1), tmp_path / "both.csv")
    refused(
        tmp_path,
        SourceError,
        f"{both} is a table with several target columns by name (label, y): name one with --target-column NAME",
        both,
    )
    none = save(kaggle_frame(label=False), tmp_path / "none.csv")
    refused(
        tmp_path,
        SourceError,
        f"{none} is a table: name its target column with --target-column NAME (none is named label, target, y "
        "or class)",
        none,
    )
    table = save(kaggle_frame(), tmp_path / "t.csv")
    refused(
        tmp_path,
        OptionError,
        f"--sample-shape 8,7: {table} has 64 feature columns besides 'label', not 56; pass sizes that "
        "multiply to 64",
        table,
        sample_shape=(8, 7),
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_folder_of_train_and_test_tables(tmp_path, suffix):
    folder = tmp_path / "kaggle"
    folder.mkdir()
    train, test = kaggle_frame(), kaggle_frame(20, seed=1)
    save(train, folder / f"train{suffix}")
    save(test, folder / f"test{suffix}")
    (folder / "sample_submission.csv").write_text("ImageId,Label\n1,0\n")  # Kaggle's third file
    store = convert(tmp_path, folder, sample_shape=(8, 8))
    assert (store.num_samples("train"), store.num_samples("test")) == (50, 20)
    assert store.manifest["notes"][:2] == [
        "target column 'label' found by its name",
        f"train and test splits from train{suffix} and test{suffix}",
    ]
    for split, frame in (("train", train), ("test", test)):
        x, y = read_all(store, split)
        assert x.tobytes() == decoded(frame).tobytes() and np.array_equal(y, frame["label"])


def test_kaggle_test_csv_without_labels_is_refused(tmp_path):
    folder = tmp_path / "kaggle"
    folder.mkdir()
    save(kaggle_frame(), folder / "train.csv")
    save(kaggle_frame(20, label=False), folder / "test.csv")
    refused(
        tmp_path,
        SourceError,
        f"{folder / 'test.csv'} has no column 'label': a test split needs its targets (Kaggle's test.csv has "
        f"none); pass --source {folder / 'train.csv'} to carve the test split from it (--test-fraction, 0.1 by "
        "default)",
        folder,
    )
    save(kaggle_frame(20).drop(columns="pixel3").assign(id=1), folder / "test.csv")
    refused(
        tmp_path,
        SourceError,
        f"{folder / 'test.csv'}: its columns differ from train.csv's (missing: pixel3; extra: id); both tables "
        "need the same columns",
        folder,
    )
    save(kaggle_frame(20), folder / "test.csv")
    refused(
        tmp_path,
        OptionError,
        f"--test-fraction: {folder} has test.csv, a test split of its own; drop the option, or pass --source "
        f"{folder / 'train.csv'} to carve one from it",
        folder,
        test_fraction=0.2,
    )
    store = convert(tmp_path, folder / "train.csv", test_fraction=0.2)  # the way out the messages give
    assert (store.num_samples("train"), store.num_samples("test")) == (40, 10)


def ooc_cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "ooc", *map(str, args)], cwd=cwd, capture_output=True, text=True
    )


def test_cli(tmp_path):
    save(kaggle_frame(), tmp_path / "t.csv")
    done = ooc_cli(*"convert --format zarr --source t.csv --sample-shape 8,8 --out s".split(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == [
        "target column 'label' found by its name",
        "features stored as uint8 (every value an integer in 0–255), read as images of float32 / 255",
    ]
    assert lines[2].startswith("wrote zarr store s (train 45, test 5) in ") and len(lines) == 3
    bad = ooc_cli(*"convert --format zarr --source t.csv --sample-shape 8,7 --out b".split(), cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr == (
        "ooc: error: --sample-shape 8,7: t.csv has 64 feature columns besides 'label', not 56; pass sizes "
        "that multiply to 64\n"
    )


def test_empty_cells_of_integer_columns_are_refused(tmp_path):
    """Read as floats, an empty integer cell would be stored as a made-up number: refused instead."""
    frame = kaggle_frame().astype({"pixel3": "Int64"})
    frame.loc[3, "pixel3"] = pd.NA
    table = save(frame, tmp_path / "t.parquet")
    message = (
        f"{table}: column 'pixel3' has empty cells, which int64 cannot hold; fill them or drop those rows"
    )
    with pytest.raises(SourceError, match=f"^{re.escape(message)}$"):
        convert(tmp_path, table)


def test_train_and_test_tables_of_other_types_are_refused(tmp_path):
    folder = tmp_path / "kaggle"
    folder.mkdir()
    save(kaggle_frame(), folder / "train.parquet")
    save(kaggle_frame(20).astype({"pixel5": np.float64}), folder / "test.parquet")
    refused(
        tmp_path,
        SourceError,
        f"{folder / 'test.parquet'}: column 'pixel5' is float64, but train.parquet's is int64; both tables "
        "need the same columns",
        folder,
    )


def test_shape_and_dialect_options_other_sources_would_ignore_are_refused(tmp_path):
    arrays = tmp_path / "a.npz"
    np.savez(
        arrays,
        x_train=np.zeros((4, 8, 8), np.uint8),
        y_train=np.arange(4),
        x_test=np.zeros((2, 8, 8), np.uint8),
        y_test=np.arange(2),
    )
    refused(
        tmp_path,
        OptionError,
        f"--sample-shape applies to tables (a CSV or Parquet file, one row per sample); {arrays} is not one: "
        "drop --sample-shape",
        arrays,
        sample_shape=(64,),
    )
    refused(
        tmp_path,
        OptionError,
        f"--delimiter applies to folders of per-sample CSV files and to a csv output; {arrays} is neither: "
        "drop --delimiter",
        arrays,
        delimiter="tab",
    )


def test_an_interrupted_table_conversion_with_a_sample_shape_resumes(tmp_path, monkeypatch, small_batches):
    """The shape is part of what the conversion reads: it is kept in the journal as JSON holds it."""
    from ooc.errors import ConversionInterrupted
    from ooc.formats import get_format

    table = save(kaggle_frame(n=200), tmp_path / "t.csv")
    monkeypatch.setattr(sys.modules["ooc.convert"], "READ_CHUNK_SAMPLES", 16)
    writer = get_format("npy").Writer
    original, calls = writer.write, []

    def write(self, *args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(writer, "write", write)
    options = SourceOptions(sample_shape=(8, 8))
    with pytest.raises(ConversionInterrupted):
        ooc.convert(tmp_path / "s", format="npy", source=table, source_options=options)
    ooc.convert(tmp_path / "s", format="npy", source=table, source_options=options)
    ooc.convert(tmp_path / "whole", format="npy", source=table, source_options=options)
    for split in ("train", "test"):
        got, whole = (
            read_all(ooc.open_store(tmp_path / "s"), split),
            read_all(ooc.open_store(tmp_path / "whole"), split),
        )
        assert got[0].tobytes() == whole[0].tobytes() and got[1].tobytes() == whole[1].tobytes()
