"""`--retry-failed --reason` takes a failure by the CRM's code, part of its text, or the word
`leadscore status` shows for an expected refusal; a converted, merged or deleted record's refusal
is not one an admin can fix."""

from __future__ import annotations

import pytest

from connectors.errors import failure_matches, fixable, unexpected_failures

INACTIVE = "INACTIVE_OWNER_OR_USER: operation performed with inactive user [005x] as owner of task"
RULE = "FIELD_CUSTOM_VALIDATION_EXCEPTION: Rating must be set before the lead is worked"


@pytest.mark.parametrize(("error", "reason", "matches"), [
    (INACTIVE, "INACTIVE_OWNER_OR_USER", True),
    (INACTIVE, "inactive_owner", True),  # as `leadscore status` words it
    (INACTIVE, "INACTIVE_OWNER", True),  # a part of the code
    (INACTIVE, "validation_rule", False),
    (RULE, "validation_rule", True),
    (RULE, "Rating must be set", True),  # a part of the CRM's message
    (RULE, "inactive_owner", False),
    (None, "inactive_owner", False),
    (INACTIVE, "  ", False),  # an empty reason names nothing
])
def test_a_reason_names_a_failure_by_code_text_or_status_word(error: str | None, reason: str, matches: bool) -> None:
    assert failure_matches(error, reason) is matches


def test_record_state_refusals_are_not_fixable() -> None:
    assert fixable(INACTIVE) and fixable(RULE) and fixable("HTTP 400: bad request") and fixable("INVALID_FIELD")
    assert not any(fixable(code) for code in ("CANNOT_UPDATE_CONVERTED_LEAD", "MERGED", "ENTITY_IS_DELETED",
                                              "LEAD_DELETED: the lead is gone from the store"))


def test_only_failures_a_healthy_org_does_not_refuse_are_to_fix() -> None:
    counts = {"FIELD_CUSTOM_VALIDATION_EXCEPTION": 4, "INACTIVE_OWNER_OR_USER": 2, "ENTITY_IS_DELETED": 1,
              "PROPERTY_DOESNT_EXIST": 20, "UNABLE_TO_LOCK_ROW (gave up after 5 attempts)": 3, "NO_TIER_WRITE": 1,
              "INVALID_FIELD": 0}
    assert unexpected_failures(counts) == {"PROPERTY_DOESNT_EXIST": 20, "NO_TIER_WRITE": 1,
                                           "UNABLE_TO_LOCK_ROW (gave up after 5 attempts)": 3}
    assert unexpected_failures({"FIELD_CUSTOM_VALIDATION_EXCEPTION": 111}) == {}
