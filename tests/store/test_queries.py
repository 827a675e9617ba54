"""What `leadscore status` and the console count of a connection's leads: all, open, scored."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from store.models import LeadLifecycle, LeadScore
from store.queries import connection_activity, lead_totals
from tests.factories import make_connection, make_lead
from worker.cli.ops import _leads_words

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _score(session: Session, lead_id: int, *, current: bool) -> None:
    session.add(LeadScore(lead_id=lead_id, probability=0.5, score=50, tier="B", reasons=[], is_current=current,
                          scored_at=T0))
    session.flush()


def test_lead_totals_count_open_leads_with_a_current_score(any_session: Session) -> None:
    sf, hs = make_connection(any_session, "sf"), make_connection(any_session, "hs", kind="hubspot")
    make_connection(any_session, "empty")
    scored = make_lead(any_session, sf)
    _score(any_session, scored.id, current=False)
    _score(any_session, scored.id, current=True)  # two score rows, one lead
    waiting = make_lead(any_session, sf)
    _score(any_session, waiting.id, current=False)  # only history: not scored now
    converted = make_lead(any_session, sf, converted_at=T0)
    _score(any_session, converted.id, current=True)  # keeps its last score, but is not open
    make_lead(any_session, sf, is_deleted=True, lifecycle=LeadLifecycle.deleted)  # gone from the CRM
    make_lead(any_session, hs)

    totals = lead_totals(any_session)
    assert totals == {sf.id: {"leads": 3, "open": 2, "scored": 1}, hs.id: {"leads": 1, "open": 1, "scored": 0}}
    rows = {row["name"]: row for row in connection_activity(any_session)}
    assert [(rows[n]["leads"], rows[n]["open_leads"], rows[n]["scored_leads"]) for n in ("sf", "hs", "empty")] == [
        (3, 2, 1), (1, 1, 0), (0, 0, 0)]
    names = {sf.id: "sf", hs.id: "hs"}
    assert _leads_words(names, totals) == (
        "leads: hs 1 (1 open, 0 of them scored, 1 not yet: leadscore score); "
        "sf 3 (2 open, 1 of them scored, 1 not yet: leadscore score)")


def test_an_empty_store_says_so() -> None:
    assert _leads_words({1: "sf"}, {}) == "leads: none in the store yet (leadscore sync)"
