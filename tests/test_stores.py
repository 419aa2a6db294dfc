"""What every store shares whatever its layout (each layout's own suite: tests/conformance.py)."""

from __future__ import annotations

import numpy as np
import pytest

import ooc
from ooc.formats import FORMATS


def test_unknown_format():
    with pytest.raises(
        ooc.OocError, match=rf"^unknown format 'parquet2': choose one of {', '.join(FORMATS)}$"
    ):
        ooc.convert("unused", format="parquet2")


def test_decode_matches_the_pixel_table():
    from ooc.formats.base import U8_TO_FLOAT32, decode

    every_byte = np.arange(256, dtype=np.uint8)
    assert decode(every_byte).tobytes() == U8_TO_FLOAT32.tobytes()
