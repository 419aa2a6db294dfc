"""The zarr layout: the conformance suite, read back with zarr-python, and its own chunk decoding."""

from __future__ import annotations

import numpy as np
import pytest

import ooc
from ooc.errors import CorruptStoreError
from ooc.testing import LayoutTests

from conftest import LIMIT, MNIST, expected_x


class TestZarr(LayoutTests):
    format = "zarr"

    def standard_read(self, path, n):
        import zarr

        group = zarr.open_group(path, mode="r")
        return group["train/x"][:n], group["train/y"][:n]


def test_damaged_label_chunk_is_one_line(tmp_path):
    ooc.convert(tmp_path / "s", format="zarr", source=MNIST, limit=LIMIT)
    labels = tmp_path / "s" / "train" / "y" / "c" / "0"
    data = bytearray(labels.read_bytes())
    data[len(data) // 2] ^= 0xFF  # zstd's checksum catches it
    labels.write_bytes(bytes(data))
    with pytest.raises(
        CorruptStoreError,
        match=r"^.*/s/train/y: cannot read the targets of split 'train' \(RuntimeError: .*\); check the store with "
        r"`ooc verify .*`, re-convert it to repair$",
    ):
        ooc.open_store(tmp_path / "s").read("train", [0])


@pytest.mark.parametrize("compression", ["none", "zstd", "blosc", "gzip"])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_zarr_chunks_decoded_directly_match_zarr(tmp_path, mnist, compression, dtype):
    """Local zarr chunks are decoded with numcodecs, not through zarr's read path: the same rows as
    zarr reads, every option ooc writes, a last chunk stored padded included."""
    import zarr

    ooc.convert(
        tmp_path / "s",
        format="zarr",
        source=MNIST,
        limit=LIMIT,
        chunk_size=128,
        compression=compression,
        dtype=dtype,
    )
    store = ooc.open_store(tmp_path / "s")
    rows = store._read_rows("train", 256, LIMIT)  # the last chunk holds 44 of 128 rows
    assert store._decoders["train"] is not None
    assert rows.dtype == np.dtype(dtype) and np.array_equal(
        rows, zarr.open_group(tmp_path / "s", mode="r")["train/x"][256:]
    )
    order = np.random.default_rng(0).permutation(LIMIT)
    x, y = store.read("train", order)
    assert np.array_equal(x, expected_x(mnist["x_train"][order])) and np.array_equal(
        y, mnist["y_train"][order]
    )


def test_targets_that_differ_from_their_checksum_name_the_targets(tmp_path):
    """Uncompressed, a flip in train/y/c/0 decodes to other labels: the checksum error names train/y."""
    ooc.convert(tmp_path / "s", format="zarr", source=MNIST, limit=LIMIT, compression="none")
    labels = tmp_path / "s" / "train" / "y" / "c" / "0"
    data = bytearray(labels.read_bytes())
    data[0] ^= 0x01
    labels.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError) as caught:
        ooc.open_store(tmp_path / "s").read("train", [0])
    assert str(caught.value).startswith(
        f"{tmp_path / 's' / 'train' / 'y'}: the targets of split 'train' differ from their checksum (crc32 "
    ), str(caught.value)
