"""Cost of issue 18's read-path CRC checks: a chunk-shuffled pass over the MNIST train split of an hdf5
and an npy store (default options), with and without the checks, in interleaved rounds.

    python bench/read_checks.py [rounds]      # prints samples/s per round and the median ratio
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import ooc

ROOT = Path(__file__).resolve().parent.parent


def one_pass(path: Path, *, checks: bool, seed: int) -> float:
    store = ooc.open_store(path)
    if not checks:  # the same store, as if converted without read_checksums
        store.manifest = {k: v for k, v in store.manifest.items() if k != "read_checksums"}
    n = store.num_samples("train")
    plan = ooc.epoch_batches(
        n, batch_size=128, shuffle="chunk", seed=seed, chunk_size=store.chunk_size or 1024
    )
    store.labels("train")
    started = time.perf_counter()
    for batch in plan:
        store.read("train", batch)
    seconds = time.perf_counter() - started
    store.close()
    return n / seconds


def main(rounds: int = 7) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("hdf5", "npy"):
            path = Path(tmp) / fmt
            ooc.convert(path, format=fmt, source=ROOT / "data" / "mnist.npz")
            one_pass(path, checks=True, seed=0)  # warm the page cache
            rates = {True: [], False: []}
            for r in range(rounds):
                for checks in (r % 2 == 0, r % 2 != 0):  # alternate which goes first
                    rates[checks].append(one_pass(path, checks=checks, seed=r))
            on, off = statistics.median(rates[True]), statistics.median(rates[False])
            print(
                f"{fmt}: with checks {on:,.0f} samples/s, without {off:,.0f} samples/s (medians of {rounds}); "
                f"ratio {on / off:.3f}"
            )
            print(f"  with:    {', '.join(f'{v:,.0f}' for v in rates[True])}")
            print(f"  without: {', '.join(f'{v:,.0f}' for v in rates[False])}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
