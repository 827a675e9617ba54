"""Normalisation, timestamp parsing and error mapping: pure functions, parametrised tables."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import requests
import urllib3
from hubspot.crm.objects.exceptions import ApiException, ServiceException
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
)

from connectors.errors import AuthError, BadRecord, FatalCRMError, QuotaExhaustedError, RetriableCRMError
from connectors.hubspot.client import map_hubspot_error
from connectors.normalise import clean_email, clean_employees, clean_revenue, clean_text, company_key
from connectors.salesforce.client import map_salesforce_error
from connectors.salesforce.records import lead_record
from connectors.timeparse import parse_crm_datetime, parse_http_date
from scoring import personas


@pytest.mark.parametrize(("value", "expected"), [
    ("2024-05-01T10:00:00.000+0000", datetime(2024, 5, 1, 10, tzinfo=UTC)),
    ("2024-05-01T12:00:00.500+0200", datetime(2024, 5, 1, 10, 0, 0, 500_000, tzinfo=UTC)),
    ("2024-05-01T10:00:00.123Z", datetime(2024, 5, 1, 10, 0, 0, 123_000, tzinfo=UTC)),
    ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
    ("1714557600000", datetime(2024, 5, 1, 10, tzinfo=UTC)),
    (1714557600000, datetime(2024, 5, 1, 10, tzinfo=UTC)),
])
def test_crm_datetimes(value: object, expected: datetime) -> None:
    assert parse_crm_datetime(value) == expected


@pytest.mark.parametrize("value", [None, "", "N/A", "2024-13-45", "yesterday", "0001-01-01T00:00:00Z", True])
def test_unparsable_datetimes_are_bad_records(value: object) -> None:
    with pytest.raises(BadRecord) as info:
        parse_crm_datetime(value, "CreatedDate")
    assert info.value.reason == "unparsable_timestamp"
    assert "CreatedDate" in info.value.detail


def test_http_date() -> None:
    assert parse_http_date("Wed, 01 May 2024 10:00:00 GMT") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parse_http_date("nonsense") is None


@pytest.mark.parametrize(("value", "expected"), [
    ("N/A", None), ("Select", None), ("-1", None), (".", None), ("  Head of  Sales ", "Head of Sales"),
    ("Ωmega 株式会社", "Ωmega 株式会社"), ("x" * 400, "x" * 255), (None, None),
])
def test_clean_text(value: object, expected: str | None) -> None:
    assert clean_text(value) == expected


@pytest.mark.parametrize(("company", "key"), [
    ("Société Générale", "société générale"),  # French: accents kept
    ("Société Générale S.A.", "société générale"),
    ("L'Oréal SA", "l oréal"),
    ("Müller GmbH & Co. KG", "müller"),  # German: legal forms and the dangling "&" go
    ("Straße Logistik AG", "strasse logistik"),  # casefold: ß and SS meet
    ("STRASSE LOGISTIK", "strasse logistik"),
    ("Сбербанк", "сбербанк"),  # Cyrillic
    ("ПАО Сбербанк", "сбербанк"),
    ("ООО «Яндекс»", "яндекс"),
    ("トヨタ自動車株式会社", "トヨタ自動車"),  # Japanese: 株式会社 at either end
    ("株式会社ソニー", "ソニー"),
    ("㈱日立製作所", "日立製作所"),  # NFKC: ㈱ is (株)
    ("阿里巴巴集团控股有限公司", "阿里巴巴"),  # Chinese
    ("华为技术有限公司", "华为技术"),
    ("ＡＣＭＥ Ｉｎｃ．", "acme"),  # full-width Latin folds to ASCII
])
def test_company_key_keeps_every_alphabet(company: str, key: str) -> None:
    assert company_key(company, None) == key


@pytest.mark.parametrize(("company", "key"), [
    ("Société Générale", "société-générale"), ("Müller GmbH", "müller"), ("Сбербанк", "сбербанк"),
    ("トヨタ自動車", "トヨタ自動車"), ("华为技术", "华为技术"),
])
def test_feature_company_key_keeps_every_alphabet(company: str, key: str) -> None:
    # The feature side (buying-committee features) groups by its own key: it must not drop letters either.
    assert personas.company_key(company) == key


def test_email_company_key_and_numbers() -> None:
    assert clean_email("ANA@Acme-Logistics.COM") == "ana@acme-logistics.com"
    assert clean_email("not an email") is None
    assert company_key("ACME Logistics, Inc.", None) == "acme logistics"
    assert company_key(None, "bo@acme.io") == "acme.io"
    assert company_key(None, "bo@gmail.com") is None
    assert clean_employees("1,200") == 1200
    assert clean_employees("unknown") is None
    with pytest.raises(BadRecord):
        clean_employees(10**9)
    with pytest.raises(BadRecord):
        clean_revenue(-1_000_000.0)


def _lead(**values: object) -> dict[str, object]:
    base: dict[str, object] = {"Id": "00Q000000000001AAA", "SystemModstamp": "2024-05-01T10:00:00.000+0000",
                               "CreatedDate": "2024-04-01T10:00:00.000+0000", "Company": "Acme", "IsDeleted": False}
    base.update(values)
    return base


def test_salesforce_lead_quarantine_reasons() -> None:
    with pytest.raises(BadRecord) as missing:
        lead_record(_lead(Id=None), {})
    assert missing.value.reason == "missing_id"
    with pytest.raises(BadRecord) as absurd:
        lead_record(_lead(NumberOfEmployees=10**9), {})
    assert absurd.value.reason == "absurd_value"
    junk = lead_record(_lead(Title="N/A", Industry="Select", Email="BOB@ACME.COM"), {"Rating": "rating"})
    assert (junk.title, junk.industry, junk.email) == (None, None, "bob@acme.com")
    assert junk.attributes == {"rating": None}


def _sf_error(cls: type, status: int, code: str) -> Exception:
    return cls("https://x/services/data", status, "query", [{"errorCode": code, "message": "m"}])


@pytest.mark.parametrize(("exc", "expected"), [
    (_sf_error(SalesforceGeneralError, 503, "SERVER_UNAVAILABLE"), RetriableCRMError),
    (_sf_error(SalesforceGeneralError, 500, "UNKNOWN_EXCEPTION"), RetriableCRMError),
    (_sf_error(SalesforceMalformedRequest, 400, "UNABLE_TO_LOCK_ROW"), RetriableCRMError),
    (_sf_error(SalesforceMalformedRequest, 400, "MALFORMED_QUERY"), FatalCRMError),
    (_sf_error(SalesforceRefusedRequest, 403, "REQUEST_LIMIT_EXCEEDED"), QuotaExhaustedError),
    (_sf_error(SalesforceRefusedRequest, 403, "INSUFFICIENT_ACCESS"), FatalCRMError),
    (_sf_error(SalesforceExpiredSession, 401, "INVALID_SESSION_ID"), AuthError),
    (requests.exceptions.ConnectionError("dropped"), RetriableCRMError),
])
def test_salesforce_error_mapping(exc: Exception, expected: type) -> None:
    mapped = map_salesforce_error(exc)
    assert type(mapped) is expected


def _hs_error(status: int, body: dict[str, object], headers: dict[str, str] | None = None) -> ApiException:
    cls = ServiceException if status >= 500 else ApiException
    exc = cls(status=status, reason="r")
    exc.body = json.dumps(body).encode()
    exc.headers = headers or {}
    return exc


@pytest.mark.parametrize(("exc", "expected"), [
    (_hs_error(429, {"policyName": "TEN_SECONDLY_ROLLING"}), RetriableCRMError),
    (_hs_error(429, {"policyName": "DAILY"}), QuotaExhaustedError),
    (_hs_error(503, {}), RetriableCRMError),
    (_hs_error(500, {}), RetriableCRMError),
    (_hs_error(401, {"category": "INVALID_AUTHENTICATION"}), AuthError),
    (_hs_error(400, {"category": "VALIDATION_ERROR"}), FatalCRMError),
    (_hs_error(403, {"category": "MISSING_SCOPES"}), FatalCRMError),
    (urllib3.exceptions.ProtocolError("Connection aborted."), RetriableCRMError),
])
def test_hubspot_error_mapping(exc: Exception, expected: type) -> None:
    mapped = map_hubspot_error(exc)
    assert type(mapped) is expected


def test_hubspot_retry_after_is_kept() -> None:
    mapped = map_hubspot_error(_hs_error(429, {"policyName": "TEN_SECONDLY_ROLLING"}, {"Retry-After": "0.25"}))
    assert isinstance(mapped, RetriableCRMError)
    assert mapped.retry_after == 0.25
