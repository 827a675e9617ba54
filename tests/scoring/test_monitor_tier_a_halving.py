"""Tier A's conversion halves in a World without drift: the early top-tier measure alerts within 21
days and never before (the scenario: tests/scoring/monitor_sim.py, ``run_halving``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scoring.monitoring.tier_conversion import MIN_EARLY_EXPECTED
from tests.scoring.monitor_sim import HALVING_DAY, HALVING_SEED, HalvingRun, run_halving, sim_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=(HALVING_SEED,), ids=lambda seed: f"seed{seed}")
def halving(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HalvingRun]:
    with sim_store(tmp_path_factory, "halving") as session:
        yield run_halving(session, int(request.param))


def test_tier_a_conversion_halving_alerts_within_21_days_and_not_before(halving: HalvingRun) -> None:
    assert halving.dropped > 20, "the scenario did not halve tier A's conversions"
    before = {d: a for d, a in halving.top_tier_alerts.items() if a and d < HALVING_DAY}
    assert before == {}, before
    # Judged, not silent, before the change: the early measure had enough tier-A leads then.
    judged = [d for d, e in halving.early.items() if d < HALVING_DAY and e.get("status") == "ok"]
    assert len(judged) >= 5 and all(halving.early[d]["expected"] >= MIN_EARLY_EXPECTED for d in judged), halving.early
    after = sorted(d for d, a in halving.top_tier_alerts.items() if a and HALVING_DAY <= d <= HALVING_DAY + 21)
    assert after, {d - HALVING_DAY: e for d, e in halving.early.items() if d >= HALVING_DAY}
