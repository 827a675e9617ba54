"""The SOQL subset: parsing, literal types, operators, ordering and error codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from crmsim.model import Owner, SimClock
from crmsim.salesforce.soql import SoqlError, compile_query, parse, parse_datetime_literal, sort_rows
from crmsim.salesforce.store import SalesforceStore
from crmsim.salesforce.testing import T0, person


@pytest.fixture(scope="module")
def store() -> SalesforceStore:
    store = SalesforceStore(SimClock(T0), seed=3)
    store.put_owner(Owner("U001", "Ann Owner", "ann@acme.example"))
    for i in range(6):
        store.clock.set(T0 + timedelta(seconds=i))  # Salesforce stamps are whole seconds
        store.put_person(person(i, industry=None if i % 3 == 0 else "Technology", title=f"Title'{i}",
                                employees=i * 10))
    return store


def _run(store: SalesforceStore, soql: str) -> list[int]:
    def lookup(record_id: str) -> dict | None:
        rec = store.get(record_id)
        return None if rec is None else rec.values

    compiled = compile_query(soql, store.fields, lookup)
    rows = [r.values for r in store.records[compiled.sobject].values() if compiled.predicate(r.values)]
    sort_rows(rows, compiled.order, lambda v: v)
    return [int(v["FirstName"].removeprefix("First")) for v in rows][: compiled.limit]


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        # SOQL ignores the fraction of a second.
        ("2024-05-01T10:00:00.5Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T10:00:00.123456+00:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T05:00:00.000-0500", datetime(2024, 5, 1, 10, tzinfo=UTC)),
    ],
)
def test_datetime_literals(literal: str, expected: datetime) -> None:
    assert parse_datetime_literal(literal) == expected


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("SystemModstamp > 2024-05-01T10:00:02Z", [3, 4, 5]),
        ("SystemModstamp >= 2024-05-01T10:00:02Z AND SystemModstamp < 2024-05-01T10:00:04+00:00", [2, 3]),
        ("SystemModstamp = 2024-05-01T12:00:01+0200", [1]),
        ("SystemModstamp = 2024-05-01T10:00:01.999Z", [1]),  # the fraction is ignored
        ("Industry = null", [0, 3]),
        ("Industry != 'technology'", [0, 3]),  # != keeps nulls; string = is case-insensitive
        ("NOT (Industry = 'Technology' OR NumberOfEmployees < 20)", [3]),
        ("NumberOfEmployees IN (10, 20) OR Title LIKE 'title\\'5'", [1, 2, 5]),
        ("FirstName NOT IN ('First1', 'First2') AND NumberOfEmployees <= 30", [0, 3]),
        ("Email LIKE 'P4@%'", [4]),
        ("IsDeleted = false AND IsConverted = false AND CreatedDate < 2024-05-02T00:00:00Z", [0, 1, 2, 3, 4, 5]),
        ("Owner.Name = 'Ann Owner' AND NumberOfEmployees > 40", [5]),
    ],
)
def test_where_clauses(store: SalesforceStore, where: str, expected: list[int]) -> None:
    assert sorted(_run(store, f"SELECT Id FROM Lead WHERE {where}")) == expected


def test_order_by_several_keys_and_nulls(store: SalesforceStore) -> None:
    assert _run(store, "SELECT Id FROM Lead ORDER BY Industry, NumberOfEmployees DESC") == [3, 0, 5, 4, 2, 1]
    assert _run(store, "SELECT Id FROM Lead ORDER BY Industry DESC, NumberOfEmployees DESC") == [5, 4, 2, 1, 3, 0]
    assert _run(store, "SELECT Id FROM Lead ORDER BY Industry, NumberOfEmployees") == [0, 3, 1, 2, 4, 5]
    assert _run(store, "SELECT Id FROM Lead ORDER BY Industry NULLS LAST, Email") == [1, 2, 4, 5, 0, 3]
    assert _run(store, "SELECT Id FROM Lead ORDER BY Industry DESC NULLS FIRST, Id LIMIT 3") == [0, 3, 1]
    assert _run(store, "SELECT Id FROM Lead ORDER BY Industry ASC NULLS LAST, SystemModstamp DESC") == \
        [5, 4, 2, 1, 3, 0]


@pytest.mark.parametrize(
    ("soql", "code", "fragment"),
    [
        ("SELECT Id FROM Lead WHERE", "MALFORMED_QUERY", "unexpected token: <EOF>"),
        ("SELECT Id FROM Lead WHERE Email = \"x\"", "MALFORMED_QUERY", "unexpected token"),
        ("SELECT Id FROM Lead WHERE IsDeleted = false AND Email = 'a' OR Email = 'b'", "MALFORMED_QUERY",
         "unexpected token: 'OR'"),
        ("SELECT Id FROM Lead LIMIT x", "MALFORMED_QUERY", "Row:1:Column:27"),
        ("SELECT Idx FROM Lead", "INVALID_FIELD", "No such column 'Idx' on entity 'Lead'"),
        ("SELECT Id FROM Leads", "INVALID_TYPE", "sObject type 'Leads' is not supported"),
        ("SELECT Id FROM Lead WHERE CreatedDate > 2024-01-01", "INVALID_FIELD", "must be of type dateTime"),
        ("SELECT Id FROM Lead WHERE NumberOfEmployees = '5'", "INVALID_FIELD", "must be of type int"),
        ("SELECT Id FROM Lead WHERE Email = 5", "INVALID_FIELD", "should be enclosed in quotes"),
        ("SELECT Id FROM Lead WHERE Boss.Name = 'x'", "INVALID_FIELD", "Didn't understand relationship 'Boss'"),
    ],
)
def test_errors(store: SalesforceStore, soql: str, code: str, fragment: str) -> None:
    with pytest.raises(SoqlError) as info:
        _run(store, soql)
    assert info.value.code == code
    assert fragment in info.value.message


def test_parse_count_and_id_literal_normalisation(store: SalesforceStore) -> None:
    assert parse("SELECT COUNT() FROM Lead").count == "COUNT()"
    assert parse("SELECT Id FROM Group WHERE Type = 'Queue'").sobject == "Group"
    lead_id = store.crm_id("P000002")
    assert lead_id is not None
    assert _run(store, f"SELECT Id FROM Lead WHERE Id = '{lead_id[:15]}'") == [2]
    assert _run(store, f"SELECT Id FROM Lead WHERE Id > '{lead_id}' ORDER BY Id") == [3, 4, 5]
