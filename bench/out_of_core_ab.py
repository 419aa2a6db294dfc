"""A/B of the out-of-core read path, each pass cold in a child inside a fresh memory cgroup.

    python bench/out_of_core_ab.py STORE [--limit 1G] [--seconds 8] [--rounds 2] [--shuffle chunk]
        [--variants threads,advise] [--read read]

Variants: ``threads`` (the default path: hints read the next stretch in the reader threads),
``advise`` (hints only ask the kernel: ``reads_ahead`` off), ``nohint`` (no hints), and any of them
with ``+buffered`` or ``+direct`` to force ``Store.direct_io``. Alternated for ``--rounds`` rounds;
prints samples/s, CPU % of one core, and the cgroup's peak. Needs root (cgroups), as
``ooc bench --memory-limit`` does.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def child(path: Path, seconds: float, shuffle: str, variant: str, read: str) -> dict:
    from ooc.benchmark.measure import evict_from_page_cache
    from ooc.benchmark.out_of_core import _timed_pass
    from ooc.loader import hint_ahead, read_ahead
    from ooc.sampling import epoch_batches
    from ooc.stores import open_store

    mode, _, io = variant.partition("+")
    evict_from_page_cache(path)
    with open_store(path) as store:
        if mode == "advise":
            type(store).reads_ahead = False
        if io:
            store.direct_io = io == "direct"
        plan = epoch_batches(
            store.num_samples("train"), batch_size=512, shuffle=shuffle, seed=1, chunk_size=store.shuffle_unit
        )
        hint = None if mode == "nohint" else store.will_need
        ahead = hint_ahead(store, 512, shuffle=shuffle)
        cpu = time.process_time()
        result = _timed_pass(
            read_ahead(getattr(store, read), "train", plan, 0, will_need=hint, ahead=ahead), seconds
        )
        result["cpu"] = (time.process_time() - cpu) / result["seconds"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store", type=Path)
    parser.add_argument("--limit", default="1G")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shuffle", default="chunk")
    parser.add_argument("--variants", default="threads,advise")
    parser.add_argument("--read", default="read", choices=["read", "read_stored"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.store, args.seconds, args.shuffle, args.child, args.read)))
        return
    from ooc.benchmark.out_of_core import MemoryCgroup
    from ooc.core.units import parse_bytes

    for _ in range(args.rounds):
        for variant in args.variants.split(","):
            cgroup = MemoryCgroup(parse_bytes(args.limit)).create()
            try:
                run = subprocess.Popen(
                    [sys.executable, __file__, *sys.argv[1:], "--child", variant],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                cgroup.add(run.pid)  # before it has imported anything worth measuring
                out, _ = run.communicate()
                peak = cgroup.peak()
            finally:
                cgroup.remove()
            r = json.loads(out.strip().splitlines()[-1])
            print(
                f"{variant:>16} {args.shuffle} {args.read}: {r['samples_per_second']:>11,.0f} samples/s, "
                f"cpu {100 * r['cpu']:.0f} %, peak {(peak or 0) / 2**20:,.0f} MB",
                flush=True,
            )


if __name__ == "__main__":
    main()
