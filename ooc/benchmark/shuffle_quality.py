"""How well a shuffle mixes, as numbers: from an epoch's batch plan and the split's labels alone, no
sample read (a plan of 60,000 samples takes milliseconds).

- ``tv_distance``: the mean, over full batches, of the total-variation distance between the batch's
  label distribution and the split's (0: every batch has the split's class shares; 1: disjoint).
- ``chunks_per_batch``: the mean number of distinct chunks a batch draws from, and
  ``samples_per_chunk``: the mean largest count of a batch's samples from one chunk (how correlated
  neighbours on disk stay in a batch).

``expected_global_tv`` is the exact global shuffle's expected TV distance in closed form (each
class's count in a batch is hypergeometric), the reference the sampled figures approach. The
class-sorted order (``order="class-sorted"``: the labels sorted, as a dataset stored class by class)
is the hard case of a chunk shuffle: a stretch of chunks then holds only one or two classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ooc.sampling import SHUFFLE_BUFFER_CHUNKS, epoch_batches

ORDERS = ("stored", "class-sorted")


@dataclass
class ShuffleQuality:
    mode: str
    order: str
    tv_distance: float | None  # None: targets that are not class numbers
    chunks_per_batch: float | None  # None: no chunks
    samples_per_chunk: float | None
    stretch_chunks: int = SHUFFLE_BUFFER_CHUNKS


def tv_distance(labels: np.ndarray, plan: list[np.ndarray]) -> float:
    """Mean TV distance of the full batches' label distributions to that of all of ``labels``."""
    labels = np.asarray(labels)
    classes = int(labels.max()) + 1
    overall = np.bincount(labels, minlength=classes) / len(labels)
    size = max(len(b) for b in plan)
    distances = [
        0.5 * np.abs(np.bincount(labels[b], minlength=classes) / len(b) - overall).sum()
        for b in plan
        if len(b) == size
    ]
    return float(np.mean(distances))


def chunk_spread(plan: list[np.ndarray], chunk_size: int) -> tuple[float, float]:
    """(mean distinct chunks per full batch, mean largest number of a batch's samples from one chunk)."""
    size = max(len(b) for b in plan)
    distinct, largest = [], []
    for b in plan:
        if len(b) == size:
            _, counts = np.unique(b // chunk_size, return_counts=True)
            distinct.append(len(counts))
            largest.append(counts.max())
    return float(np.mean(distinct)), float(np.mean(largest))


def expected_global_tv(labels: np.ndarray, batch_size: int) -> float:
    """The expected TV distance of a full batch of the exact global shuffle (closed form: the count of
    class c in a batch of b drawn from n without replacement is hypergeometric(n, n_c, b))."""
    counts = np.bincount(np.asarray(labels))
    n, b = int(counts.sum()), batch_size
    log_all = _log_comb(n, b)
    total = 0.0
    for k in counts.tolist():
        for x in range(max(0, b - (n - k)), min(b, k) + 1):
            p = math.exp(_log_comb(k, x) + _log_comb(n - k, b - x) - log_all)
            total += p * abs(x / b - k / n)
    return 0.5 * total


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def shuffle_quality(
    labels: np.ndarray,
    *,
    mode: str,
    batch_size: int,
    chunk_size: int | None,
    seed: int = 0,
    epoch: int = 0,
    order: str = "stored",
    stretch_chunks: int = SHUFFLE_BUFFER_CHUNKS,
) -> ShuffleQuality:
    """The figures of one epoch of ``mode`` over ``labels`` stored in ``order`` ("stored" or
    "class-sorted"), from ``epoch_batches``: the plan ``ooc.batches`` reads."""
    labels = np.asarray(labels)
    if order == "class-sorted":
        labels = np.sort(labels, kind="stable")
    elif order != "stored":
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    plan = epoch_batches(
        len(labels),
        batch_size=batch_size,
        shuffle=mode,
        seed=seed,
        epoch=epoch,
        chunk_size=chunk_size,
        stretch_chunks=stretch_chunks,
    )
    classes = labels.ndim == 1 and labels.dtype.kind in "iu" and len(labels) > 0
    spread = chunk_spread(plan, chunk_size) if chunk_size else (None, None)
    return ShuffleQuality(
        mode, order, tv_distance(labels, plan) if classes else None, *spread, stretch_chunks=stretch_chunks
    )
