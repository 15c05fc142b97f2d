"""PolyCL's triplet sampler: valid, fresh, seeded (anchor, positive, negative) triples every epoch, skipped
anchors counted, data-parallel shards."""

from __future__ import annotations

import numpy as np
import pytest

from fewlabel.data.triplets import TripletSampler


def _table(strategy: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    scan_ids = np.repeat(np.arange(5), 8)
    has_organ = rng.random(40) < 0.5
    has_organ[::8] = True
    has_organ[1::8] = False
    return scan_ids, has_organ


@pytest.mark.parametrize("strategy", ["S", "O", "M"])
def test_triplet_sampler_draws_valid_fresh_seeded_triples_every_epoch(strategy):
    scan_ids, has_organ = _table(strategy)
    sampler = TripletSampler(scan_ids, has_organ, strategy, seed=3)
    epochs = [np.array(list(sampler)) for _ in range(3)]
    for trip in epochs:
        assert len(trip) == len(sampler) == 40 - sampler.skipped
        a, p, n = trip.T
        assert (a != p).all()
        if strategy == "S":
            assert (scan_ids[p] == scan_ids[a]).all() and (scan_ids[n] != scan_ids[a]).all()
        if strategy == "O":
            assert (has_organ[p] == has_organ[a]).all() and (has_organ[n] != has_organ[a]).all()
        if strategy == "M":
            assert (scan_ids[p] == scan_ids[a]).all() and (scan_ids[n] == scan_ids[a]).all()
            assert (has_organ[p] == has_organ[a]).all() and (has_organ[n] != has_organ[a]).all()
    assert not np.array_equal(epochs[0], epochs[1])  # a fresh draw (and order) each epoch
    again = TripletSampler(scan_ids, has_organ, strategy, seed=3)
    assert np.array_equal(np.array(list(again)), epochs[0])  # seeded
    again.set_epoch(2)
    assert np.array_equal(np.array(list(again)), epochs[2])


def test_triplet_sampler_counts_skipped_anchors_and_shards_for_data_parallel():
    scan_ids = np.array([0, 0, 0, 1, 1, 1, 2])
    has_organ = np.array([1, 1, 0, 1, 1, 1, 0], dtype=bool)  # scan 1 has no liver-free slice, scan 2 one slice
    sampler = TripletSampler(scan_ids, has_organ, "M", seed=0)
    assert sampler.skipped == 5  # scan 0's lone liver-free slice, all of scan 1, scan 2's only slice
    assert sorted(np.array(list(sampler))[:, 0].tolist()) == [0, 1]
    with pytest.raises(ValueError, match="none of the 2 slices"):
        TripletSampler([0, 0], [True, True], "M", seed=0)
    scan_ids, has_organ = _table("S")
    full = TripletSampler(scan_ids, has_organ, "S", seed=1, shuffle=False)
    shards = [TripletSampler(scan_ids, has_organ, "S", seed=1, shuffle=False, num_replicas=3, rank=r) for r in range(3)]
    got = [np.array(list(s)) for s in shards]
    assert {len(g) for g in got} == {len(shards[0])} == {14}
    anchors = np.concatenate([g[:, 0] for g in got])
    assert set(anchors.tolist()) == set(np.array(list(full))[:, 0].tolist())
