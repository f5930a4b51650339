"""mAP and mP@k agree with examples worked out by hand and with a plain reading of the definition."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gemsearch.errors import EvaluationError
from gemsearch.metrics import (
    QueryGroundTruth,
    RevisitedGroundTruth,
    compute_ap,
    compute_map,
    compute_map_revisited,
    format_score,
    format_score_table,
    rank_by_inner_product,
    rank_by_similarity,
)

# Ranking [5, 2, 7, 1, 0, 3, 4, 6], ok = {2, 1, 6}: positives at ranks 1, 3, 7 (0-based), 3 positives.
#   j=0, r=1: precision before 0/1 = 0,   after 1/2: (0 + 1/2)/2 * 1/3   = 1/12
#   j=1, r=3: precision before 1/3,       after 2/4: (1/3 + 1/2)/2 * 1/3 = 5/36
#   j=2, r=7: precision before 2/7,       after 3/8: (2/7 + 3/8)/2 * 1/3 = 37/336
#   AP = 84/1008 + 140/1008 + 111/1008 = 335/1008
# Positions 1-based 2, 4, 8 (last positive at 8):
#   P@1 = 0/1, P@5 = 2/5, P@10 = (k capped at 8) 3/8
PLAIN = ([5, 2, 7, 1, 0, 3, 4, 6], QueryGroundTruth(ok=(2, 1, 6)))
PLAIN_AP, PLAIN_P = 335 / 1008, {1: 0.0, 5: 2 / 5, 10: 3 / 8}

# Ranking [4, 0, 3, 2, 1], ok = {0, 1}, junk = {4, 2}: without the junk the ranking is [0, 3, 1],
# positives at ranks 0 and 2.
#   j=0, r=0: precision before 1 (nothing retrieved yet), after 1/1: (1 + 1)/2 * 1/2 = 1/2
#   j=1, r=2: precision before 1/2,                      after 2/3: (1/2 + 2/3)/2 * 1/2 = 7/24
#   AP = 12/24 + 7/24 = 19/24   (were the junk images misses: ranks 1, 4 -> 1/8 + 13/80 = 0.2875)
# Positions 1-based 1, 3: P@1 = 1/1, P@5 = P@10 = (k capped at 3) 2/3
JUNK = ([4, 0, 3, 2, 1], QueryGroundTruth(ok=(0, 1), junk=(4, 2)))
JUNK_AP, JUNK_P = 19 / 24, {1: 1.0, 5: 2 / 3, 10: 2 / 3}


def test_ap_and_precision_by_hand() -> None:
    score = compute_map([np.array(PLAIN[0])], [PLAIN[1]])
    assert score.mean_ap == pytest.approx(PLAIN_AP)
    assert score.mp_at == pytest.approx(PLAIN_P)
    assert compute_ap([1, 3, 7], 3) == pytest.approx(PLAIN_AP)


def test_junk_images_are_removed_from_the_ranking() -> None:
    score = compute_map([np.array(JUNK[0])], [JUNK[1]])
    assert score.mean_ap == pytest.approx(JUNK_AP)
    assert score.mp_at == pytest.approx(JUNK_P)
    as_misses = compute_map([np.array(JUNK[0])], [QueryGroundTruth(ok=(0, 1))])
    assert as_misses.mean_ap == pytest.approx(1 / 8 + 13 / 80)


def test_map_and_mp_average_over_queries() -> None:
    score = compute_map(np.array([PLAIN[0], [*JUNK[0], 5, 6, 7]]), [PLAIN[1], JUNK[1]])
    assert score.ap == pytest.approx((PLAIN_AP, JUNK_AP))
    assert score.mean_ap == pytest.approx((335 / 1008 + 19 / 24) / 2)
    # mP@5 = (2/5 + 2/3) / 2 = 8/15
    assert score.mp_at[5] == pytest.approx(8 / 15)
    assert score.p_at[1] == pytest.approx(JUNK_P)


def test_query_without_positives_is_left_out_as_in_cirtorch() -> None:
    score = compute_map(
        [np.array(JUNK[0]), np.array([0, 1, 2])], [JUNK[1], QueryGroundTruth(ok=(), junk=(1,))]
    )
    assert score.ap[1] is None and score.p_at[1] is None
    assert score.mean_ap == pytest.approx(JUNK_AP) and score.n_evaluated == 1
    with pytest.raises(EvaluationError, match="none of the 1 queries"):
        compute_map([np.array([0, 1])], [QueryGroundTruth(ok=())])


def test_positives_missing_from_a_truncated_ranking() -> None:
    # ok = {0, 5}, only 0 retrieved, at rank 0: (1 + 1)/2 * 1/2 = 1/2; P@k capped at 1: 1/1
    score = compute_map([np.array([0, 9])], [QueryGroundTruth(ok=(0, 5))])
    assert score.mean_ap == pytest.approx(0.5) and score.mp_at == pytest.approx({1: 1, 5: 1, 10: 1})
    nothing = compute_map([np.array([7, 9])], [QueryGroundTruth(ok=(0, 5))])
    assert nothing.mean_ap == 0 and nothing.mp_at == {1: 0, 5: 0, 10: 0}


# Ranking [3, 1, 4, 0, 2, 5], easy = {1, 5}, hard = {0}, junk = {4}.
# Easy   ok {1, 5},    junk {4, 0}:    ranking [3, 1, 2, 5], positives at 1, 3
#        AP = (0 + 1/2)/2 * 1/2 + (1/3 + 2/4)/2 * 1/2 = 1/8 + 5/24 = 1/3
#        1-based 2, 4: P@1 = 0, P@5 = P@10 = 2/4
# Medium ok {1, 5, 0}, junk {4}:       ranking [3, 1, 0, 2, 5], positives at 1, 2, 4
#        AP = (0 + 1/2)/6 + (1/2 + 2/3)/6 + (2/4 + 3/5)/6 = 15/180 + 35/180 + 33/180 = 83/180
#        1-based 2, 3, 5: P@1 = 0, P@5 = P@10 = 3/5
# Hard   ok {0},       junk {4, 1, 5}: ranking [3, 0, 2], positive at 1
#        AP = (0 + 1/2)/2 = 1/4; 1-based 2: P@1 = 0, P@5 = P@10 = 1/2
REVISITED = RevisitedGroundTruth(easy=(1, 5), hard=(0,), junk=(4,))
RANKING = np.array([[3, 1, 4, 0, 2, 5]])


def test_revisited_protocols_by_hand() -> None:
    score = compute_map_revisited(RANKING, [REVISITED])
    assert score.easy.mean_ap == pytest.approx(1 / 3)
    assert score.medium.mean_ap == pytest.approx(83 / 180)
    assert score["hard"].mean_ap == pytest.approx(1 / 4)
    assert score.easy.mp_at == pytest.approx({1: 0, 5: 1 / 2, 10: 1 / 2})
    assert score.medium.mp_at == pytest.approx({1: 0, 5: 3 / 5, 10: 3 / 5})
    assert score.hard.mp_at == pytest.approx({1: 0, 5: 1 / 2, 10: 1 / 2})
    assert REVISITED.protocol("easy") == QueryGroundTruth(ok=(1, 5), junk=(4, 0))


def test_cirtorch_ground_truth_dicts_and_column_ranks() -> None:
    # a gnd entry as in cirtorch's pickles: numpy arrays, plus the query box we ignore
    gnd = {"easy": np.array([1, 5]), "hard": np.array([0]), "junk": np.array([4]), "bbx": [0, 0, 9, 9]}
    ranks = RANKING.T  # cirtorch's (n_db, nq)
    assert compute_map_revisited(ranks.T, [gnd]) == compute_map_revisited(RANKING, [REVISITED])


def test_ranking_helpers() -> None:
    scores = np.array([[0.1, 0.5, 0.5, 0.2], [1.0, -1.0, 0.0, 0.0]])
    # ties keep database order
    assert rank_by_similarity(scores).tolist() == [[1, 2, 3, 0], [0, 2, 3, 1]]
    assert rank_by_similarity(scores, top_k=2).tolist() == [[1, 2], [0, 2]]
    q = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    db = np.array([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)  # (n, d) rows
    assert rank_by_inner_product(q, db).tolist() == [[1, 0, 2], [2, 0, 1]]
    with pytest.raises(EvaluationError, match="NaN"):
        rank_by_similarity([[np.nan, 1.0]])
    with pytest.raises(EvaluationError, match="top_k"):
        rank_by_similarity(scores, top_k=0)


@pytest.mark.parametrize(
    ("rankings", "match"),
    [
        ([np.array([0, 1])], "1 rankings for 2 queries"),
        ([np.array([0.0, 1.0]), np.array([0, 1])], "ranking 0 is not"),
        ([np.array([0, -1]), np.array([0, 1])], "negative"),
        ([np.array([0, 0]), np.array([0, 1])], "twice"),
    ],
)
def test_bad_rankings_are_refused(rankings: list[np.ndarray], match: str) -> None:
    gnd = [QueryGroundTruth(ok=(0,)), QueryGroundTruth(ok=(1,))]
    with pytest.raises(EvaluationError, match=match):
        compute_map(rankings, gnd)


def test_formatting_in_the_papers_style() -> None:
    revisited = compute_map_revisited(RANKING, [REVISITED])
    plain = compute_map([np.array(JUNK[0])], [JUNK[1]])
    assert format_score("ROxf", revisited, decimals=1) == "ROxf: mAP E 33.3 M 46.1 H 25.0"
    assert format_score("Oxford5k", plain, with_mp=True).splitlines() == [
        "Oxford5k: mAP 79.17",
        "Oxford5k: mP@1,5,10 100.00 66.67 66.67",
    ]
    table = format_score_table(
        {"GeM": {"Oxford5k": plain, "ROxf": revisited}, "GeM + Lw": {"Oxford5k": plain}}
    )
    assert table.splitlines() == [
        "| | Oxford5k | ROxf E | ROxf M | ROxf H |",
        "|---|---|---|---|---|",
        "| GeM | 79.17 | 33.33 | 46.11 | 25.00 |",
        "| GeM + Lw | 79.17 | - | - | - |",
    ]
    assert plain.as_eval_result("oxford5k").mp_at[5] == pytest.approx(2 / 3)


# --- oracle: walk the ranking, skip junk, add a trapezoid at every positive -----------------------


def _oracle(
    ranking: list[int], ok: set[int], junk: set[int], ks: tuple[int, ...]
) -> tuple[float, list[float]]:
    clean = [i for i in ranking if i not in junk]
    ap, hits, positions = 0.0, 0, []
    for rank, image in enumerate(clean):
        if image in ok:
            before = 1.0 if rank == 0 else hits / rank
            hits += 1
            ap += (before + hits / (rank + 1)) / 2 / len(ok)
            positions.append(rank + 1)
    if not positions:
        return ap, [0.0] * len(ks)
    caps = [min(positions[-1], k) for k in ks]
    return ap, [sum(p <= c for p in positions) / c for c in caps]


@st.composite
def _query(draw: st.DrawFn) -> tuple[list[int], set[int], set[int]]:
    n = draw(st.integers(1, 40))
    labels = draw(st.lists(st.sampled_from("onj"), min_size=n, max_size=n))  # ok, negative, junk
    ranking = draw(st.permutations(range(n)))
    kept = draw(st.integers(0, n))  # rankings may be truncated (top-k)
    ok = {i for i, c in enumerate(labels) if c == "o"} or {0}
    return list(ranking[:kept]), ok, {i for i, c in enumerate(labels) if c == "j"} - ok


@settings(max_examples=300, deadline=None)
@given(queries=st.lists(_query(), min_size=1, max_size=4))
def test_map_matches_the_oracle(queries: list[tuple[list[int], set[int], set[int]]]) -> None:
    ks = (1, 3, 5, 10)
    rankings = [np.array(r, dtype=np.int64) for r, _, _ in queries]
    score = compute_map(rankings, [QueryGroundTruth(ok=tuple(ok), junk=tuple(j)) for _, ok, j in queries], ks)
    expected = [_oracle(r, ok, j, ks) for r, ok, j in queries]
    assert score.ap == pytest.approx([ap for ap, _ in expected], abs=1e-12)
    got_p = [v for p in score.p_at if p for v in p.values()]
    assert got_p == pytest.approx([v for _, p in expected for v in p], abs=1e-12)
    assert score.mean_ap == pytest.approx(np.mean([ap for ap, _ in expected]), abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(relevant=st.lists(st.booleans(), min_size=1, max_size=60), missing=st.integers(0, 5))
def test_compute_ap_matches_the_oracle(relevant: list[bool], missing: int) -> None:
    ranks = [i for i, r in enumerate(relevant) if r]
    n_pos = len(ranks) + missing  # positives never retrieved
    if n_pos == 0:
        return
    ok = set(ranks) | {len(relevant) + i for i in range(missing)}
    expected, _ = _oracle(list(range(len(relevant))), ok, set(), (1,))
    assert compute_ap(ranks, n_pos) == pytest.approx(expected, abs=1e-12)


# --- argument checks and bookkeeping, at their boundaries -----------------------------------------


def test_compute_ap_refuses_ranks_that_cannot_be_positives() -> None:
    assert compute_ap([], 1) == 0.0 and compute_ap([0], 1) == 1.0
    for ranks, n_positives in [
        ([], 0),  # no positive at all
        ([0, 1, 2], 2),  # more found than there are
        ([-1, 2], 2),  # a negative rank
        ([3, 1], 2),  # not ascending
        ([1, 1], 2),  # the same rank twice
    ]:
        with pytest.raises(EvaluationError):
            compute_ap(ranks, n_positives)


def test_kappas_and_top_k_of_one_are_valid_and_below_refused() -> None:
    score = compute_map([np.array(PLAIN[0])], [PLAIN[1]], kappas=(1,))
    assert score.mp_at == {1: 0.0}
    with pytest.raises(EvaluationError, match="kappas must be positive"):
        compute_map([np.array(PLAIN[0])], [PLAIN[1]], kappas=(0, 5))
    assert rank_by_similarity([[0.1, 0.9, 0.5]], top_k=1).tolist() == [[1]]


def test_inner_product_ranking_checks_the_descriptor_dimension() -> None:
    q = np.array([[1.0, 0.0, 0.0]])  # 1 query of dimension 3
    db = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    assert rank_by_inner_product(q, db).tolist() == [[1, 2, 0, 3]]
    with pytest.raises(EvaluationError, match="query dimension 2 != database dimension 3"):
        rank_by_inner_product(np.ones((3, 2)), db)


def test_queries_without_positives_are_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    rankings = [np.array(PLAIN[0]), np.array(JUNK[0]), np.array([0, 1])]
    gnd = [PLAIN[1], JUNK[1], QueryGroundTruth(ok=())]
    with caplog.at_level("INFO", logger="gemsearch.metrics"):
        score = compute_map(rankings, gnd)
    assert score.n_evaluated == 2 and score.ap[2] is None
    assert "1 of 3 queries have no positive image" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="gemsearch.metrics"):
        compute_map(rankings[:2], gnd[:2])
    assert "no positive image" not in caplog.text


def test_scores_and_ground_truth_are_immutable_and_eval_results_single_scale_by_default() -> None:
    score = compute_map([np.array(PLAIN[0])], [PLAIN[1]])
    revisited = compute_map_revisited(RANKING, [REVISITED])
    for model, field in [(score, "mean_ap"), (revisited, "easy"), (PLAIN[1], "ok"), (REVISITED, "junk")]:
        with pytest.raises(ValueError):
            setattr(model, field, getattr(model, field))
    result = score.as_eval_result("oxford5k")
    assert (result.protocol, result.multiscale) == ("standard", False)
    assert score.as_eval_result("roxford5k", "medium", multiscale=True).multiscale is True
