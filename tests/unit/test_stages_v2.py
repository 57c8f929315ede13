"""The real stages against the model of CONTRACT section 3 (tests/unit/model.py, strategies.py).

Generated v2 scenarios (feedback of every scale, tied answers, durations at the bucket edges, hostile
v2 values, ~130 days of history, T near a UTC midnight) through the worker's own stage functions
(pipeline.py), under every variation of test_core_model and with clocks crossing midnight.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from pipeline import check_all_variants, check_clock_moves

strategies = pytest.importorskip("strategies", reason="the v2 strategies come with the model of section 3")


@strategies.examples(150)
@given(strategies.scenarios(identical_duplicates=True, v2=True))
def test_v2_equals_model_order_free(sc: strategies.Scenario) -> None:
    check_all_variants(sc, order_free=True)


@strategies.examples(60)
@given(strategies.scenarios(identical_duplicates=False, v2=True))
def test_v2_equals_model_conflicting_duplicates_in_arrival_order(sc: strategies.Scenario) -> None:
    check_all_variants(sc, order_free=False)


@strategies.examples(60)
@given(strategies.scenarios(identical_duplicates=True, max_size=30, v2=True))
def test_v2_clocks_crossing_midnight(sc: strategies.Scenario) -> None:
    check_clock_moves(sc)
