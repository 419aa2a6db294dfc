"""Epoch time of the shared training loop per store, next to the in-memory baseline, in one run.

    python bench/train_epochs.py                      # full MNIST, lenet-wide, 5 epochs of 512
    python bench/train_epochs.py --reuse              # only tabulate the reports already written

Runs ``ooc train`` once per store (stores converted beforehand with ``ooc convert --format F``),
each in its own process, one after the other, and prints a Markdown table. The epoch time quoted is
the median over epochs 2..N (epoch 1 also traces the model's graph); the ratio divides it by the
in-memory median of the same run. Reports land in ``data/reports/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from ooc.formats import FORMATS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default=",".join(["memory", *FORMATS]))
    parser.add_argument("--model", default="lenet-wide")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--reports", type=Path, default=Path("data/reports"))
    parser.add_argument("--reuse", action="store_true", help="tabulate existing reports, train nothing")
    args = parser.parse_args()

    stores = args.stores.split(",")
    args.reports.mkdir(parents=True, exist_ok=True)
    for store in stores if not args.reuse else []:
        report = args.reports / f"train-{store}.json"
        cmd = [
            "ooc",
            "train",
            "--store",
            store,
            "--model",
            args.model,
            "--epochs",
            str(args.epochs),
            "--batch-size",
            str(args.batch_size),
            "--report",
            str(report),
        ]
        print("+", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

    rows = {s: json.loads((args.reports / f"train-{s}.json").read_text()) for s in stores}
    median = {
        s: statistics.median(e["seconds"] for e in r["history"][1:] or r["history"]) for s, r in rows.items()
    }
    base = median.get("memory")
    print("| store | epoch time (s, median of epochs 2-N) | ratio to in-memory | samples/s | test accuracy |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for store, report in rows.items():
        ratio = f"{median[store] / base:.2f}" if base else "n/a"
        rate = report["store"]["train_samples"] / median[store]
        print(
            f"| {store} | {median[store]:.2f} | {ratio} | {rate:,.0f} | "
            f"{report['test']['accuracy'] * 100:.2f} % |"
        )


if __name__ == "__main__":
    main()
