"""The texts a score write stores and hashes: the canonical JSON of its payload and the compact
JSON of its reasons, the same as the json module's encoders give."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from scoring.score_writes import json_list, outbox_payload, payload_hash, payload_json, score_payload_json

PAYLOADS = [
    {"score": 7, "tier": "D", "reasons": "+ Fit: VP-level title — \"quoted\"\ttab; - Engagement: ü \\ /",
     "model": "catboost-20261201-1", "scored_at": "2026-12-01T12:00:00+00:00", "likelihood": 12.3,
     "fit": 4, "engagement": 55, "score_change": -3},
    {"score": 99, "tier": "A", "reasons": "", "model": "m", "scored_at": "2026-12-01T12:00:00+00:00"},
    {"score": 1, "tier": "B", "reasons": "\u2028 line\nbreak \x00 nul", "model": "m", "scored_at": "x",
     "likelihood": 0.1 + 0.2, "score_change": 0},
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payload_text_is_the_canonical_json(payload: dict[str, object]) -> None:
    expected = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert payload_json(payload) == expected
    assert payload_json(dict(reversed(list(payload.items())))) == expected  # key order does not matter
    assert json.loads(payload_json(payload)) == payload
    assert payload_hash(payload) == payload_hash(payload_json(payload))


def test_reasons_text_is_their_compact_json() -> None:
    for reasons in ([], ["+ Fit: Industry: Software"], ["- a \"b\"", "+ ü\n\\", "x" * 300]):
        assert json_list(reasons) == json.dumps(reasons, separators=(",", ":"), ensure_ascii=False)
        assert json_list(tuple(reasons)) == json_list(reasons)


REASONS = [[], ["+ Fit: VP-level title — \"quoted\"\ttab"], ["- Engagement: ü \\ /", "\u2028 line\nbreak \x00"],
           ["x" * 300, "y" * 300]]  # the last too long for the field: join_reasons cuts it


@pytest.mark.parametrize("reasons", REASONS)
@pytest.mark.parametrize("likelihood", [0.1 + 0.2, 12.0, 1e-7, 99.99999, math.nan, math.inf])
def test_score_payload_text_equals_the_payload_json(reasons: list[str], likelihood: float) -> None:
    """The text a scoring run writes straight from the values is the canonical JSON of the dict."""
    for when in (datetime(2026, 12, 1, 12, 0, 0, 999, tzinfo=UTC),
                 datetime(2026, 12, 1, 7, 0, tzinfo=timezone(timedelta(hours=-5)))):
        # None: a lead's first score, whose change is left out (blank in the CRM), not 0.
        for model, tier, change in (("catboost-20261201-1", "A", -3), ("m \"ü\"", "D", 0), ("", "B", 42),
                                    ("m", "C", None)):
            expected = payload_json(outbox_payload(7, tier, reasons, model, when, likelihood=likelihood, fit=4,
                                                   engagement=55, score_change=change))
            got = score_payload_json(7, tier, reasons, model, when, likelihood=likelihood, fit=4, engagement=55,
                                     score_change=change)
            assert got == expected
            assert payload_hash(got) == payload_hash(expected)
            assert ("score_change" in json.loads(got)) is (change is not None)
    # A re-tier's row has no sub-scores: those keys are left out, as outbox_payload leaves them.
    assert score_payload_json(7, "C", reasons, "m", when, likelihood=likelihood, fit=None, engagement=None,
                              score_change=0) == payload_json(outbox_payload(7, "C", reasons, "m", when,
                                                                             likelihood=likelihood, score_change=0))
