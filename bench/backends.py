"""ooc train on each Keras backend: test accuracy and epoch time streamed from a zarr store, next to
the in-memory epoch on the same backend, in one run (interleaved: store, memory, next backend).

    python bench/backends.py [--backends tensorflow,jax,torch] [--model lenet] [--epochs 5]

Each run is its own process (KERAS_BACKEND is read at import); epoch time is the median of epochs
2 on (the first also compiles).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(backend: str, store: str, args, workdir: Path) -> dict:
    report = workdir / f"{backend}-{store}.json"
    where = ["--store", "zarr", "--path", str(workdir / "zarr")] if store == "zarr" else ["--store", "memory"]
    command = [sys.executable, "-m", "ooc", "--quiet", "train", *where, "--model", args.model]
    command += ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--report", str(report)]
    command += [
        "--model-out",
        str(workdir / "model.keras"),
        "--checkpoint-dir",
        str(workdir / f"ck-{backend}-{store}"),
    ]
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "KERAS_BACKEND": backend})
    done = json.loads(report.read_text())
    return {
        "epoch_seconds": statistics.median(e["seconds"] for e in done["history"][1:]),
        "test_accuracy": done["test"]["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--model", default="lenet")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        subprocess.run([sys.executable, "-m", "ooc", "--quiet", "convert", "--format", "zarr", "--out",
                        str(workdir / "zarr")], check=True, cwd=ROOT)  # fmt: skip
        print(
            "| backend | model | zarr epoch s | memory epoch s | ratio | zarr test accuracy | memory test accuracy |"
        )
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for backend in args.backends.split(","):
            zarr, memory = run(backend, "zarr", args, workdir), run(backend, "memory", args, workdir)
            print(
                f"| {backend} | {args.model} | {zarr['epoch_seconds']:.2f} | {memory['epoch_seconds']:.2f} | "
                f"{zarr['epoch_seconds'] / memory['epoch_seconds']:.2f} | {zarr['test_accuracy'] * 100:.2f} % | "
                f"{memory['test_accuracy'] * 100:.2f} % |",
                flush=True,
            )


if __name__ == "__main__":
    main()
