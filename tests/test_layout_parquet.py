"""The parquet layout: the conformance suite, read back with pandas."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ooc.testing import LayoutTests


class TestParquet(LayoutTests):
    format = "parquet"

    def standard_read(self, path, n):
        shape = json.loads(pq.read_schema(path / "train.parquet").metadata[b"ooc.sample_shape"])
        df = pd.read_parquet(path / "train.parquet")
        return np.stack([np.frombuffer(b, np.uint8) for b in df.image[:n]]).reshape(-1, *shape), df.label[:n]
