"""The exactness data set itself (no broker): what it contains, and its two expectations agreeing."""

from __future__ import annotations

from collections import Counter

from tests.integration.dataset import (
    DURATION_EDGES_MS,
    SCALES,
    build_dataset,
    expected_model_samples,
    expected_samples,
)
from tests.unit import model

NOW_MS = 1_717_200_000_000 + 23 * 3_600_000 + 58 * 60_000  # 2024-06-01T23:58Z: D+1 within the tolerance
NOW_NS = NOW_MS * 1_000_000
DAY_NS = 86_400 * 10**9


def test_model_and_core_agree_on_the_v1_data_set() -> None:
    msgs = build_dataset(n_users=1500, seed=7, now_ms=NOW_MS, v2=False)
    scrape = NOW_NS + 10**9
    assert model.v1_series(expected_model_samples(msgs, NOW_NS, scrape)) == expected_samples(
        msgs, NOW_NS, scrape
    )


def test_v2_data_set_has_what_the_acceptance_data_has() -> None:
    msgs = build_dataset(n_users=1500, seed=7, now_ms=NOW_MS)
    results = model.classify([(i, m.value) for i, m in enumerate(msgs)], NOW_NS)
    accepted = [e for o, e in results if o == "accepted" and e is not None]
    answers = [e for e in accepted if e.type == "feedback"]
    for scale in SCALES:
        assert any(e.scale == scale and e.feature is None for e in answers), scale
        assert any(e.scale == scale and e.feature is not None for e in answers), scale
    same_instant = Counter((e.user_id, e.scale, e.feature, e.ts_ns) for e in answers)
    tied = {k for k, n in same_instant.items() if n > 1}
    assert len(
        {
            (e.user_id, e.scale, e.feature, e.ts_ns, e.score)
            for e in answers
            if (e.user_id, e.scale, e.feature, e.ts_ns) in tied
        }
    ) > len(tied), "no tie with two scores"
    durations = {e.duration_ms for e in accepted if e.duration_ms is not None}
    assert set(DURATION_EDGES_MS) <= durations
    assert min(e.ts_ns for e in accepted) < NOW_NS - 125 * DAY_NS  # ~130 days of history
    assert any(e.ts_ns >= (NOW_NS // DAY_NS + 1) * DAY_NS for e in accepted)  # dated D+1
    invalid = [m.value for m, (o, _) in zip(msgs, results, strict=True) if o == "invalid" and m.value]
    assert sum(b'"feedback"' in v for v in invalid) > 10 and sum(b'"duration_ms"' in v for v in invalid) > 5

    s = expected_model_samples(msgs, NOW_NS, NOW_NS)
    for period in ("1d", "7d", "30d"):
        for state in ("new", "returning", "resurrecting", "dormant"):
            assert (
                s[("adoptstream_lifecycle_users", (("feature", "*"), ("period", period), ("state", state)))]
                > 0
            )
    for days in range(1, 8):
        assert (
            s[("adoptstream_active_days_users", (("days", str(days)), ("feature", "*"), ("period", "7d")))]
            > 0
        )
