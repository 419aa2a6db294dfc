"""Epochs 1 and 2 of a chunk-shuffled read of the train split from moto's S3 server, without and with
the local cache (``open_store(url, cache_dir=..., cache_size=...)``, ``ooc train --cache-dir``), for a
zarr and a parquet store (default options: zstd, chunks of 1024) of the first N MNIST samples.

    python bench/remote_cache.py [--limit 20000] [--rounds 3] [--batch-size 512]

Each round opens the store afresh (a new run) on a new, empty cache directory, reads epoch 1 (seed 0)
then epoch 2 (seed 1) with the same store object, as ``ooc train`` does, and counts the requests s3fs
sends; the targets are read before the clock starts. Prints samples/s per epoch (median of the rounds)
and epoch 2's speed-up from the cache.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import ooc
from ooc.benchmark.s3_server import LocalS3Server
from ooc.remote import URL

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = [0]


def count_requests() -> None:
    import s3fs

    call = s3fs.S3FileSystem._call_s3

    async def counted(self, method, *args, **kwargs):
        REQUESTS[0] += 1
        return await call(self, method, *args, **kwargs)

    s3fs.S3FileSystem._call_s3 = counted


def one_run(url: URL, *, batch_size: int, cache_dir: Path | None) -> list[tuple[float, int]]:
    """(samples/s, requests) of epochs 1 and 2 of one store opened once."""
    options = {"cache_dir": cache_dir, "cache_size": "1G"} if cache_dir else {}
    store = ooc.open_store(url, **options)
    n = store.num_samples("train")
    store.labels("train")
    result = []
    for seed in (0, 1):
        plan = ooc.epoch_batches(
            n, batch_size=batch_size, shuffle="chunk", seed=seed, chunk_size=store.chunk_size
        )
        before, started = REQUESTS[0], time.perf_counter()
        for batch in plan:
            store.read("train", batch)
        result.append((n / (time.perf_counter() - started), REQUESTS[0] - before))
    store.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args()
    count_requests()
    with LocalS3Server(key="bench", secret="bench") as server, tempfile.TemporaryDirectory() as tmp:
        server.create_bucket("ooc-bench")
        print(
            "| store | cache | epoch 1 samples/s | requests | epoch 2 samples/s | requests | epoch 2 vs no cache |"
        )
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for fmt in ("zarr", "parquet"):
            url = URL(f"s3://ooc-bench/{fmt}", server.storage_options)
            ooc.convert(url, format=fmt, source=ROOT / "data" / "mnist.npz", limit=args.limit)
            runs: dict[str, list] = {"off": [], "on": []}
            for r in range(args.rounds):  # interleaved: the other engineer's load hits both alike
                runs["off"].append(one_run(url, batch_size=args.batch_size, cache_dir=None))
                runs["on"].append(
                    one_run(url, batch_size=args.batch_size, cache_dir=Path(tmp) / f"{fmt}-{r}")
                )
            plain = statistics.median(run[1][0] for run in runs["off"])
            for mode, rows in runs.items():
                e1, e2 = (statistics.median(run[e][0] for run in rows) for e in (0, 1))
                q1, q2 = (statistics.median(run[e][1] for run in rows) for e in (0, 1))
                print(
                    f"| {fmt} | {mode} | {e1:,.0f} | {q1:,.0f} | {e2:,.0f} | {q2:,.0f} | {e2 / plain:.2f}× |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
