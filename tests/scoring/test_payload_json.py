"""The texts a score write stores and hashes: the canonical JSON of its payload and the compact
JSON of its reasons, the same as the json module's encoders give."""

from __future__ import annotations

import json

import pytest

from scoring.score_writes import json_list, payload_hash, payload_json

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
