"""What the CSV layout puts on disk is the classic recipe's layout, byte for byte."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import ooc
from ooc.errors import CorruptStoreError

from conftest import LIMIT, expected_x


def test_files_are_the_recipes(store_dirs, mnist):
    root = store_dirs["csv"]
    names = sorted(p.name for p in (root / "train").iterdir())
    assert names[0] == "001.csv" and names[-1] == "300.csv" and len(names) == LIMIT  # padded to the count's width
    values = np.loadtxt(root / "train" / "001.csv", delimiter=",")
    assert values.shape == (28, 28)
    assert np.array_equal(values.astype(np.float32)[..., None], expected_x(mnist["x_train"][0]))
    first_line = (root / "train" / "001.csv").read_text().splitlines()[5]  # pixels 3, 18, 18, 18
    assert first_line.split(",")[12:16] == ["0.011764706", "0.07058824", "0.07058824", "0.07058824"]
    target = pd.read_csv(root / "train_target.csv", header=None)
    assert target.iloc[0].tolist() == ["001.csv", 5]
    assert np.array_equal(target.iloc[:, 1].to_numpy(), mnist["y_train"])


@pytest.fixture
def csv_copy(store_dirs, tmp_path):
    import shutil

    shutil.copytree(store_dirs["csv"], tmp_path / "csv")
    return tmp_path / "csv"


def test_a_file_with_the_wrong_number_of_values_is_named(csv_copy):
    bad = csv_copy / "train" / "042.csv"
    lines = bad.read_text().splitlines()
    lines[3] = ",".join(lines[3].split(",")[:-1])  # one value short
    bad.write_text("\n".join(lines) + "\n")
    store = ooc.open_store(csv_copy)
    store.read("train", [40, 42])  # the neighbours are fine
    with pytest.raises(CorruptStoreError, match=rf"^{bad}: expected 784 numeric values \(28 lines of 28\), found 783 values or a non-numeric one; re-convert with `ooc convert --format csv --overwrite`$"):
        store.read("train", [41])


def test_a_missing_file_or_short_target_is_named(csv_copy):
    (csv_copy / "test" / "007.csv").unlink()
    store = ooc.open_store(csv_copy)
    with pytest.raises(CorruptStoreError, match=rf"^{csv_copy / 'test' / '007.csv'}: file is missing"):
        store.read("test", [6])
    target = csv_copy / "train_target.csv"
    target.write_text("".join(target.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(CorruptStoreError, match=rf"^{target}: expected 300 'file,label' rows with integer labels, found 299 rows"):
        ooc.open_store(csv_copy).labels("train")
