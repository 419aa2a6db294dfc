"""Shuffle quality as numbers: exact values on tiny hand-made label arrays."""

from __future__ import annotations

import numpy as np
import pytest

from ooc.benchmark.shuffle_quality import chunk_spread, expected_global_tv, shuffle_quality, tv_distance

BALANCED = np.array([0, 1] * 4)  # two classes, alternating: every pair is the split in small


def test_no_shuffle_of_an_alternating_set_gives_every_batch_the_splits_shares():
    q = shuffle_quality(BALANCED, mode="none", batch_size=2, chunk_size=2)
    assert q.tv_distance == 0.0
    assert (q.chunks_per_batch, q.samples_per_chunk) == (1.0, 2.0)  # a batch is one whole chunk


def test_no_shuffle_of_the_class_sorted_order_gives_one_class_a_batch():
    # every batch [0, 0] or [1, 1] against shares (1/2, 1/2): TV = (|1 - 1/2| + |0 - 1/2|) / 2 = 1/2
    q = shuffle_quality(BALANCED, mode="none", batch_size=2, chunk_size=4, order="class-sorted")
    assert q.tv_distance == 0.5
    assert (q.chunks_per_batch, q.samples_per_chunk) == (1.0, 2.0)


def test_the_global_shuffles_expected_distance_in_closed_form():
    # a batch of 2 from [0, 0, 1, 1]: P(one of each) = 4/6, P(both alike) = 2/6, the latter at TV 1/2
    assert expected_global_tv(np.array([0, 0, 1, 1]), 2) == pytest.approx(1 / 6, abs=1e-12)
    assert expected_global_tv(BALANCED, 8) == pytest.approx(0.0, abs=1e-12)  # the whole split
    # sampled global shuffles approach it: 2,000 epochs of 4 batches of 2 from 8 samples
    # (a batch of 2 from 4 + 4: P(alike) = 2 * C(4,2) / C(8,2) = 3/7, so E[TV] = 3/14)
    assert expected_global_tv(BALANCED, 2) == pytest.approx(3 / 14, abs=1e-12)
    sampled = [
        shuffle_quality(BALANCED, mode="global", batch_size=2, chunk_size=None, epoch=e).tv_distance
        for e in range(2000)
    ]
    assert np.mean(sampled) == pytest.approx(3 / 14, abs=0.01)


def test_partial_last_batches_are_left_out():
    plan = [np.array([0, 1]), np.array([2, 3]), np.array([4])]
    labels = np.array([0, 1, 0, 1, 0])  # shares 3/5, 2/5; each full batch is 1/2, 1/2: TV 1/10
    assert tv_distance(labels, plan) == pytest.approx(0.1, abs=1e-12)
    assert chunk_spread(plan, 3) == (1.5, 1.5)  # [0, 1]: chunk 0 twice; [2, 3]: chunks 0 and 1


def test_the_chunk_shuffle_of_a_sorted_set_stays_within_its_stretch():
    labels = np.repeat(np.arange(10), 100)  # 1,000 samples, class-sorted already: a chunk of 100 is a class
    one = shuffle_quality(labels, mode="chunk", batch_size=50, chunk_size=100, stretch_chunks=1)
    # a stretch of one chunk is one class, and batches of 50 never straddle two: TV = (0.9 + 9 * 0.1) / 2
    assert one.tv_distance == pytest.approx(0.9, abs=1e-12)
    assert (one.chunks_per_batch, one.samples_per_chunk) == (1.0, 50.0)
    wider = shuffle_quality(labels, mode="chunk", batch_size=50, chunk_size=100, stretch_chunks=5)
    assert wider.tv_distance < one.tv_distance and wider.chunks_per_batch > 1
    assert shuffle_quality(labels, mode="global", batch_size=50, chunk_size=10).tv_distance == pytest.approx(
        expected_global_tv(labels, 50), abs=0.03
    )
    floats = labels.astype(np.float32)
    assert shuffle_quality(floats, mode="none", batch_size=50, chunk_size=10).tv_distance is None
