"""PolyCL example selection (strategies S, O, M; equations 1 - 3 of Ward et al. 2025).

Every returned triple is checked against a brute-force reading of its equation, written here
independently of the implementation; the anchors that the equation leaves without a positive
or a negative must be exactly the skipped ones.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fewlabel.data.contrastive_selection import STRATEGIES, Triplets, select_examples


def expected_sets(scan_ids, has_organ, strategy: str, s: int) -> tuple[set[int], set[int]]:
    """``(positives, negatives)`` of anchor ``s``, straight from the equations (O(N) per anchor).

    eq. 1 (O): s+ in {x | T(x) = T(s)} minus {s},  s- in {x | T(x) != T(s)}
    eq. 2 (S): s+ in S(s) minus {s},               s- in S^c(s)
    eq. 3 (M): s+ in {x in S(s) | T(x) = T(s)} minus {s},  s- in {x in S(s) | T(x) != T(s)}
    """
    n = len(scan_ids)
    same_scan = {x for x in range(n) if scan_ids[x] == scan_ids[s]}
    same_flag = {x for x in range(n) if bool(has_organ[x]) == bool(has_organ[s])}
    every = set(range(n))
    if strategy == "S":
        return same_scan - {s}, every - same_scan
    if strategy == "O":
        return same_flag - {s}, every - same_flag
    return (same_scan & same_flag) - {s}, same_scan - same_flag


@st.composite
def slice_tables(draw):
    """A random slice table: 1-5 scans of 1-7 slices each, shuffled, int or str ids, random flags."""
    sizes = draw(st.lists(st.integers(1, 7), min_size=1, max_size=5))
    as_str = draw(st.booleans())
    names = draw(
        st.lists(st.integers(-1000, 1000), min_size=len(sizes), max_size=len(sizes), unique=True)
    )
    ids = [f"scan-{m}" if as_str else m for m, k in zip(names, sizes) for _ in range(k)]
    perm = draw(st.permutations(range(len(ids))))  # slices of a scan need not be contiguous
    ids = [ids[i] for i in perm]
    p_organ = draw(st.sampled_from([0.0, 0.2, 0.5, 0.8, 1.0]))
    flags = draw(st.lists(st.booleans(), min_size=len(ids), max_size=len(ids)))
    if p_organ in (0.0, 1.0):  # make the all-absent / all-present tables common, not rare
        flags = [bool(p_organ)] * len(ids)
    anchors = draw(
        st.none() | st.lists(st.integers(0, len(ids) - 1), min_size=0, max_size=12)
    )
    return ids, flags, anchors


def _call(ids, flags, strategy, seed, anchors=None) -> Triplets:
    return select_examples(np.asarray(ids), np.asarray(flags, dtype=bool), strategy,
                           np.random.default_rng(seed), anchors=anchors)


@settings(max_examples=150, deadline=None)
@given(table=slice_tables(), strategy=st.sampled_from(STRATEGIES), seed=st.integers(0, 2**32 - 1))
def test_every_triple_satisfies_its_equation_and_only_impossible_anchors_are_skipped(table, strategy, seed):
    ids, flags, anchors = table
    res = _call(ids, flags, strategy, seed, anchors)
    asked = list(range(len(ids))) if anchors is None else list(anchors)

    for arr in (res.anchor, res.positive, res.negative, res.skipped_anchors):
        assert arr.dtype == np.int64 and arr.ndim == 1
    assert len(res.anchor) == len(res.positive) == len(res.negative)
    assert len(res.anchor) + res.skipped == len(asked)

    possible = []
    for a in asked:
        pos, neg = expected_sets(ids, flags, strategy, a)
        possible.append(bool(pos) and bool(neg))
    # the kept anchors and the skipped anchors, each in the order given
    assert res.anchor.tolist() == [a for a, ok in zip(asked, possible) if ok]
    assert res.skipped_anchors.tolist() == [a for a, ok in zip(asked, possible) if not ok]

    for a, p, n in zip(res.anchor.tolist(), res.positive.tolist(), res.negative.tolist()):
        pos, neg = expected_sets(ids, flags, strategy, a)
        assert p != a
        assert p in pos, (strategy, a, p, pos)
        assert n in neg, (strategy, a, n, neg)


@settings(max_examples=60, deadline=None)
@given(table=slice_tables(), strategy=st.sampled_from(STRATEGIES), seed=st.integers(0, 2**32 - 1))
def test_same_seed_gives_the_same_triples(table, strategy, seed):
    ids, flags, anchors = table
    r1 = _call(ids, flags, strategy, seed, anchors)
    r2 = _call(ids, flags, strategy, seed, anchors)
    for a, b in zip((*r1, r1.skipped_anchors), (*r2, r2.skipped_anchors)):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=60, deadline=None)
@given(table=slice_tables(), strategy=st.sampled_from(STRATEGIES))
def test_different_seeds_give_different_draws_when_there_is_a_choice(table, strategy):
    ids, flags, anchors = table
    asked = range(len(ids)) if anchors is None else anchors
    choice = any(
        (len(pos) >= 2 and neg) or (len(neg) >= 2 and pos)
        for pos, neg in (expected_sets(ids, flags, strategy, a) for a in asked)
    )
    draws = {
        (tuple(r.positive.tolist()), tuple(r.negative.tolist()))
        for r in (_call(ids, flags, strategy, seed, anchors) for seed in range(32))
    }
    # with a choice of >= 2, 32 seeds all agreeing has probability <= 2**-31
    assert (len(draws) > 1) == choice


def test_each_call_draws_afresh_from_the_same_generator():
    ids = np.repeat(np.arange(10), 10)
    flags = np.tile([True, False], 50)
    rng = np.random.default_rng(0)
    for strategy in STRATEGIES:
        first = select_examples(ids, flags, strategy, rng)
        second = select_examples(ids, flags, strategy, rng)
        np.testing.assert_array_equal(first.anchor, second.anchor)
        assert not np.array_equal(first.positive, second.positive)
        assert not np.array_equal(first.negative, second.negative)


# A hand-made table, scans interleaved:   slice: 0  1  2  3  4  5
HAND_IDS = ["A", "B", "A", "C", "B", "A"]
HAND_ORGAN = [0, 1, 1, 0, 0, 1]  # as 0 / 1 ints, which are accepted
# per strategy: anchor -> (positives, negatives); anchors not listed are skipped
HAND_EXPECTED = {
    "S": {0: ({2, 5}, {1, 3, 4}), 1: ({4}, {0, 2, 3, 5}), 2: ({0, 5}, {1, 3, 4}),
          4: ({1}, {0, 2, 3, 5}), 5: ({0, 2}, {1, 3, 4})},  # 3 is the only slice of scan C
    "O": {0: ({3, 4}, {1, 2, 5}), 1: ({2, 5}, {0, 3, 4}), 2: ({1, 5}, {0, 3, 4}),
          3: ({0, 4}, {1, 2, 5}), 4: ({0, 3}, {1, 2, 5}), 5: ({1, 2}, {0, 3, 4})},
    # 0: alone with no organ in A; 1 / 4: alone with their flag in B; 3: alone in C
    "M": {2: ({5}, {0}), 5: ({2}, {0})},
}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_hand_made_table_reaches_exactly_the_expected_sets(strategy):
    expected = HAND_EXPECTED[strategy]
    for anchor in range(len(HAND_IDS)):
        res = select_examples(HAND_IDS, HAND_ORGAN, strategy, np.random.default_rng(anchor),
                              anchors=np.full(300, anchor))
        if anchor not in expected:
            assert len(res.anchor) == 0 and res.skipped == 300
            continue
        pos, neg = expected[anchor]
        assert res.skipped == 0
        assert set(res.positive.tolist()) == pos  # every valid slice is drawn, no other
        assert set(res.negative.tolist()) == neg


def test_hand_made_table_all_anchors():
    res = select_examples(HAND_IDS, HAND_ORGAN, "M", np.random.default_rng(0))
    assert res.anchor.tolist() == [2, 5]
    assert res.positive.tolist() == [5, 2] and res.negative.tolist() == [0, 0]
    assert res.skipped_anchors.tolist() == [0, 1, 3, 4] and res.skipped == 4
    a, p, n = res  # unpacks as the three arrays
    assert a is res.anchor and p is res.positive and n is res.negative


def test_draws_are_uniform_over_slices_not_scans():
    # the anchor's positives under O: 1 slice in scan 1 and 3 slices in scan 2 -> each 1/4
    ids = [0, 0, 1, 2, 2, 2, 3]
    flags = [True, False, True, True, True, True, False]
    res = select_examples(ids, flags, "O", np.random.default_rng(1), anchors=np.zeros(20_000, dtype=int))
    freq = Counter(res.positive.tolist())
    assert set(freq) == {2, 3, 4, 5}
    for count in freq.values():
        assert abs(count / 20_000 - 0.25) < 0.02
    assert abs(Counter(res.negative.tolist())[1] / 20_000 - 0.5) < 0.02


@pytest.mark.parametrize(
    "ids, flags, strategy",
    [
        ([1, 1, 2, 2], [True] * 4, "O"),  # nobody has an organ-absent negative
        ([7, 7, 7], [True, False, True], "S"),  # one scan: no negative
        ([1, 2, 3], [True, False, True], "S"),  # one slice per scan: no positive
        ([1, 1, 2, 2], [True, True, False, False], "M"),  # no scan mixes both flags
        ([5], [True], "O"),  # a single slice
    ],
)
def test_tables_without_any_valid_pair_skip_everything(ids, flags, strategy):
    res = select_examples(ids, flags, strategy, np.random.default_rng(0))
    assert len(res.anchor) == len(res.positive) == len(res.negative) == 0
    assert res.skipped == len(ids)


def test_s_needs_no_organ_flags_and_flags_may_be_numbers():
    ids = np.repeat(np.arange(4), 5)
    r_none = select_examples(ids, None, "S", np.random.default_rng(3))
    r_bool = select_examples(ids, np.ones(20, dtype=bool), "S", np.random.default_rng(3))
    np.testing.assert_array_equal(r_none.positive, r_bool.positive)
    flags = np.tile([0, 1], 10)
    for as_type in (np.int64, np.uint8, np.float32):
        r = select_examples(ids, flags.astype(as_type), "M", np.random.default_rng(5))
        ref = select_examples(ids, flags.astype(bool), "M", np.random.default_rng(5))
        np.testing.assert_array_equal(r.positive, ref.positive)
        np.testing.assert_array_equal(r.negative, ref.negative)


@pytest.mark.parametrize("alias", ["m", " M ", "PolyCL-M", "polycl-m"])
def test_strategy_aliases(alias):
    a = select_examples(HAND_IDS, HAND_ORGAN, alias, np.random.default_rng(0))
    b = select_examples(HAND_IDS, HAND_ORGAN, "M", np.random.default_rng(0))
    np.testing.assert_array_equal(a.positive, b.positive)


def test_empty_anchor_subset_gives_empty_triplets():
    res = select_examples(HAND_IDS, HAND_ORGAN, "O", np.random.default_rng(0), anchors=[])
    assert res.anchor.dtype == np.int64 and len(res.anchor) == 0 and res.skipped == 0


def test_100k_slices_vectorised():
    rng = np.random.default_rng(0)
    n = 100_000
    ids = np.repeat(np.arange(500), 200)
    rng.shuffle(ids)
    flags = rng.random(n) < 0.6
    for strategy in STRATEGIES:
        start = time.perf_counter()
        a, p, neg = select_examples(ids, flags, strategy, rng)
        assert time.perf_counter() - start < 5.0  # an N^2 method would take minutes
        assert len(a) == n  # every scan has both flags and many slices: nobody is skipped
        assert (p != a).all()
        if strategy in ("S", "M"):
            assert (ids[p] == ids[a]).all()
        if strategy == "S":
            assert (ids[neg] != ids[a]).all()
        else:
            assert (flags[neg] != flags[a]).all()
        if strategy in ("O", "M"):
            assert (flags[p] == flags[a]).all()
        if strategy == "M":
            assert (ids[neg] == ids[a]).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(scan_ids=[1, 1, 2], has_organ=[True, False]), "has_organ has 2 entries but scan_ids has 3"),
        (dict(scan_ids=[], has_organ=[]), "empty"),
        (dict(strategy="X"), "unknown strategy 'X'"),
        (dict(strategy="SO"), "unknown strategy"),
        (dict(strategy=1), "strategy must be one of"),
        (dict(has_organ=[0, 1, 2, 0]), "only 0 / 1.*got 2 at slice 2"),
        (dict(has_organ=[0.0, 0.5, 1.0, 1.0]), "only 0 / 1"),
        (dict(has_organ=[0.0, np.nan, 1.0, 1.0]), "only 0 / 1"),
        (dict(has_organ=["yes", "no", "no", "yes"]), "has_organ must be booleans"),
        (dict(has_organ=[[True, False, True, False]]), "has_organ must be 1-D"),
        (dict(has_organ=None), "strategy O needs has_organ"),
        (dict(scan_ids=[[1, 1], [2, 2]]), "scan_ids must be 1-D"),
        (dict(scan_ids=[1.0, 1.0, 2.0, np.nan]), "integers or strings, got dtype float64"),
        (dict(scan_ids=[True, True, False, False]), "integers or strings"),
        (dict(scan_ids=np.array([1, "a", None, 2], dtype=object)), "one comparable type"),
        (dict(anchors=[0, 4]), r"anchor index 4 is outside \[0, 4\)"),
        (dict(anchors=[-1]), "anchor index -1 is outside"),
        (dict(anchors=[0.0, 1.0]), "integer slice indices"),
        (dict(anchors=[True, False, True, False]), "np.flatnonzero"),
        (dict(anchors=[[0, 1]]), "anchors must be a 1-D"),
    ],
)
def test_input_errors_are_clear(kwargs, match):
    args = dict(scan_ids=[1, 1, 2, 2], has_organ=[True, False, True, False], strategy="O",
                rng=np.random.default_rng(0))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        select_examples(**args)


@pytest.mark.parametrize("rng", [0, np.random.RandomState(0), None])
def test_rng_must_be_a_generator(rng):
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        select_examples([1, 1, 2, 2], [True, False, True, False], "S", rng)


@settings(max_examples=100, deadline=None)
@given(table=slice_tables(), seed=st.integers(0, 2**32 - 1))
def test_m_negative_from_another_scan_like_the_released_code(table, seed):
    ids, flags, anchors = table
    ids, flags = np.asarray(ids), np.asarray(flags).astype(bool)
    t = select_examples(ids, flags, "M", np.random.default_rng(seed), anchors, m_negative="other_scan")
    for a, p, n in zip(*t):
        assert ids[p] == ids[a] and flags[p] == flags[a] and p != a
        assert ids[n] != ids[a] and flags[n] != flags[a]
    asked = np.arange(len(ids)) if anchors is None else np.asarray(anchors, dtype=np.int64)
    possible = [((ids == ids[a]) & (flags == flags[a])).sum() > 1 and ((ids != ids[a]) & (flags != flags[a])).any()
                for a in asked]
    assert t.anchor.tolist() == [a for a, ok in zip(asked.tolist(), possible) if ok]
    assert t.skipped_anchors.tolist() == [a for a, ok in zip(asked.tolist(), possible) if not ok]


def test_m_negative_option_is_checked():
    with pytest.raises(ValueError, match="m_negative"):
        select_examples([0, 0], [0, 1], "M", np.random.default_rng(0), m_negative="anywhere")
