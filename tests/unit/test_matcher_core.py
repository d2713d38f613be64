"""Table-driven cases for the pure matcher core (``matcher.core.match_pool``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from matcher.core import (
    Constraints,
    MatchParams,
    MatchResult,
    PoolSnapshot,
    RecentPairing,
    UnmatchedReason,
    match_pool,
)
from mosaic.errors import ValidationError

pytestmark = pytest.mark.unit

DAY = 86_400.0


def unit(angle_deg: float) -> list[float]:
    a = np.deg2rad(angle_deg)
    return [float(np.cos(a)), float(np.sin(a))]


@dataclass(frozen=True)
class Case:
    users: dict[str, tuple[list[float], float]]  # id -> (vector, wait days)
    constraints: Constraints = field(default_factory=Constraints)
    params: MatchParams = field(default_factory=MatchParams)

    def pool(self) -> PoolSnapshot:
        ids = tuple(self.users)
        vectors = np.asarray([self.users[u][0] for u in ids], dtype=np.float32).reshape(
            len(ids), -1 if ids else 2
        )
        waits = np.asarray([self.users[u][1] * DAY for u in ids], dtype=np.float64)
        return PoolSnapshot(ids, vectors, waits)

    def run(self) -> MatchResult:
        return match_pool(self.pool(), self.constraints, self.params)


def pairs_of(result: MatchResult) -> set[tuple[str, str]]:
    return {(p.user_a, p.user_b) for p in result.pairs}


def reasons_of(result: MatchResult) -> dict[str, UnmatchedReason]:
    return {u.user_id: u.reason for u in result.unmatched}


FOUR = {"a": (unit(0), 1.0), "b": (unit(5), 1.0), "c": (unit(90), 1.0), "d": (unit(120), 1.0)}
# Without a-b and c-d: a-d + b-c (-0.413) beats a-c + b-d (-0.423).
NR = UnmatchedReason


@pytest.mark.parametrize(
    ("case", "pairs", "reasons"),
    [
        pytest.param(Case({}), set(), {}, id="empty-pool"),
        pytest.param(
            Case({"a": (unit(0), 1.0)}), set(), {"a": NR.NO_ALLOWED_PARTNER}, id="one-user"
        ),
        pytest.param(Case(FOUR), {("a", "b"), ("c", "d")}, {}, id="two-clusters"),
        pytest.param(
            Case({**FOUR, "e": (unit(60), 0.5)}),
            {("a", "b"), ("c", "d")},
            {"e": NR.ODD_ONE_OUT},
            id="odd-pool-shortest-wait-left-out",
        ),
        pytest.param(
            Case({"a": (unit(0), 9.0), "b": (unit(1), 1.0), "c": (unit(60), 5.0)}),
            {("a", "c")},
            {"b": NR.ODD_ONE_OUT},
            id="wait-priority-beats-similarity",
        ),
        pytest.param(
            Case({"a": (unit(0), 2.0), "b": (unit(1), 2.0), "c": (unit(2), 2.0)}),
            {("a", "b")},
            {"c": NR.ODD_ONE_OUT},
            id="equal-waits-larger-id-left-out",
        ),
        pytest.param(
            Case(FOUR, Constraints(blocks=(("b", "a"), ("d", "c")))),
            {("a", "d"), ("b", "c")},
            {},
            id="blocks-either-direction",
        ),
        pytest.param(
            Case(
                {"a": (unit(0), 1.0), "b": (unit(1), 1.0), "c": (unit(2), 1.0)},
                Constraints(blocks=(("a", "b"), ("c", "a"), ("b", "c"))),
            ),
            set(),
            {u: NR.NO_ALLOWED_PARTNER for u in "abc"},
            id="all-blocked",
        ),
        pytest.param(
            Case(
                FOUR, Constraints(recent=(RecentPairing("a", "b", 1), RecentPairing("c", "d", 3)))
            ),
            {("a", "d"), ("b", "c")},
            {},
            id="history-cooldown",
        ),
        pytest.param(
            Case(
                FOUR, Constraints(recent=(RecentPairing("a", "b", 4), RecentPairing("c", "d", 9)))
            ),
            {("a", "b"), ("c", "d")},
            {},
            id="history-older-than-cooldown-ignored",
        ),
        pytest.param(
            Case(
                {"a": (unit(0), 1.0), "b": (unit(1), 1.0), "c": (unit(90), 8.0)},
                params=MatchParams(min_similarity=0.5),
            ),
            {("a", "b")},
            {"c": NR.BELOW_MIN_SIMILARITY},
            id="min-similarity-reason",
        ),
        pytest.param(
            Case(
                {
                    "hub": (unit(0), 1.0),
                    "x": (unit(10), 3.0),
                    "y": (unit(20), 2.0),
                    "z": (unit(30), 9.0),
                },
                Constraints(blocks=(("x", "y"), ("x", "z"), ("y", "z"))),
            ),
            {("hub", "z")},
            {"x": NR.PARTNERS_TAKEN, "y": NR.PARTNERS_TAKEN},
            id="star-longest-waiting-gets-the-hub",
        ),
        pytest.param(
            Case(
                {"a": (unit(0), 1.0), "b": (unit(0), 1.0), "c": (unit(0), 1.0), "d": (unit(0), 1.0)}
            ),
            {("a", "b"), ("c", "d")},
            {},
            id="ties-broken-by-user-id",
        ),
    ],
)
def test_pairs_and_reasons(
    case: Case, pairs: set[tuple[str, str]], reasons: dict[str, UnmatchedReason]
) -> None:
    result = case.run()
    assert pairs_of(result) == pairs
    assert reasons_of(result) == reasons
    assert result.stats.pairs == len(pairs)


@pytest.mark.parametrize(
    ("ids", "vectors", "message"),
    [
        pytest.param(
            ("a", "a"), [[1.0, 0.0], [0.0, 1.0]], "duplicate user ids", id="duplicate-ids"
        ),
        pytest.param(("a", "b"), [[1.0, 0.0], [np.nan, 1.0]], "NaN", id="nan-vector"),
        pytest.param(("a", "b"), [[1.0, 0.0], [0.0, 0.0]], "all-zero", id="zero-vector"),
        pytest.param(("a", "b"), [[1.0, 0.0]], "shape", id="wrong-row-count"),
        pytest.param(("a", ""), [[1.0, 0.0], [0.0, 1.0]], "non-empty", id="empty-id"),
    ],
)
def test_bad_input_rejected(ids: tuple[str, ...], vectors: list[list[float]], message: str) -> None:
    pool = PoolSnapshot(ids, np.asarray(vectors, dtype=np.float32), np.zeros(len(ids)))
    with pytest.raises(ValidationError, match=message):
        match_pool(pool)


def test_score_is_cosine_plus_mean_saturated_wait_boost() -> None:
    pool = PoolSnapshot(
        ("a", "b"), np.asarray([unit(0), unit(60)], np.float32) * 7.0, np.asarray([14 * DAY, 0.0])
    )
    (pair,) = match_pool(pool).pairs
    assert pair.similarity == pytest.approx(0.5, abs=1e-6)
    assert pair.score == pytest.approx(0.5 + 0.1 * (1.0 + 0.0) / 2, abs=1e-6)


def test_standardize_makes_similarity_a_pool_z_score() -> None:
    rng = np.random.default_rng(3)
    base = rng.standard_normal(16)
    vectors = (base + 0.05 * rng.standard_normal((40, 16))).astype(np.float32)  # narrow band
    pool = PoolSnapshot(tuple(f"u{i:02d}" for i in range(40)), vectors, np.zeros(40))
    raw = match_pool(pool)
    z = match_pool(pool, params=MatchParams(standardize=True))
    assert pairs_of(raw) == pairs_of(z)  # an affine change of the similarity keeps the pairing
    mean, std = z.stats.similarity_mean, z.stats.similarity_std
    for p_raw, p_z in zip(raw.pairs, z.pairs, strict=True):
        assert p_z.similarity == pytest.approx((p_raw.similarity - mean) / std, rel=1e-4)
    assert 0.9 < mean < 1.0 and std < 0.05


def test_same_input_twice_gives_identical_output() -> None:
    from matcher.synthetic import clustered_pool

    pool = clustered_pool(301, 24, seed=11)
    one, two = match_pool(pool), match_pool(pool)
    assert one.pairs == two.pairs and one.unmatched == two.unmatched
